-- A singular test that passes.
select * from {{ ref('stg_orders') }} where amount <= 0
