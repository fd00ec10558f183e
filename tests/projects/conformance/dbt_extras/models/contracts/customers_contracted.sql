select id, name, tier from {{ ref('raw_customers') }}
