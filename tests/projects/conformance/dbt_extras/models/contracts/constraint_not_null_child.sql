select * from {{ ref('constraint_not_null') }}
