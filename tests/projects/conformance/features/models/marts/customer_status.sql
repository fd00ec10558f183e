select id, country = 'NL' as is_domestic from {{ ref('stg_customers') }}
