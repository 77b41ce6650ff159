"""Whether a job's steps can ever run at the same time (pure: a step graph in, a verdict out).

A process per step (Dagster's multiprocess executor) only pays off when two steps of one run can
run at once; each process re-imports the code location (~2 s here). A run whose steps are
strictly ordered gains nothing from it, so `shape_executor.py` runs such a job in the run
worker itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Set


def steps_are_serial(
    upstream: Mapping[str, Set[str]],
    pools: Mapping[str, str | None],
    pool_slots: int | None,
) -> bool:
    """True when no two steps can run at once: their dependencies order them all (a chain,
    possibly with shortcut edges: A→B→C plus A→C), or every step holds the same pool and that
    pool has one slot.

    `upstream` maps each step to the steps it waits for; `pools` each step to its pool (None:
    no pool); `pool_slots` is the pools' slot count (None: unlimited)."""
    if len(upstream) <= 1:
        return True
    held = set(pools.values())
    if pool_slots == 1 and len(held) == 1 and None not in held and set(pools) == set(upstream):
        return True
    # Kahn's algorithm: the order is total exactly when there is only ever one step ready
    waiting = {step: set(deps) & set(upstream) for step, deps in upstream.items()}
    while waiting:
        ready = [step for step, deps in waiting.items() if not deps]
        if len(ready) != 1:
            return False  # two steps could start together (or a cycle: not a job)
        (done,) = ready
        del waiting[done]
        for deps in waiting.values():
            deps.discard(done)
    return True
