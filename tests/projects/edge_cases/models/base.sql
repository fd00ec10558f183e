select id, name, nickname from {{ ref('people') }}
