select * from {{ ref('py_raises') }}
