"""The lake on S3-compatible object storage (LakeLocation / SYNC_LAKE_URL=s3://...), against
moto on loopback: a full sync stages its chunks as objects, DuckDB commits them through fsspec,
and every object in the bucket is a whole Parquet file named in the committed manifest
(ops.load_log)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from sync_pipeline.settings import LakeLocation
from sync_pipeline.warehouse import lake
from sync_pipeline_tests.e2e.harness import running_stack


def _bucket(endpoint: str) -> tuple[s3fs.S3FileSystem, str]:
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    name = f"lake-{uuid.uuid4().hex[:8]}"
    fs.mkdir(name)
    return fs, name


def test_object_chunks_get_unique_keys(s3_endpoint: str) -> None:
    fs, bucket = _bucket(s3_endpoint)
    data = pa.table({"human_id": ["a", "b"], "n": [1, 2]})
    store = lake.object_store(s3_endpoint)
    urls = [
        lake.write_object_chunk(store, f"s3://{bucket}/p", "medical.x", data, "run=r/part-00000")
        for _ in range(2)
    ]
    # the same chunk written twice (a retry) never overwrites: two keys, both whole
    assert len(set(urls)) == 2
    assert all(u.startswith(f"s3://{bucket}/p/medical/x/run=r/part-00000-") for u in urls)
    for url in urls:
        with fs.open(url, "rb") as f:
            assert pq.read_table(f).equals(data)


@pytest.mark.slow
def test_sync_with_the_lake_on_s3(tmp_path: Path, s3_endpoint: str) -> None:
    fs, bucket = _bucket(s3_endpoint)
    data_dir = tmp_path / "data"
    with running_stack(data_dir, users=2, min_records=3, max_records=10) as stack:
        # the stack's runs get their lake from these settings (LakeResource)
        stack.settings = replace(
            stack.settings, lake_url=f"s3://{bucket}/lake", lake_endpoint_url=s3_endpoint
        )
        stack.sim.post_initial_sessions()
        stack.intake()
        stack.sync("catchup")
        stack.sim.advance(created=6, updated=3)
        stack.intake()
        stack.sync("incremental")
        manifest = stack.query(
            "SELECT table_name, lake_files FROM ops.load_log WHERE lake_files <> ''"
        )
        runs = {r[0] for r in stack.query("SELECT DISTINCT run_id FROM ops.load_log")}
        in_table = {r[0] for r in stack.query("SELECT record_id FROM medical.test_results")}

    assert not (data_dir / "lake").exists()  # nothing staged locally
    assert in_table
    committed = {f: t for t, files in manifest for f in files.split("\n")}
    assert all(f.startswith(f"s3://{bucket}/lake/") for f in committed)
    objects = {f"s3://{key}" for key in fs.find(bucket)}
    assert set(committed) <= objects
    # no orphans: every object belongs to a committed run (child tables' chunks, e.g.
    # medical.record_codes, are loaded with their parent but not yet listed in its manifest row)
    assert len(runs) == 2
    assert {o.split("/run=")[1].split("/")[0] for o in objects} == runs
    staged_ids: set[str] = set()
    for url in objects:
        table = committed.get(url)
        with fs.open(url, "rb") as f:
            part = pq.read_table(f)  # whole Parquet files (footer and all) or this raises
        assert part.num_rows > 0
        if table == "medical.test_results":
            staged_ids.update(part.column("record_id").to_pylist())
    assert staged_ids == in_table


def test_a_run_that_does_not_commit_deletes_its_objects(tmp_path: Path, s3_endpoint: str) -> None:
    """Staged objects hold PHI and no manifest names them: a failed run deletes its own."""
    from sync_pipeline.normalize import normalize_records, to_arrow
    from sync_pipeline.sync.stage import Stager
    from sync_pipeline.upstream.endpoints import BY_PATH

    fs, bucket = _bucket(s3_endpoint)
    record = {"id": "r1", "updatedAt": "2020-01-01T00:00:00Z", "timestamp": "2020-01-01T00:00Z"}
    frame = normalize_records(BY_PATH["weight/readings"], "h" * 32, [record]).tables[
        "wellness.weight"
    ]
    location = LakeLocation(tmp_path / "lake", url=f"s3://{bucket}/lake", endpoint_url=s3_endpoint)
    stager = Stager(location, "run-that-fails")
    stager.add("wellness.weight", to_arrow("wellness.weight", frame))
    [url] = stager.finish()["wellness.weight"]
    assert fs.exists(str(url))
    assert stager.discard() == 1
    assert fs.find(f"{bucket}/lake") == []
