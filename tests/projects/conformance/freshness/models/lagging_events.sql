select id, loaded_at from {{ source('lagging', 'events') }}
