-- Twenty parents: built only once all of them are.
select id from {{ ref('fan_01') }}
union all
select id from {{ ref('fan_02') }}
union all
select id from {{ ref('fan_03') }}
union all
select id from {{ ref('fan_04') }}
union all
select id from {{ ref('fan_05') }}
union all
select id from {{ ref('fan_06') }}
union all
select id from {{ ref('fan_07') }}
union all
select id from {{ ref('fan_08') }}
union all
select id from {{ ref('fan_09') }}
union all
select id from {{ ref('fan_10') }}
union all
select id from {{ ref('fan_11') }}
union all
select id from {{ ref('fan_12') }}
union all
select id from {{ ref('fan_13') }}
union all
select id from {{ ref('fan_14') }}
union all
select id from {{ ref('fan_15') }}
union all
select id from {{ ref('fan_16') }}
union all
select id from {{ ref('fan_17') }}
union all
select id from {{ ref('fan_18') }}
union all
select id from {{ ref('fan_19') }}
union all
select id from {{ ref('fan_20') }}
