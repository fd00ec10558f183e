select id from {{ ref('checked') }}
