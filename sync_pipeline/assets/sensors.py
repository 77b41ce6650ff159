"""Sensors that start runs when new data lands."""

import dagster as dg

SENSORS: list[dg.SensorDefinition] = []
