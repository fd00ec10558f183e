{{ config(materialized='ephemeral') }}
{#- With var break_ephemeral, this ephemeral model fails to compile: dbt build then
    skips its children with an "ERROR SKIP" (they cannot be compiled either). -#}
{% if execute and var('break_ephemeral', false) %}
{{ exceptions.raise_compiler_error('ephemeral model broken on purpose') }}
{% endif %}
select id, upper(name) as tag from {{ ref('stg_customers') }}
