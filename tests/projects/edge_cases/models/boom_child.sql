select id from {{ ref('boom') }}
