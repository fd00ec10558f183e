select size, count(*) as orders from {{ ref('order_size') }} group by size
