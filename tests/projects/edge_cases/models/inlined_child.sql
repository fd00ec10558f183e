{{ config(materialized='view') }}
select id, shout from {{ ref('inlined') }}
