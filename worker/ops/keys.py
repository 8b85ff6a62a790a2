"""Idempotency keys: list them with age, TTL and owner, and clean the ones nothing will ever finish.

`tactical:processing:{cid}` holds `owner|entry_id` while a worker decides an event; its owner is a consumer whose
liveness is its heartbeat. A processing key whose owner has no live heartbeat is *stale*: the event it guards
is pending on a dead consumer, and until the key goes (lease expiry or cleanup) a redelivery of the same id is
counted as a duplicate in flight. `tactical:completed:{cid}` holds the decision's stream id, so its age is the
decision's time; it is *old* past `older_than_s`.

Keys are found with SCAN, never KEYS (safe on a busy server). Cleanup deletes a key only if its value is still the
one listed (compare-and-delete in Lua), so a key a live worker re-took in the meantime is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from worker.alerts import audit_done, require_audit_trail
from worker.connection import refused_as_wrong_type
from worker.heartbeat import live_consumers
from worker.names import COMPLETED_PREFIX, PROCESSING_PREFIX
from worker.redis_text import as_text
from worker.stream_entries import server_now_ms, stream_id_ms

DEFAULT_OLDER_THAN_S = 24 * 3600.0
# A completed key younger than this still answers the copies exactly-once is about: redeliveries and upstream resends
# (the duplicate checks watch 15 minutes). Deleting it lets such a copy be decided, and traded, again.
MIN_OLDER_THAN_S = 15 * 60.0
_SCAN_COUNT = 1000
_AUDITED_KEYS = 50


class KeyKind(StrEnum):
    PROCESSING = "processing"
    COMPLETED = "completed"

    @property
    def prefix(self) -> str:
        return PROCESSING_PREFIX if self is KeyKind.PROCESSING else COMPLETED_PREFIX


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    key: str
    kind: KeyKind
    value: str
    ttl_s: float | None  # None: no expiry set
    age_s: float | None  # processing: since its event entered the stream; completed: since the decision
    owner: str | None  # processing only: the consumer holding it
    entry_id: str | None  # processing: the input entry; completed: the decision entry
    owner_alive: bool | None  # processing only

    @property
    def correlation_id(self) -> str:
        return self.key[len(self.kind.prefix) :]

    @property
    def stale(self) -> bool:
        """A processing key whose owner has no live heartbeat (or cannot be read from the value)."""
        return self.kind is KeyKind.PROCESSING and not self.owner_alive

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind.value,
            "correlation_id": self.correlation_id,
            "age_s": None if self.age_s is None else round(self.age_s, 3),
            "ttl_s": None if self.ttl_s is None else round(self.ttl_s, 3),
            "owner": self.owner,
            "owner_alive": self.owner_alive,
            "entry_id": self.entry_id,
            "stale": self.stale,
        }


def describe_key(
    key: str, value: str, pttl_ms: int, *, now_ms: int, live: Iterable[str], completed_ttl_s: float | None = None
) -> IdempotencyKey:
    """One key as an operator sees it. Pure: `now_ms` is the Redis server's clock, `live` the consumers with a
    heartbeat. A completed key whose value is not a stream id gets its age from TTL math, when the TTL it was
    written with (`completed_ttl_s`) is known."""
    ttl_s = pttl_ms / 1000.0 if pttl_ms >= 0 else None
    if key.startswith(PROCESSING_PREFIX):
        owner, sep, entry_id = value.rpartition("|")
        owner_name = owner if sep and owner else None
        entry = entry_id if sep else None
        entry_ms = stream_id_ms(entry)
        return IdempotencyKey(
            key=key,
            kind=KeyKind.PROCESSING,
            value=value,
            ttl_s=ttl_s,
            age_s=None if entry_ms is None else max(0.0, (now_ms - entry_ms) / 1000.0),
            owner=owner_name,
            entry_id=entry,
            owner_alive=owner_name is not None and owner_name in set(live),
        )
    decision_ms = stream_id_ms(value)
    age_s: float | None = None
    if decision_ms is not None:
        age_s = max(0.0, (now_ms - decision_ms) / 1000.0)
    elif completed_ttl_s is not None and ttl_s is not None:
        age_s = max(0.0, completed_ttl_s - ttl_s)
    return IdempotencyKey(
        key=key,
        kind=KeyKind.COMPLETED,
        value=value,
        ttl_s=ttl_s,
        age_s=age_s,
        owner=None,
        entry_id=value if decision_ms is not None else None,
        owner_alive=None,
    )


def scan_idempotency_keys(
    client: redis.Redis,
    kinds: Sequence[KeyKind] = (KeyKind.PROCESSING, KeyKind.COMPLETED),
    *,
    limit: int | None = None,
    completed_ttl_s: float | None = None,
) -> list[IdempotencyKey]:
    """Processing and completed keys (up to `limit` of each kind), oldest first within each kind."""
    now_ms = server_now_ms(client)
    live = set(live_consumers(client))
    found: list[IdempotencyKey] = []
    for kind in kinds:
        names: list[bytes] = []
        for name in client.scan_iter(match=kind.prefix + "*", count=_SCAN_COUNT):
            names.append(name)
            if limit is not None and len(names) >= limit:
                break
        described: list[IdempotencyKey] = []
        for start in range(0, len(names), _SCAN_COUNT):
            chunk = names[start : start + _SCAN_COUNT]
            with client.pipeline(transaction=False) as pipe:
                for name in chunk:
                    pipe.get(name)
                    pipe.pttl(name)
                replies = pipe.execute(raise_on_error=False)  # a key of another type is one refused GET
            for index, name in enumerate(chunk):
                value, pttl = replies[2 * index], replies[2 * index + 1]
                if refused_as_wrong_type(value) or value is None:
                    continue  # not a string (no worker wrote it, none is cleaned), or expired between SCAN and GET
                described.append(
                    describe_key(as_text(name), as_text(value), int(pttl), now_ms=now_ms, live=live,
                                 completed_ttl_s=completed_ttl_s)
                )
        described.sort(key=lambda k: (-(k.age_s if k.age_s is not None else -1.0), k.key))
        found.extend(described)
    return found


def find_stale_processing_keys(client: redis.Redis) -> list[IdempotencyKey]:
    """Processing keys whose owner is gone: what the morning check's step 7 looks for."""
    return [k for k in scan_idempotency_keys(client, (KeyKind.PROCESSING,)) if k.stale]


@dataclass(frozen=True, slots=True)
class KeyCleanupPlan:
    stale_processing: tuple[IdempotencyKey, ...]
    old_completed: tuple[IdempotencyKey, ...]
    older_than_s: float

    @property
    def keys(self) -> tuple[IdempotencyKey, ...]:
        return self.stale_processing + self.old_completed

    def as_dict(self) -> dict[str, Any]:
        return {
            "older_than_s": self.older_than_s,
            "stale_processing": [k.as_dict() for k in self.stale_processing],
            "old_completed": [k.as_dict() for k in self.old_completed],
        }


def require_cleanable_age(older_than_s: float) -> None:
    """ValueError for an age under MIN_OLDER_THAN_S; the CLI asks before it reads Redis."""
    if older_than_s < MIN_OLDER_THAN_S:
        raise ValueError(f"an age of {older_than_s:g} s would delete completed keys that still guard against a copy "
                         f"being decided (and traded) again: give at least {MIN_OLDER_THAN_S / 60:g} min")


def plan_key_cleanup(keys: Iterable[IdempotencyKey], *, older_than_s: float = DEFAULT_OLDER_THAN_S) -> KeyCleanupPlan:
    """Stale processing keys, and completed keys whose age is known and above `older_than_s`."""
    require_cleanable_age(older_than_s)
    keys = list(keys)
    return KeyCleanupPlan(
        stale_processing=tuple(k for k in keys if k.stale),
        old_completed=tuple(
            k for k in keys if k.kind is KeyKind.COMPLETED and k.age_s is not None and k.age_s > older_than_s
        ),
        older_than_s=older_than_s,
    )


# KEYS: the keys; ARGV: the values they were listed with. Deletes only the unchanged ones; returns their indexes.
_COMPARE_AND_DELETE_LUA = """
local deleted = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    redis.call('DEL', KEYS[i])
    deleted[#deleted + 1] = i
  end
end
return deleted
"""


@dataclass(frozen=True, slots=True)
class KeyCleanupResult:
    plan: KeyCleanupPlan
    deleted: tuple[str, ...]
    applied: bool
    audit_id: str | None = None
    audit_error: str | None = None  # the keys were deleted, their audit entry refused (Redis at maxmemory takes DEL)

    @property
    def skipped(self) -> tuple[str, ...]:
        """Planned keys that changed or expired before the cleanup ran, and were left alone."""
        if not self.applied:
            return ()
        deleted = set(self.deleted)
        return tuple(k.key for k in self.plan.keys if k.key not in deleted)

    def as_dict(self) -> dict[str, Any]:
        return {**self.plan.as_dict(), "applied": self.applied, "deleted": list(self.deleted),
                "skipped": list(self.skipped), "audit_id": self.audit_id, "audit_error": self.audit_error}


def clean_keys(client: redis.Redis, plan: KeyCleanupPlan, *, actor: str, apply: bool) -> KeyCleanupResult:
    """Delete the planned keys that still hold the listed value; audit what was deleted. Nothing when not `apply`."""
    if not apply or not plan.keys:
        return KeyCleanupResult(plan, (), applied=apply)
    require_audit_trail(client)
    script = client.register_script(_COMPARE_AND_DELETE_LUA)
    deleted: list[str] = []
    planned = list(plan.keys)
    for start in range(0, len(planned), _SCAN_COUNT):
        chunk = planned[start : start + _SCAN_COUNT]
        indexes = script(keys=[k.key for k in chunk], args=[k.value for k in chunk])
        deleted.extend(chunk[int(i) - 1].key for i in indexes)
    audit_id = audit_error = None
    if deleted:
        counts = _count_by_kind(plan, deleted)
        shown = ",".join(deleted[:_AUDITED_KEYS]) + (
            f",…(+{len(deleted) - _AUDITED_KEYS})" if len(deleted) > _AUDITED_KEYS else ""
        )
        audit_id, audit_error = audit_done(
            client,
            actor=actor,
            action="keys_clean",
            detail=f"deleted {counts[KeyKind.PROCESSING]} stale processing keys and "
            f"{counts[KeyKind.COMPLETED]} completed keys older than {plan.older_than_s:g} s",
            processing_deleted=str(counts[KeyKind.PROCESSING]),
            completed_deleted=str(counts[KeyKind.COMPLETED]),
            older_than_s=f"{plan.older_than_s:g}",
            keys=shown,
        )
    return KeyCleanupResult(plan, tuple(deleted), True, audit_id, audit_error)


def _count_by_kind(plan: KeyCleanupPlan, deleted: Iterable[str]) -> Mapping[KeyKind, int]:
    kinds = {k.key: k.kind for k in plan.keys}
    counts = dict.fromkeys(KeyKind, 0)
    for key in deleted:
        counts[kinds[key]] += 1
    return counts

