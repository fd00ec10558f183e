select id from {{ ref('flaky') }}
