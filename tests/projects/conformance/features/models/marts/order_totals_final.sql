select count(*) as statuses from {{ ref('order_totals_report') }}
