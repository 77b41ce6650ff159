"""The comparison pipeline: dlt's `rest_api` source over the same endpoints, into DuckDB.

A `users` resource fetches each user's bearer token from the token endpoint; every endpoint is
a resource depending on it (one request stream per user × endpoint), authorised with the
parent's token, page size 500, following `Link: rel="next"`, extracted in parallel.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx

from sync_pipeline.upstream.client import TOKEN_PATH
from sync_pipeline.upstream.endpoints import ENDPOINTS

NOT_INSTALLED = "not run: install with pip install -e '.[bench]'"


def dlt_available() -> bool:
    try:
        import dlt  # noqa: F401
        from dlt.sources.rest_api import rest_api_resources  # noqa: F401
    except ImportError:
        return False
    return True


def resource_name(table: str) -> str:
    return table.replace(".", "__")


def _config(api_url: str, page_size: int) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for endpoint in ENDPOINTS:
        spec: dict[str, Any] = {
            "name": resource_name(endpoint.table),
            "endpoint": {
                "path": endpoint.path,
                "headers": {"Authorization": "Bearer {resources.users.token}"},
                "response_actions": [{"status_code": 404, "action": "ignore"}],
            },
            "include_from_parent": ["human_id"],
        }
        if endpoint.single_object:
            spec["endpoint"].update(data_selector="$", paginator="single_page")
        else:
            spec["endpoint"].update(
                params={"limit": page_size},
                data_selector="$",
                paginator={"type": "header_link", "links_next_key": "next"},
            )
        resources.append(spec)
    return {
        "client": {"base_url": f"{api_url}/v1/human/"},
        "resource_defaults": {"parallelized": True, "write_disposition": "replace"},
        "resources": resources,
    }


def run_dlt(
    *,
    api_url: str,
    auth_url: str,
    client_id: str,
    client_secret: str,
    client_user_ids: list[str],
    workdir: Path,
    page_size: int = 500,
    workers: int = 16,
) -> dict[str, Any]:
    """Run the dlt pipeline once into a fresh DuckDB file; timings from dlt's own trace."""
    # no telemetry (no network here); as many extract workers as our client's concurrency
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["EXTRACT__WORKERS"] = str(workers)
    import dlt
    from dlt.sources.rest_api import rest_api_resources

    @dlt.resource(name="users", selected=False)
    def users() -> Iterator[list[dict[str, str]]]:
        with httpx.Client(timeout=30.0) as http:
            for client_user_id in client_user_ids:
                response = http.post(
                    f"{auth_url}{TOKEN_PATH}",
                    json={
                        "client_id": client_id,
                        "client_secret": client_secret,
                        "client_user_id": client_user_id,
                        "type": "access",
                    },
                )
                if response.status_code != 200:
                    continue  # a refused user has nothing to sync
                body = response.json()
                # rest_api's dependent resources take parent items in lists (pages); one user
                # per list lets their requests start while later tokens are still fetched
                yield [{"human_id": body["human_id"], "token": body["access_token"]}]

    config = _config(api_url, page_size)
    config["resources"].insert(0, users)

    @dlt.source(name="upstream")
    def upstream() -> Any:
        # cast: dlt's RESTAPIConfig TypedDict is stricter than the dict built above, and mypy
        # must pass with and without the optional bench extra installed
        return rest_api_resources(cast(Any, config))

    workdir.mkdir(parents=True, exist_ok=True)
    pipeline = dlt.pipeline(
        pipeline_name="bench_dlt",
        pipelines_dir=str(workdir / "pipelines"),
        destination=dlt.destinations.duckdb(str(workdir / "dlt.duckdb")),
        dataset_name="upstream",
    )
    started = time.perf_counter()
    pipeline.run(upstream())
    wall = time.perf_counter() - started
    trace = pipeline.last_trace
    if trace is None:
        raise RuntimeError("dlt recorded no trace for the run")
    steps = {
        step.step: (step.finished_at - step.started_at).total_seconds()
        for step in trace.steps
        if step.finished_at is not None and step.step in ("extract", "normalize", "load")
    }
    row_counts = trace.last_normalize_info.row_counts if trace.last_normalize_info else {}
    main_tables = {resource_name(e.table) for e in ENDPOINTS}
    records = sum(n for table, n in row_counts.items() if table in main_tables)
    return {"wall_s": wall, "steps": steps, "records": records, "tables": dict(row_counts)}
