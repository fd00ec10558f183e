"""The core: records, the consumer's policy, the plan and the status store.

Nothing here imports dbt or Celery; the layers above (:mod:`dbt_celery.dbt`,
:mod:`dbt_celery.celery`) bring those in. ``tests/unit/test_layers.py`` keeps it so.
"""
