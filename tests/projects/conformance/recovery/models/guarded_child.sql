select id from {{ ref('guarded') }}
