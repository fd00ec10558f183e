-- Costs about a second per 250 million slow_rows, to leave time to kill the producer
-- (the filter on s keeps DuckDB from pruning the unused sum away).
select b.id from {{ ref('base') }} b, (select sum(hash(range)) as s from range({{ var("slow_rows", 1) }})) where s is not null
