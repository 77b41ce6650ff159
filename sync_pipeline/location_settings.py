"""The code location's settings: the environment, read once, when the definitions load.

`definitions.py` builds its resources from them, and `assets/automation.py` the default state
of schedules and sensors and the record tables' freshness window (fixed when a schedule,
sensor or asset spec is constructed, so they are read at import, from this one object)."""

from sync_pipeline.settings import Settings, load_settings

SETTINGS: Settings = load_settings()
