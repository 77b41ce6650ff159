"""Text that can be stored: every string an intake row holds goes through here.

`json.loads` turns an escaped lone surrogate (``"\\ud800"``, what a string cut mid-emoji looks
like) into a Python string that UTF-8, Arrow and DuckDB refuse, so one such value used to fail a
whole day's partition. The rule, per field:

- values that key or route something (ids, event, status, action) must be storable as sent,
  or the item is rejected with a reason: repairing them would silently merge distinct ids;
- descriptive text (model, type) and evidence (`raw`, `payload`) is repaired: each lone
  surrogate becomes U+FFFD, or, for JSON, escaped so the stored text still means the same value.

Control characters are valid Unicode that Arrow and DuckDB store as sent, so they are kept.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def is_storable(text: str) -> bool:
    """True when `text` encodes to UTF-8 (holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def repaired(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD (unchanged when already storable)."""
    return text if is_storable(text) else _SURROGATE.sub(REPLACEMENT, text)


def storable_or_none(value: object) -> str | None:
    """A string value, repaired; None for anything that is not a string."""
    return repaired(value) if isinstance(value, str) else None


def json_text(value: Any) -> str:
    """`value` as storable JSON text, non-ASCII kept readable where it can be.

    A value with a lone surrogate is written with ASCII escapes, which is still the exact value.
    A value nested beyond what the encoder allows is summarised rather than raising.
    """
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (RecursionError, ValueError, TypeError) as exc:
        return json.dumps({"unserialisable": type(exc).__name__})
    return text if is_storable(text) else json.dumps(value)
