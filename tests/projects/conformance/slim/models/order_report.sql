-- Reads order_totals: in a deferring run it must read the run's own order_totals, not production's.
select total, 'report' as kind from {{ ref('order_totals') }}
