{{ config(materialized='view') }}
select count(*) as people from {{ ref('guarded_child') }}
