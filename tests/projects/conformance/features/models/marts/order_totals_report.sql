select status, orders from {{ ref('order_totals') }} where orders > 0
