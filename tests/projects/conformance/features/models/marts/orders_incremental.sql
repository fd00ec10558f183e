{{ config(materialized='incremental', unique_key='id') }}
select id, customer_id, amount, ordered_at from {{ ref('stg_orders') }}
{% if is_incremental() %}
where ordered_at > (select coalesce(max(ordered_at), timestamp '1900-01-01') from {{ this }})
{% endif %}
