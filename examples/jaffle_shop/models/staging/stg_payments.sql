-- Raw amounts are integer cents; everything downstream works in dollars.
select
    id as payment_id,
    order_id,
    payment_method,
    cast(amount / 100.0 as numeric(12, 2)) as amount
from {{ ref('raw_payments') }}
