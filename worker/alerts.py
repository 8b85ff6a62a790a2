"""The `tactical_alerts` stream: the audit trail of P0/P1/P2 alerts and of every operator action.

Entries are flat stream fields (`severity`, `kind`, `message`, `source`, `ts`, plus any extra fields), so
`redis-cli XREAD COUNT 10 STREAMS tactical_alerts 0` — the runbook's diagnosis step — reads them as they are.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

import redis

from worker.connection import REDIS_FAILED
from worker.names import ALERTS_STREAM
from worker.redis_text import as_text
from worker.stream_entries import entries, read_after

# Approximate trimming (MAXLEN ~) costs nothing per XADD and keeps months of alerts.
ALERTS_MAXLEN = 100_000

CORE_FIELDS: tuple[str, ...] = ("severity", "kind", "message", "source", "ts")


class Severity(StrEnum):
    P0 = "P0"  # critical: immediate response
    P1 = "P1"  # warning: respond within 15 minutes
    P2 = "P2"  # information for the team lead
    AUDIT = "AUDIT"  # an operator action, recorded for the trail


class AlertFieldError(ValueError):
    """An extra alert field would overwrite one of the core fields."""


class AuditTrailError(RuntimeError):
    """`tactical_alerts` holds something other than a stream: an action that must be audited is not taken."""


def require_audit_trail(client: redis.Redis) -> None:
    """Raise AuditTrailError unless `tactical_alerts` is a stream or does not exist yet. Called before an audited
    action changes anything: the audit entry is written after the change, and a key of another type there would
    refuse it, leaving a change nobody can trace."""
    kind = _alerts_key_type(client)
    if kind not in ("stream", "none"):
        raise AuditTrailError(
            f"{ALERTS_STREAM} is a {kind}, not a stream, so this action could not be audited: nothing was changed. "
            f"{_move_aside(kind)}, then run the command again: the next audit entry starts a new stream"
        )


def _alerts_key_type(client: redis.Redis) -> str:
    kind = client.type(ALERTS_STREAM)
    return kind.decode() if isinstance(kind, bytes) else str(kind)


def _move_aside(kind: str) -> str:
    return f"Move the key aside (redis-cli RENAME {ALERTS_STREAM} {ALERTS_STREAM}:{kind})"


@contextmanager
def _readable_audit_trail(client: redis.Redis) -> Iterator[None]:
    """A read of `tactical_alerts` refused with WRONGTYPE (someone else's key under its name) raises AuditTrailError
    saying what the key is and how to move it aside, instead of Redis's bare refusal."""
    try:
        yield
    except redis.ResponseError as exc:
        if not str(exc).startswith("WRONGTYPE"):
            raise
        kind = _alerts_key_type(client)
        raise AuditTrailError(f"{ALERTS_STREAM} is a {kind}, not a stream: the alert history and audit trail cannot "
                              f"be read. {_move_aside(kind)}; the next alert starts a new stream") from None


@dataclass(frozen=True, slots=True)
class Alert:
    """One entry of `tactical_alerts`. `severity` is kept as written, so a hand-written entry is never hidden."""

    id: str
    severity: str
    kind: str
    message: str
    source: str
    ts: str
    fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def actor(self) -> str | None:
        return self.fields.get("actor")

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "kind": self.kind,
            "message": self.message,
            "source": self.source,
            "ts": self.ts,
            **self.fields,
        }


def default_actor() -> str:
    """`user@host` of whoever runs the command: what an audit entry names as the actor."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def _utc_iso(at: float | None = None) -> str:
    """`at` (Unix seconds; None: now) as ISO-8601 UTC to the millisecond."""
    when = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# An alert published this much later than what it reports happened (held back while Redis was down) says when it
# was published too.
LATE_PUBLISH_S = 1.0


def publish_alert(
    client: redis.Redis, *, severity: Severity, kind: str, message: str, source: str, at: float | None = None,
    **fields: str,
) -> bytes:
    """XADD one alert and return its entry id. `ts` is `at`, when what it reports happened (Unix seconds; default
    now): an alert held back while Redis was down keeps its time, and carries `published_ts` too."""
    clashes = sorted(set(fields) & {*CORE_FIELDS, "published_ts"})
    if clashes:
        raise AlertFieldError(f"extra alert fields {clashes} would overwrite core fields {list(CORE_FIELDS)}")
    now = time.time()
    entry = {
        "severity": Severity(severity).value,
        "kind": kind,
        "message": message,
        "source": source,
        "ts": _utc_iso(now if at is None else at),
        **{name: str(value) for name, value in fields.items()},
    }
    if at is not None and now - at >= LATE_PUBLISH_S:
        entry["published_ts"] = _utc_iso(now)
    entry_id = client.xadd(ALERTS_STREAM, entry, maxlen=ALERTS_MAXLEN, approximate=True)  # type: ignore[arg-type]
    return cast(bytes, entry_id)


def audit(client: redis.Redis, *, actor: str, action: str, detail: str, **fields: str) -> bytes:
    """Record an operator action (severity AUDIT, kind = the action, source and `actor` = who did it)."""
    if "actor" in fields:
        raise AlertFieldError("pass the actor as `actor=`, not as an extra field")
    return publish_alert(
        client, severity=Severity.AUDIT, kind=action, message=detail, source=actor, at=None, actor=actor, **fields
    )


# Why an audit entry of a change already made was not written: Redis refused or is gone, or the key is not a stream.
_NOT_WRITTEN: tuple[type[Exception], ...] = (AuditTrailError, *REDIS_FAILED)


def audit_done(client: redis.Redis, *, actor: str, action: str, detail: str,
               **fields: str) -> tuple[str | None, str | None]:
    """Audit a change already made: (the entry's id, None), or (None, why) when Redis did not take the entry — out of
    memory (noeviction refuses XADD but takes the XTRIM and DEL that free memory), a replica now, or gone. The change
    stands either way: the caller says what it did, and that the audit trail misses it. So is an alert history of
    another type (AuditTrailError) for a change that did not check it first."""
    try:
        return as_text(audit(client, actor=actor, action=action, detail=detail, **fields)), None
    except _NOT_WRITTEN as exc:
        return None, str(exc)


def _alert(entry_id: bytes | str, raw: Mapping[bytes, bytes] | Mapping[str, str]) -> Alert:  # str: a decoding client
    values = {as_text(k): as_text(v) for k, v in raw.items()}
    core = {name: values.pop(name, "") for name in CORE_FIELDS}
    return Alert(id=as_text(entry_id), fields=values, **core)


def read_alerts(client: redis.Redis, *, count: int, since_id: str = "0") -> list[Alert]:
    """Up to `count` alerts written after `since_id`, oldest first (pass the last id seen to page on)."""
    with _readable_audit_trail(client):
        found = read_after(client, ALERTS_STREAM, since_id, count=count)
    return [_alert(entry_id, raw) for entry_id, raw in found]


def recent_alerts(client: redis.Redis, *, count: int) -> list[Alert]:
    """The latest `count` alerts, oldest first: the alert history the morning check reviews."""
    with _readable_audit_trail(client):
        newest = entries(client, ALERTS_STREAM, count=count, newest_first=True)
    return [_alert(entry_id, raw) for entry_id, raw in reversed(newest)]
