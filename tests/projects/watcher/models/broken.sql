{% if var("fail_broken", false) %}
select error('broken on purpose') as id from {{ ref('base') }}
{% else %}
select id from {{ ref('base') }}
{% endif %}
