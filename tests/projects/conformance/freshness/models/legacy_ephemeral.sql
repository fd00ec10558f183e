{{ config(materialized='ephemeral') }}
select id from {{ source('legacy', 'events') }}
