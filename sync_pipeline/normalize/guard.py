"""The record-level containment boundary: what one record may be before any typing sees it.

Every record of a page passes `admit` first. What comes out is either a value every later step
(orjson, Arrow, pandas, DuckDB) can take, with its raw JSON bytes, or a reason to reject it:

- text that cannot be encoded (a lone surrogate such as "\\ud800", what a string cut in the
  middle of an emoji decodes to) is repaired: each lone surrogate becomes U+FFFD, in values and
  keys, and the record is flagged `text_repaired`, so an analyst can find what was changed;
- a record nested deeper than `MAX_DEPTH` is rejected (nothing downstream has to recurse
  through it, and a recursion limit is never reached), and so is one the page decoder could not
  decode at all (`UndecodableRecord`: deeper than the JSON decoder goes);
- a record whose JSON is over the size limit is rejected with its id and size, and its raw is
  replaced by a short excerpt (`oversized_raw`), so it is never carried whole into the commit.

Good records cost one orjson.dumps, which the raw column needs anyway: the slow path runs only
for records orjson refuses (surrogates, nesting past its limit, integers beyond 64 bits).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from ..upstream.models import UndecodableRecord

# orjson serialises at most 254 levels; a record deeper than that is no health record.
MAX_DEPTH = 254
# What an oversized record's reject row keeps of it: enough to recognise it, not the body.
EXCERPT_CHARS = 1024
TEXT_REPAIRED = "text_repaired"

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Admitted:
    value: Any  # the record, repaired if it had to be; {} when rejected here
    raw: bytes  # its JSON (UTF-8); for a rejected record, what its reject row keeps
    problem: str | None = None  # why it is rejected here, if it is
    flag: str | None = None  # loaded, but changed on the way: TEXT_REPAIRED


@dataclass
class AdmittedPage:
    """`admit` over a page, kept as parallel lists (one object per page, not per record: the
    good records' path is one orjson.dumps and a length check)."""

    values: list[Any]
    raws: list[bytes]
    problems: dict[int, str]  # position -> why the guard rejects that record
    flags: dict[int, str]  # position -> TEXT_REPAIRED


def admit_page(records: list[Any], max_bytes: int) -> AdmittedPage:
    page = AdmittedPage(list(records), [], {}, {})
    dumps = orjson.dumps
    for n, record in enumerate(records):
        raw = b""  # unless orjson writes it, the slow path below decides
        if not isinstance(record, UndecodableRecord):
            with contextlib.suppress(TypeError, ValueError):
                raw = dumps(record)
        if raw and len(raw) <= max_bytes:
            page.raws.append(raw)
            continue
        admitted = admit(record, max_bytes)
        page.values[n] = admitted.value
        page.raws.append(admitted.raw)
        if admitted.problem is not None:
            page.problems[n] = admitted.problem
        if admitted.flag is not None:
            page.flags[n] = admitted.flag
    return page


def admit(record: Any, max_bytes: int) -> Admitted:
    if isinstance(record, UndecodableRecord):
        reason = f"{record.reason} ({record.size} bytes)"
        head = {"id": record.record_id, "bytes": record.size, "head": record.excerpt}
        return Admitted({}, _excerpt_json(head, reason), problem=reason)
    try:
        raw = orjson.dumps(record)
    except (TypeError, ValueError):
        return _slow_path(record, max_bytes)
    if len(raw) > max_bytes:
        return _oversized(record, raw, max_bytes)
    return Admitted(record, raw)


def _slow_path(record: Any, max_bytes: int) -> Admitted:
    depth = nesting_depth(record)
    if depth > MAX_DEPTH:
        reason = f"record is nested {depth} levels deep, deeper than the {MAX_DEPTH} allowed"
        head = {"id": record.get("id")} if isinstance(record, dict) else {}
        return Admitted({}, _excerpt_json(head, reason), problem=reason)
    repaired, changed = repair_text(record)
    try:
        raw = orjson.dumps(repaired)
    except (TypeError, ValueError):
        # integers beyond 64 bits, non-string keys: the json module writes them as JSON
        raw = json.dumps(repaired, ensure_ascii=False, separators=(",", ":"), default=str).encode()
    if len(raw) > max_bytes:
        return _oversized(repaired, raw, max_bytes)
    return Admitted(repaired, raw, flag=TEXT_REPAIRED if changed else None)


def _oversized(record: Any, raw: bytes, max_bytes: int) -> Admitted:
    reason = f"record is {len(raw)} bytes, over the {max_bytes}-byte limit (SYNC_MAX_RECORD_BYTES)"
    head = {"id": record.get("id")} if isinstance(record, dict) else {}
    excerpt = raw[: EXCERPT_CHARS * 4].decode(errors="ignore")[:EXCERPT_CHARS]
    return Admitted({}, _excerpt_json({**head, "bytes": len(raw), "head": excerpt}, reason), reason)


def _excerpt_json(fields: dict[str, Any], reason: str) -> bytes:
    """What a reject row stores instead of a record too big or too deep to keep: valid JSON."""
    safe_id = fields.get("id")
    shown = {
        **fields,
        "id": safe_id if isinstance(safe_id, str | int) and not isinstance(safe_id, bool) else None,
        "omitted": reason,
    }
    repaired, _ = repair_text(shown)
    return json.dumps(repaired, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def nesting_depth(value: Any) -> int:
    """Levels of arrays/objects in `value` (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


def repair_text(value: Any) -> tuple[Any, bool]:
    """`value` with every lone surrogate in strings and keys replaced by U+FFFD; and whether
    anything changed. NaN and infinities become null on the way, as orjson writes them (the
    json module would write `NaN`, which is not JSON and which DuckDB refuses). Callers bound
    the depth first (`nesting_depth`): this recurses."""
    if isinstance(value, str):
        fixed = _LONE_SURROGATE.sub("\ufffd", value)
        return fixed, fixed != value
    if isinstance(value, float) and not math.isfinite(value):
        return None, False
    if isinstance(value, list):
        items = [repair_text(v) for v in value]
        return [v for v, _ in items], any(c for _, c in items)
    if isinstance(value, dict):
        changed = False
        out: dict[Any, Any] = {}
        for key, item in value.items():
            new_key, key_changed = repair_text(key) if isinstance(key, str) else (key, False)
            new_item, item_changed = repair_text(item)
            out[new_key] = new_item
            changed = changed or key_changed or item_changed
        return out, changed
    return value, False
