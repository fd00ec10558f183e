select id from {{ ref('broken') }}
