-- The contract says id is an integer; this gives text: dbt refuses to build it.
select cast(id as varchar) || '-x' as id, name from {{ ref('raw_customers') }}
