{{ config(materialized='view') }}
select id, tag from {{ ref('customer_tags') }}
