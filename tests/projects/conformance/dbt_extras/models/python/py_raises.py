def model(dbt, session):
    """A Python model that raises: dbt reports it as an error and skips its child."""
    dbt.config(materialized="table")
    events = dbt.ref("events")
    if events is not None:  # always: dbt's parser wants the function to end in a return
        raise ValueError("py_raises fails on purpose")
    return events
