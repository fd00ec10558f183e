select id from {{ source('broken', 'events') }}
