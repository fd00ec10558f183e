select id, case when amount >= 30 then 'large' else 'small' end as size from {{ ref('stg_orders') }}
