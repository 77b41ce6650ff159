"""The simulated upstream's data: users, their connections and their records. No HTTP here.

`build_world` is deterministic in its arguments (same seed, same world). Time only moves through
`SimWorld.advance`, which stamps changes with the wall clock, as the real upstream would.
"""

from __future__ import annotations

import copy
import json
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from starfleet.records import EndpointFactory, Identity, iso_instant, mutate
from starfleet.sources import SOURCE_CATALOGUE, SOURCES_BY_ID, Source
from starfleet.templates import Record
from sync_pipeline.upstream.endpoints import BY_PATH, ENDPOINTS

PROFILE_PATH = "medical/profile"
LIST_PATHS: tuple[str, ...] = tuple(e.path for e in ENDPOINTS if not e.single_object)
# Fixed so that the same seed builds byte-identical worlds whenever it runs.
DEFAULT_ANCHOR = datetime(2025, 1, 1)
DEFAULT_NOTIFICATION_API_BASE = "https://api.humanapi.co"
# A user with this index gets a non-ASCII client_user_id, since upstream ids are any UTF-8 text.
_UNICODE_USER_INDEX = 1

Action = Literal["created", "updated"]


def new_object_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(96):024x}"


class RecordStore:
    """One user's records of one endpoint, with a stable order and cached JSON per record."""

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}
        self._json: dict[str, bytes] = {}
        self._order: list[Record] | None = None

    def __len__(self) -> int:
        return len(self._records)

    def put(self, record: Record) -> None:
        record_id = record["id"]
        self._records[record_id] = record
        self._json.pop(record_id, None)
        self._order = None

    def remove(self, record_id: str) -> bool:
        self._json.pop(record_id, None)
        self._order = None
        return self._records.pop(record_id, None) is not None

    def get(self, record_id: str) -> Record | None:
        return self._records.get(record_id)

    def ids(self) -> list[str]:
        return [r["id"] for r in self.ordered()]

    def ordered(self) -> list[Record]:
        """All records sorted by id, so offset pagination over one query is consistent."""
        if self._order is None:
            self._order = [self._records[k] for k in sorted(self._records)]
        return self._order

    def json_bytes(self, record: Record) -> bytes:
        record_id = record["id"]
        cached = self._json.get(record_id)
        if cached is None:
            cached = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
            self._json[record_id] = cached
        return cached


@dataclass
class SimUser:
    client_user_id: str
    human_id: str
    legacy_user_id: str
    # source id -> connectedSince (ISO instant); insertion order is connection order
    connections: dict[str, str]
    stores: dict[str, RecordStore] = field(default_factory=dict)

    @property
    def identity(self) -> Identity:
        return Identity(human_id=self.human_id, legacy_user_id=self.legacy_user_id)

    @property
    def sources(self) -> list[Source]:
        return [SOURCES_BY_ID[s] for s in self.connections]

    def store(self, path: str) -> RecordStore:
        return self.stores[path]


@dataclass(frozen=True)
class Change:
    human_id: str
    path: str  # endpoint path below /v1/human/
    record_id: str
    action: Action
    updated_at: str  # the record's new updatedAt


def _model_name(table_name: str) -> str:
    if table_name.endswith("ies"):
        return table_name[:-3] + "y"
    if table_name == "plans_of_care":
        return "plan_of_care"
    if table_name.endswith("s") and table_name != "demographics":
        return table_name[:-1]
    return table_name


def notification_items(
    changes: Iterable[Change], api_base: str = DEFAULT_NOTIFICATION_API_BASE
) -> list[dict[str, str]]:
    """Contract B1 notification items: the upstream names its own public host in `endpoint`."""
    base = api_base.rstrip("/")
    items = []
    for change in changes:
        endpoint = BY_PATH[change.path]
        items.append(
            {
                "humanId": change.human_id,
                "updatedAt": change.updated_at,
                "endpoint": f"{base}/v1/human/{change.path}",
                "type": endpoint.group,
                "model": _model_name(endpoint.table_name),
                "action": change.action,
                "objectId": change.record_id,
            }
        )
    return items


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class SimWorld:
    """All users and records. Thread-safe: the server and tests may touch it concurrently."""

    def __init__(
        self,
        users: list[SimUser],
        factories: dict[str, EndpointFactory],
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.users = users
        self.lock = threading.RLock()
        self._factories = factories
        self._clock = clock
        self._by_client_user_id = {u.client_user_id: u for u in users}
        self._by_human_id = {u.human_id: u for u in users}
        self._last_stamp = datetime.min

    def user_by_client_user_id(self, client_user_id: str) -> SimUser | None:
        return self._by_client_user_id.get(client_user_id)

    def user_by_human_id(self, human_id: str) -> SimUser | None:
        return self._by_human_id.get(human_id)

    def total_records(self) -> int:
        with self.lock:
            return sum(len(s) for u in self.users for s in u.stores.values())

    def records(self, human_id: str, path: str) -> list[Record]:
        """A copy of the current records of one user and endpoint, in served order (for tests)."""
        with self.lock:
            return copy.deepcopy(self._by_human_id[human_id].store(path).ordered())

    def sources_view(self, human_id: str) -> list[Record]:
        """`GET /sources` for one user, in the shape of the 2014 recording plus `id` and `name`."""
        with self.lock:
            user = self._by_human_id[human_id]
            return [
                _source_entry(SOURCES_BY_ID[source_id], since)
                for source_id, since in sorted(user.connections.items())
            ]

    def _stamp(self) -> datetime:
        # Strictly increasing, so a client's updated_since watermark never misses a change.
        now = self._clock()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if now <= self._last_stamp:
            now = self._last_stamp + timedelta(milliseconds=1)
        self._last_stamp = now
        return now

    def advance(self, created: int, updated: int, rng: random.Random) -> list[Change]:
        """Add `created` new records and change `updated` existing ones, stamped now."""
        changes: list[Change] = []
        with self.lock:
            for _ in range(created):
                change = self._create_one(rng)
                if change is not None:
                    changes.append(change)
            for _ in range(updated):
                change = self._update_one(rng)
                if change is not None:
                    changes.append(change)
        return changes

    def _create_one(self, rng: random.Random) -> Change | None:
        candidates = [u for u in self.users if u.connections]
        if not candidates:
            return None
        user = rng.choice(candidates)
        kinds = {s.kind for s in user.sources}
        paths = [p for p in LIST_PATHS if BY_PATH[p].group in kinds]
        path = rng.choice(paths)
        source = rng.choice([s for s in user.sources if s.kind == BY_PATH[path].group])
        now = self._stamp()
        record = self._factories[path].make(
            rng,
            record_id=new_object_id(rng),
            who=user.identity,
            source=source,
            event_time=now - timedelta(seconds=rng.randrange(0, 2 * 86400)),
            created_at=now,
            updated_at=now,
        )
        user.store(path).put(record)
        return Change(user.human_id, path, record["id"], "created", record["updatedAt"])

    def _update_one(self, rng: random.Random) -> Change | None:
        candidates = [u for u in self.users if any(len(s) for s in u.stores.values())]
        if not candidates:
            return None
        user = rng.choice(candidates)
        path = rng.choice([p for p, s in user.stores.items() if len(s)])
        store = user.store(path)
        old = store.get(rng.choice(store.ids()))
        assert old is not None
        record = mutate(old, rng)
        record["updatedAt"] = iso_instant(self._stamp())
        store.put(record)
        return Change(user.human_id, path, record["id"], "updated", record["updatedAt"])

    def delete(self, human_id: str, path: str, record_id: str) -> bool:
        """Remove a record upstream, so a single GET for it answers 404."""
        with self.lock:
            return self._by_human_id[human_id].store(path).remove(record_id)

    def connect(self, human_id: str, source_ids: Iterable[str]) -> list[Source]:
        """Connect sources (unknown ids raise KeyError); returns those newly connected."""
        with self.lock:
            user = self._by_human_id[human_id]
            added = []
            for source_id in source_ids:
                source = SOURCES_BY_ID[source_id]
                if source_id not in user.connections:
                    user.connections[source_id] = iso_instant(self._stamp())
                    added.append(source)
            return added

    def disconnect(self, human_id: str, source_ids: Iterable[str]) -> list[Source]:
        """Disconnect sources; their records stay, as upstream keeps what it already synced."""
        with self.lock:
            user = self._by_human_id[human_id]
            removed = []
            for source_id in source_ids:
                if user.connections.pop(source_id, None) is not None:
                    removed.append(SOURCES_BY_ID[source_id])
            return removed


def _source_entry(source: Source, connected_since: str) -> Record:
    return {
        "id": source.id,
        "name": source.name,
        "source": source.slug,
        "supportedDataTypes": list(source.supported_data_types),
        "connectedSince": connected_since,
        "devices": [],
        "historySync": {"status": "completed", "oldestDate": connected_since},
        "syncStatus": {"status": "ok", "synchedAt": connected_since, "newestDate": connected_since},
    }


def client_user_id_for(index: int) -> str:
    base = f"starfleet-user-{index + 1:04d}"
    return f"{base}-zoë-船長" if index == _UNICODE_USER_INDEX else base


def build_world(
    users: int = 5,
    seed: int = 0,
    *,
    min_records: int = 10,
    max_records: int = 60,
    profile_ratio: float = 0.8,
    anchor: datetime = DEFAULT_ANCHOR,
    history_days: int = 730,
    clock: Callable[[], datetime] = _utc_now,
) -> SimWorld:
    """A deterministic world: `users` users with min..max records per list endpoint each.

    Records fall within `history_days` before `anchor`; about `profile_ratio` of the users have
    a medical profile (the others answer 404 there).
    """
    if users < 0 or not 0 <= min_records <= max_records:
        raise ValueError("need users >= 0 and 0 <= min_records <= max_records")
    rng = random.Random(seed)
    factories = {e.path: EndpointFactory(e.path) for e in ENDPOINTS}
    medical = [s for s in SOURCE_CATALOGUE if s.kind == "medical"]
    wellness = [s for s in SOURCE_CATALOGUE if s.kind == "wellness"]
    history = timedelta(days=history_days).total_seconds()
    people = []
    for index in range(users):
        chosen = rng.sample(medical, rng.randint(1, 2)) + rng.sample(wellness, rng.randint(1, 2))
        connected_at = anchor - timedelta(seconds=history + rng.randrange(86400 * 30))
        user = SimUser(
            client_user_id=client_user_id_for(index),
            human_id=f"{rng.getrandbits(128):032x}",
            legacy_user_id=new_object_id(rng),
            connections={s.id: iso_instant(connected_at) for s in chosen},
        )
        who = user.identity
        for path, factory in factories.items():
            store = RecordStore()
            user.stores[path] = store
            group_sources = [s for s in chosen if s.kind == BY_PATH[path].group]
            if path == PROFILE_PATH:
                count = 1 if rng.random() < profile_ratio else 0
            else:
                count = rng.randint(min_records, max_records)
            for _ in range(count):
                event_time = anchor - timedelta(seconds=rng.random() * history)
                created_at = min(event_time + timedelta(seconds=rng.random() * 172800), anchor)
                updated_at = created_at
                if rng.random() < 0.2:
                    updated_at += (anchor - created_at) * rng.random()
                store.put(
                    factory.make(
                        rng,
                        record_id=new_object_id(rng),
                        who=who,
                        source=rng.choice(group_sources),
                        event_time=event_time,
                        created_at=created_at,
                        updated_at=updated_at,
                    )
                )
        people.append(user)
    return SimWorld(people, factories, clock=clock)
