"""Asset checks on the warehouse tables."""

import dagster as dg

CHECKS: list[dg.AssetChecksDefinition] = []
