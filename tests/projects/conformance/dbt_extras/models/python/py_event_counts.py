def model(dbt, session):
    """Events per year, computed in DuckDB through its Python relation API."""
    dbt.config(materialized="table")
    events = dbt.ref("events")
    return events.aggregate("year(event_at) as year, count(*) as events", "year(event_at)")
