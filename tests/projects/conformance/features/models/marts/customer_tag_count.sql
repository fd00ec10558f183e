{{ config(materialized='view') }}
select count(*) as tags from {{ ref('customer_tag_list') }}
