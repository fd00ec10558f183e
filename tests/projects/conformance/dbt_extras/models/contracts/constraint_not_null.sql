-- The contract is met, but the not_null constraint is not: the warehouse rejects the rows.
select id, case when id = 3 then null else city end as city from {{ ref('raw_customers') }}
