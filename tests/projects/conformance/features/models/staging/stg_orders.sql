-- depends_on: {{ ref('raw_orders') }}
select id, customer_id, amount, status, ordered_at from {{ source('raw', 'orders') }}
