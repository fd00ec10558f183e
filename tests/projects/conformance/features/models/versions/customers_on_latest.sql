select id, name from {{ ref('dim_customers') }}
