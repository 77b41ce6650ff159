"""The warehouse's views as assets: no step writes them (each is an external asset), and each
depends on the tables its SQL reads, so lineage in the UI runs through the name analysts query
(ops.notifications joins the intake's items with the record sync's statuses; connect.users
joins connection_state's users with the record sync's token refusals)."""

import dagster as dg

from sync_pipeline.tables.connect import CURRENT_CONNECTIONS, USERS
from sync_pipeline.tables.ops import NOTIFICATIONS, REJECTED_RECORDS
from sync_pipeline.tables.registry import DECLARED_VIEWS
from sync_pipeline.tables.specs import view_spec

# the UI group each view is shown in (a view declared without one is a KeyError at load)
GROUPS = {
    NOTIFICATIONS: "intake",
    REJECTED_RECORDS: "intake",
    USERS: "connect",
    CURRENT_CONNECTIONS: "connect",
}

VIEW_SPECS: list[dg.AssetSpec] = [
    view_spec(name, group_name=GROUPS[name]) for name in sorted(DECLARED_VIEWS)
]
