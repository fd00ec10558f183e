select id, country from {{ ref('dim_customers', v=2) }}
