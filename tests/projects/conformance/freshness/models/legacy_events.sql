select id, loaded_at from {{ source('legacy', 'events') }}
