-- Always fails at run time.
select error('broken on purpose') as id from {{ ref('stg_orders') }}
