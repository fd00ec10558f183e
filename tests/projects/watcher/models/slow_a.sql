-- Costs about a second per 10 million slow_rows, to leave time to kill the producer.
select b.id from {{ ref('base') }} b, (select sum(hash(range)) as s from range({{ var("slow_rows", 1) }}))
