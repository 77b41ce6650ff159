"""The default executor of runs the daemon or the UI launches: in the run worker when the job's
steps can never run at the same time (job_shape.py), a process per step otherwise.

Every job of this code location is strictly serial today (the sync jobs are a chain of steps;
intake_job's two independent steps share the one-slot warehouse pool), and a process per step
re-imports the code location for each step (~2 s), buying no parallelism. Decided when a run
starts, from the job as it runs (a subset of a job is judged by its own steps), so a job that
gains a parallel branch goes back to a process per step with nothing to change here. Both
branches are Dagster's own executors, created through their public creation functions.
"""

from __future__ import annotations

import dagster as dg

from sync_pipeline.job_shape import steps_are_serial

NAME = "by_shape"


def job_is_serial(job: dg.JobDefinition, pool_slots: int | None) -> bool:
    """Whether `job`'s steps (one per op: these jobs have no dynamic outputs) are serial."""
    graph = job.graph
    if not all(isinstance(node.definition, dg.OpDefinition) for node in graph.nodes):
        return False  # a nested graph's ops could run at once: not judged, a process per step
    structure = graph.dependency_structure
    upstream = {
        node.name: {out.node_name for out in structure.all_upstream_outputs_from_node(node.name)}
        for node in graph.nodes
    }
    pools = {
        node.name: node.definition.pool
        for node in graph.nodes
        if isinstance(node.definition, dg.OpDefinition)
    }
    return steps_are_serial(upstream, pools, pool_slots)


@dg.executor(
    name=NAME,
    # the multiprocess executor's config (max_concurrent, retries, ...): it applies as is when
    # the job runs a process per step; in the run worker only `retries` and
    # `step_dependency_config` mean something
    config_schema=dg.multiprocess_executor.config_schema.as_field(),
    requirements=dg.multiple_process_executor_requirements(),
)
def by_shape_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    job = init_context.job.get_definition()
    slots = init_context.instance.global_op_concurrency_default_limit
    config = init_context.executor_config
    if job_is_serial(job, slots):
        chosen = dg.in_process_executor
        config = {k: v for k, v in config.items() if k in ("retries", "step_dependency_config")}
    else:
        chosen = dg.multiprocess_executor
    created = chosen.executor_creation_fn
    assert created is not None  # both are defined with a creation function
    executor: dg.Executor = created(
        dg.InitExecutorContext(
            job=init_context.job,
            executor_def=chosen,
            executor_config=config,
            instance=init_context.instance,
        )
    )
    return executor
