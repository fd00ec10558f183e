-- event_time lets the microbatch models below read only their batch of it.
{{ config(materialized='view', event_time='event_at') }}
select id, event_at, amount from {{ ref('raw_events') }}
