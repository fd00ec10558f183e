"""The dbt layer: profiles rendered, commands built, dbt run, its events read.

The only part of dbt-celery that imports dbt. Nothing here knows Celery.
"""
