select count(*) as events, sum(amount) as amount from {{ ref('events_yearly') }}
