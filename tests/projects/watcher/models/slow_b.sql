select a.id from {{ ref('slow_a') }} a, (select sum(hash(range)) as s from range({{ var("slow_rows", 1) }})) where s is not null
