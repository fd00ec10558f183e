select id, name from {{ ref('base') }}
