"""The bundled "Starfleet" upstream: a configurable implementation of contract part A.

Used by the demo, the tests and the benchmarks. `world` holds the data, `app` serves it,
`server` runs it; fault knobs live in `config.SimFaults`.
"""

from sync_pipeline.simulator.config import SimConfig, SimFaults
from sync_pipeline.simulator.server import SimulatorHandle, run_simulator, running_simulator
from sync_pipeline.simulator.world import SimWorld, build_world

__all__ = [
    "SimConfig",
    "SimFaults",
    "SimWorld",
    "SimulatorHandle",
    "build_world",
    "run_simulator",
    "running_simulator",
]
