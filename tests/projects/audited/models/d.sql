select b.id, pg_sleep({{ var('sleep', 0.3) }})::text as slept from {{ ref('b') }} b join {{ ref('c') }} c on c.id = b.id
