"""The bundled "Starfleet" upstream: a configurable implementation of contract part A.

Used by the demo, the tests and the benchmarks. `world` holds the data, `app` serves it,
`server` runs it; fault knobs live in `config.SimFaults`; `templates/` holds the real upstream
response bodies, the one copy the tests read too (`templates.fixture_root()`).

A top-level package of its own, beside the `sync_pipeline` code location in the same
distribution: the code location's definitions never import it, while one install still runs
`sync-pipeline demo` and `sync-pipeline simulator`.
"""

from starfleet.config import SimConfig, SimFaults
from starfleet.server import SimulatorHandle, run_simulator, running_simulator
from starfleet.world import SimWorld, build_world

__all__ = [
    "SimConfig",
    "SimFaults",
    "SimWorld",
    "SimulatorHandle",
    "build_world",
    "run_simulator",
    "running_simulator",
]
