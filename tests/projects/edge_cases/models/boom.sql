-- Always fails at run time: error() on DuckDB, a bad cast elsewhere.
{% if target.type == 'duckdb' %}
select error('boom') as id
{% else %}
select cast('boom' as integer) as id
{% endif %}
