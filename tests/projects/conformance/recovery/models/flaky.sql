-- Fails while the file named by var flag_file exists: a transient model error.
select case
    when (select count(*) from glob('{{ var("flag_file", "/nonexistent/flag") }}')) > 0
    then error('flag file present')
    else id
end as id, name
from {{ ref('base') }}
