-- depends_on: {{ ref('raw_customers') }}
select id, name, country from {{ source('raw', 'customers') }}
