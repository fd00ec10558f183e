select id from {{ ref('live_events') }} union all select id from {{ ref('legacy_events') }}
