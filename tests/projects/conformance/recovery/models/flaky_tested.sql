select id, id * 2 as twice from {{ ref('flaky') }}
