-- Yearly batches; the batch of var('fail_year') names a column that does not exist and
-- fails (even under --empty), so dbt reports the model as "partial success".
{{ config(materialized='incremental', incremental_strategy='microbatch', event_time='event_at',
          batch_size='year', begin='2024-01-01') }}
select id, event_at, amount
{%- if model.batch and model.batch.event_time_start.year == var('fail_year') %}
    , no_such_column
{%- endif %}
from {{ ref('events') }}
