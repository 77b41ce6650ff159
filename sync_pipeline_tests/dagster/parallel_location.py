"""A code location with a job whose two steps can run at once, on the executor that
SYNC_EXECUTOR unset selects: such a job must keep its process per step
(test_executor_shape.py launches it with `dagster job execute`)."""

from __future__ import annotations

import dagster as dg

from sync_pipeline.shape_executor import by_shape_executor


@dg.op
def left() -> None:
    """One of two independent steps."""


@dg.op
def right() -> None:
    """The other one: nothing orders it after `left`, and it holds no pool."""


@dg.job
def parallel_job() -> None:
    left()
    right()


defs = dg.Definitions(jobs=[parallel_job], executor=by_shape_executor)
