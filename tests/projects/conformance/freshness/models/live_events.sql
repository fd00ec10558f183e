select id, loaded_at from {{ source('live', 'events') }}
