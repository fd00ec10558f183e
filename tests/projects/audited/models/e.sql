select p.id, pg_sleep({{ var('sleep', 0.3) }})::text as slept from {{ ref('d') }} p
