-- Yearly batches from 2024 on; every batch passes.
{{ config(materialized='incremental', incremental_strategy='microbatch', event_time='event_at',
          batch_size='year', begin='2024-01-01') }}
select id, event_at, amount from {{ ref('events') }}
