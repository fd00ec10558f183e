{{ config(materialized='view') }}
select count(*) as people from {{ ref('flaky_child') }}
