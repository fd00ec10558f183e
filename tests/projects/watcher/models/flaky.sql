-- Fails while the flag file exists: a transient error that a retry can repair.
select case
    when (select count(*) from glob('{{ var("flag_file", "/nonexistent/flag") }}')) > 0
    then error('flag file present')
    else id
end as id
from {{ ref('base') }}
