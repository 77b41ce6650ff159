"""sync_pipeline: a Dagster code location keeping an analytics copy of aggregator health data."""
