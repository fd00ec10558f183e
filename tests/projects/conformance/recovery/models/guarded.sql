select id, name from {{ ref('base') }} where id <= 2
