select id from {{ source('unchecked', 'events') }}
