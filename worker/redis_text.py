"""Text (and numbers written as text) read from Redis. The project's clients read bytes (`worker.connection.connect`:
no `decode_responses`), and some callers pass a decoding client: either way an operator's tool and a record want str.
Bytes that are not UTF-8 (a key or field someone else wrote) are shown with replacement characters, never a
traceback."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def as_text(value: bytes | str | None) -> str:
    """`value` as str; None (a field or reply that is absent) reads as empty text."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def as_optional_text(value: bytes | str | None) -> str | None:
    """As `as_text`, but absent stays None: for fields whose absence means something."""
    return None if value is None else as_text(value)


def as_number(value: Any) -> float | None:
    """A field's text (or a worker's JSON value) as a finite number; None when absent, not a number, NaN or infinite
    (JSON has no NaN, and a NaN compares false with every threshold). A bool is no number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def server_label(info: Mapping[str, Any]) -> str:
    """Which server `INFO server` describes: "Valkey 8.1.8" or "Redis 7.0.15". Valkey reports a Redis-compatible
    `redis_version` (7.2.4) beside its own `valkey_version`: read alone, it names a Redis that is not there."""
    valkey = info.get("valkey_version")
    if valkey:
        return f"Valkey {as_text(valkey)}"
    return f"Redis {as_text(info.get('redis_version')) or 'of unknown version'}"
