-- Fails while the file named by var test_flag_file exists: a transient test failure
-- that makes dbt build skip everything below guarded.
select id from {{ ref('guarded') }}
where (select count(*) from glob('{{ var("test_flag_file", "/nonexistent/flag") }}')) > 0
