"""The simulated world without HTTP: determinism, record shapes, time moving."""

from __future__ import annotations

import json
import random
import re

import pytest

from starfleet.records import LEGACY_USER_ID_PATHS
from starfleet.sources import SOURCES_BY_ID
from starfleet.templates import all_template_paths, templates_for
from starfleet.world import (
    PROFILE_PATH,
    SimWorld,
    build_world,
    notification_items,
)
from sync_pipeline.upstream.endpoints import BY_PATH, ENDPOINTS

HEX24 = re.compile(r"^[0-9a-f]{24}$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
LIST_PATHS = [e.path for e in ENDPOINTS if not e.single_object]


def _snapshot(world: SimWorld) -> str:
    return json.dumps(
        [
            (
                u.client_user_id,
                u.human_id,
                u.connections,
                {p: world.records(u.human_id, p) for p in sorted(u.stores)},
            )
            for u in world.users
        ],
        sort_keys=True,
    )


@pytest.fixture(scope="module")
def world() -> SimWorld:
    return build_world(4, seed=7, min_records=5, max_records=12)


def test_same_seed_builds_the_same_world_and_another_seed_does_not() -> None:
    first = _snapshot(build_world(3, seed=11, min_records=2, max_records=5))
    assert first == _snapshot(build_world(3, seed=11, min_records=2, max_records=5))
    assert first != _snapshot(build_world(3, seed=12, min_records=2, max_records=5))


def test_users_have_ids_sources_and_one_non_ascii_client_user_id(world: SimWorld) -> None:
    assert len({u.human_id for u in world.users}) == len(world.users)
    assert all(HEX32.match(u.human_id) for u in world.users)
    assert any(not u.client_user_id.isascii() for u in world.users)
    for user in world.users:
        assert 2 <= len(user.connections) <= 4
        kinds = {s.kind for s in user.sources}
        assert kinds == {"medical", "wellness"}


def test_every_template_path_is_packaged() -> None:
    for path in all_template_paths():
        assert templates_for(path), path


@pytest.mark.parametrize("path", LIST_PATHS)
def test_records_keep_the_fixture_shape_and_carry_the_common_fields(
    world: SimWorld, path: str
) -> None:
    templates = templates_for(path)
    template_keys = set().union(*(t.keys() for t in templates)) - {"userId"}
    for user in world.users:
        records = world.records(user.human_id, path)
        assert 5 <= len(records) <= 12
        for record in records:
            assert HEX24.match(record["id"])
            assert record["source"] in user.connections
            assert SOURCES_BY_ID[record["source"]].kind == BY_PATH[path].group
            assert INSTANT.match(record["createdAt"]) and INSTANT.match(record["updatedAt"])
            assert record["createdAt"] <= record["updatedAt"]
            # cloned from one template: all of its keys, and nothing the fixtures never had
            assert any(set(t) - {"userId"} <= set(record) for t in templates)
            assert set(record) - {"humanId", "userId", "source", "createdAt", "updatedAt"} <= (
                template_keys
            )
            if path in LEGACY_USER_ID_PATHS:
                assert record["userId"] == user.legacy_user_id and "humanId" not in record
            else:
                assert record["humanId"] == user.human_id and "userId" not in record


def test_records_are_varied_not_copies(world: SimWorld) -> None:
    user = world.users[0]
    ids = [r["id"] for u in world.users for p in LIST_PATHS for r in world.records(u.human_id, p)]
    assert len(ids) == len(set(ids))
    weights = {r["value"] for r in world.records(user.human_id, "weight/readings")}
    assert len(weights) > 1
    results = world.records(user.human_id, "medical/test_results")
    assert len({r["resultDateTime"] for r in results}) > 1


def test_template_key_sets_match_for_a_rich_medical_record(world: SimWorld) -> None:
    record = world.records(world.users[0].human_id, "medical/vitals")[0]
    assert {"dateTime", "results", "codes", "organization"} <= set(record)
    assert record["organization"]["id"] == record["source"]


def test_profile_is_one_object_or_absent() -> None:
    world = build_world(10, seed=3, min_records=0, max_records=0)
    counts = {len(u.store(PROFILE_PATH)) for u in world.users}
    assert counts == {0, 1}


def test_advance_creates_and_updates_and_builds_notification_items(world: SimWorld) -> None:
    local = build_world(3, seed=5, min_records=3, max_records=3)
    before = local.total_records()
    changes = local.advance(4, 3, random.Random(1))
    assert [c.action for c in changes] == ["created"] * 4 + ["updated"] * 3
    assert local.total_records() == before + 4
    for change in changes:
        stored = {r["id"]: r for r in local.records(change.human_id, change.path)}
        assert stored[change.record_id]["updatedAt"] == change.updated_at
    stamps = [c.updated_at for c in changes]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    items = notification_items(changes, "https://api.example.test")
    assert items[0] == {
        "humanId": changes[0].human_id,
        "updatedAt": changes[0].updated_at,
        "endpoint": f"https://api.example.test/v1/human/{changes[0].path}",
        "type": BY_PATH[changes[0].path].group,
        "model": items[0]["model"],
        "action": "created",
        "objectId": changes[0].record_id,
    }
    assert {
        i["model"]
        for i in notification_items([c for c in changes if c.path == "medical/allergies"])
    } <= {"allergy"}


def test_delete_and_connections_change_what_the_world_answers() -> None:
    local = build_world(1, seed=9, min_records=2, max_records=2)
    user = local.users[0]
    victim = local.records(user.human_id, "sleeps")[0]["id"]
    assert local.delete(user.human_id, "sleeps", victim)
    assert user.store("sleeps").get(victim) is None
    assert not local.delete(user.human_id, "sleeps", victim)
    gone = next(iter(user.connections))
    assert [s.id for s in local.disconnect(user.human_id, [gone])] == [gone]
    assert gone not in {s["id"] for s in local.sources_view(user.human_id)}
    assert [s.id for s in local.connect(user.human_id, [gone])] == [gone]
    assert gone in {s["id"] for s in local.sources_view(user.human_id)}


def test_sources_view_has_the_recorded_shape(world: SimWorld) -> None:
    recorded_keys = set(templates_for("sources")[0])
    for entry in world.sources_view(world.users[0].human_id):
        assert recorded_keys <= set(entry)
        assert {"id", "name"} <= set(entry)
