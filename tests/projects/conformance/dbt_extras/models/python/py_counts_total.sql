select sum(events) as events from {{ ref('py_event_counts') }}
