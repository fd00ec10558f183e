-- Reads the stale source through an ephemeral model only.
select count(*) as n from {{ ref('legacy_ephemeral') }}
