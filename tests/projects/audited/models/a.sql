select 1 as id, pg_sleep({{ var('sleep', 0.3) }})::text as slept
