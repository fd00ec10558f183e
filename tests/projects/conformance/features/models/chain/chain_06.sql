select id, depth + 1 as depth from {{ ref('chain_05') }}
