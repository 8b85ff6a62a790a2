"""Entries delivered to the consumer group but never acknowledged: inspect them, hand them to a live consumer, or
move them to the dead-letter stream with a reason.

Moving is never deletion: a claimed entry stays pending on its new owner, a dead-lettered one keeps its original
fields in `synergy_events:dead`. Each move re-checks, atomically, that the entry is still idle past the limit, so
an entry a worker finished (or picked up) between the look and the act is left alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from worker.alerts import audit_done, require_audit_trail
from worker.delivery import RELEASE_LEASE_LUA, StreamNames, dead_letter_fields
from worker.events import wire_correlation_id
from worker.heartbeat import is_alive
from worker.names import processing_key
from worker.redis_text import as_text
from worker.settings import DEFAULT_SETTINGS
from worker.stream_entries import entries


class PendingUnavailable(RuntimeError):
    """The stream or the consumer group does not exist; the message says what to check."""


class ConsumerNotLive(RuntimeError):
    """The consumer named to receive entries has no live heartbeat: entries claimed to it would stay stuck."""
DEFAULT_STREAMS = StreamNames()


def reclaim_advice(*, worker_live: bool) -> str:
    """What becomes of entries held by a consumer without a heartbeat, and what an operator can do: said the same by
    `tacticalctl pending` and the triage. A claim needs a live worker to hand them to."""
    said = ("a live worker reclaims them once idle past its TACTICAL_CLAIM_MIN_IDLE_MS (default "
            f"{DEFAULT_SETTINGS.claim_min_idle_ms / 1000:g} s)")
    if worker_live:
        return said + " — or `tacticalctl pending claim --to <live worker> --yes`"
    return said + "; no worker beats now: start one (a claim needs a live worker to hand them to)"


@dataclass(frozen=True, slots=True)
class PendingSummary:
    """XPENDING's summary form: how many entries wait for an ACK, their id range and who holds them."""

    count: int
    min_id: str | None
    max_id: str | None
    consumers: Mapping[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "min_id": self.min_id, "max_id": self.max_id, "consumers": dict(self.consumers)}


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """One pending entry (XPENDING's extended form)."""

    entry_id: str
    consumer: str
    idle_ms: int
    times_delivered: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.entry_id,
            "consumer": self.consumer,
            "idle_ms": self.idle_ms,
            "times_delivered": self.times_delivered,
        }


def _missing(exc: redis.ResponseError, streams: StreamNames) -> PendingUnavailable | redis.ResponseError:
    """NOGROUP as the operator's next step; any other refusal (a count out of range, NOPERM) as it is."""
    if not str(exc).startswith("NOGROUP"):
        return exc
    return PendingUnavailable(
        f"no consumer group {streams.group!r} on stream {streams.input!r} ({exc}): start the worker (it creates "
        "the group), or check the Redis URL and database (the runbook's is db 2)"
    )


def read_pending_summary(client: redis.Redis, streams: StreamNames = DEFAULT_STREAMS) -> PendingSummary:
    try:
        raw = client.xpending(streams.input, streams.group)
    except redis.ResponseError as exc:
        raise _missing(exc, streams) from None
    consumers = {as_text(c["name"]): int(c["pending"]) for c in raw.get("consumers") or []}
    return PendingSummary(
        count=int(raw["pending"]),
        min_id=None if raw["min"] is None else as_text(raw["min"]),
        max_id=None if raw["max"] is None else as_text(raw["max"]),
        consumers=dict(sorted(consumers.items())),
    )


def read_pending_entries(
    client: redis.Redis,
    *,
    min_idle_ms: int = 0,
    consumer: str | None = None,
    count: int = 100,
    streams: StreamNames = DEFAULT_STREAMS,
) -> list[PendingEntry]:
    """Up to `count` pending entries, oldest first, idle at least `min_idle_ms`, optionally of one consumer."""
    try:
        rows: list[dict[str, Any]] = client.xpending_range(  # type: ignore[assignment]  # redis-py: a union
            streams.input,
            streams.group,
            min="-",
            max="+",
            count=count,
            consumername=consumer,
            idle=min_idle_ms or None,
        )
    except redis.ResponseError as exc:
        raise _missing(exc, streams) from None
    return [
        PendingEntry(
            entry_id=as_text(row["message_id"]),
            consumer=as_text(row["consumer"]),
            idle_ms=int(row["time_since_delivered"]),
            times_delivered=int(row["times_delivered"]),
        )
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class PendingMove:
    """What a claim or dead-letter found (`planned`), what it moved (`moved`, entry ids) and its audit entry."""

    action: str
    planned: tuple[PendingEntry, ...]
    moved: tuple[str, ...] = ()
    applied: bool = False
    audit_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # what it was asked: JSON values as they are
    audit_error: str | None = None  # the entries moved, their audit entry refused (Redis at maxmemory)
    # A claim's: pending entries whose data is gone from the stream (deleted or trimmed), left pending where they
    # were (XCLAIM would drop them from the group unrecorded); `pending dead-letter` keeps a record of each.
    gone: tuple[str, ...] = ()

    @property
    def skipped(self) -> tuple[str, ...]:
        """Entries found stuck that were no longer stuck when the move ran (acked or picked up meanwhile)."""
        left = set(self.moved) | set(self.gone)
        return tuple(e.entry_id for e in self.planned if e.entry_id not in left) if self.applied else ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "applied": self.applied,
            "planned": [e.as_dict() for e in self.planned],
            "moved": list(self.moved),
            "skipped": list(self.skipped),
            "audit_id": self.audit_id,
            "audit_error": self.audit_error,
            **({"gone": list(self.gone)} if self.action == "claim" else {}),
            **dict(self.details),
        }


_AUDITED_IDS = 50


def _id_list(ids: Sequence[str]) -> str:
    shown = ",".join(ids[:_AUDITED_IDS])
    return shown + (f",…(+{len(ids) - _AUDITED_IDS})" if len(ids) > _AUDITED_IDS else "")


def claim_stuck_entries(
    client: redis.Redis,
    *,
    to_consumer: str,
    min_idle_ms: int,
    actor: str,
    apply: bool,
    from_consumer: str | None = None,
    count: int = 100,
    streams: StreamNames = DEFAULT_STREAMS,
) -> PendingMove:
    """Hand entries idle ≥ `min_idle_ms` to `to_consumer`, which must have a live heartbeat.

    XCLAIM JUSTID: ownership moves without counting a delivery, the idle time stays; the workers' reclaim loop
    decides them at its next pass.
    Only when `apply` is true does anything change (and an audit entry is written)."""
    if not is_alive(client, to_consumer):
        raise ConsumerNotLive(
            f"consumer {to_consumer!r} has no live heartbeat: entries claimed to it would stay stuck; "
            "name a running worker (see `tacticalctl stream info`)"
        )
    planned = tuple(
        e
        for e in read_pending_entries(
            client, min_idle_ms=min_idle_ms, consumer=from_consumer, count=count, streams=streams
        )
        if e.consumer != to_consumer
    )
    details: dict[str, Any] = {"to_consumer": to_consumer, "min_idle_ms": min_idle_ms}
    if not apply or not planned:
        return PendingMove("claim", planned, applied=apply, details=details)
    require_audit_trail(client)
    claimed, gone = client.register_script(_CLAIM_LUA)(
        keys=[streams.input], args=[streams.group, to_consumer, min_idle_ms, *(e.entry_id for e in planned)]
    )
    moved = tuple(as_text(entry_id) for entry_id in claimed)
    left = tuple(as_text(entry_id) for entry_id in gone)
    audit_id = audit_error = None
    if moved:
        audit_id, audit_error = audit_done(
            client,
            actor=actor,
            action="pending_claim",
            detail=f"claimed {len(moved)} pending entries idle ≥ {min_idle_ms} ms of {streams.input} to {to_consumer}"
            + (f"; {len(left)} left where they were, their data gone from the stream" if left else ""),
            stream=streams.input,
            group=streams.group,
            to_consumer=to_consumer,
            count=str(len(moved)),
            entry_ids=_id_list(moved),
            **({"gone_count": str(len(left)), "gone_ids": _id_list(left)} if left else {}),
        )
    return PendingMove("claim", planned, moved, True, audit_id, details, gone=left, audit_error=audit_error)


# KEYS: the input stream. ARGV: group, the consumer to claim to, min idle ms, then the entry ids. Per entry, one
# still pending and idle past the limit is claimed (JUSTID: no delivery counted) — unless its data is gone from the
# stream: XCLAIM would then drop it from the group (Redis 7) with no record of it; it stays where it is, returned
# in the second list. A claimed entry keeps its idle time (XCLAIM would set it to 0): the workers reclaim entries
# idle past their min-idle (XAUTOCLAIM), and a stuck one is to be decided at their next pass, not a min-idle later.
# Returns {claimed ids, gone ids}.
_CLAIM_LUA = """
local claimed, gone = {}, {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], id, id, 1)[1]
  if row then
    if #redis.call('XRANGE', KEYS[1], id, id) == 0 then
      gone[#gone + 1] = id
    elseif #redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], id, 'IDLE', row[3], 'JUSTID') > 0 then
      claimed[#claimed + 1] = id
    end
  end
end
return {claimed, gone}
"""


# KEYS: input stream, dead-letter stream, and the processing key of its correlation id if it has one. ARGV: group,
# min idle ms, entry id, then the dead letter's flat fields. Re-checks that the entry is still pending and idle, so
# one finished meanwhile is neither copied nor acked twice. A lease this entry holds (a stalled worker's) is
# released: a replay of the dead letter would be taken for a copy in flight and acked undecided.
_DEAD_LETTER_LUA = RELEASE_LEASE_LUA + """
local still = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[2], ARGV[3], ARGV[3], 1)
if #still == 0 then return false end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local dead_id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if KEYS[3] then release_lease(KEYS[3], ARGV[3]) end
return dead_id
"""


def dead_letter_stuck_entries(
    client: redis.Redis,
    *,
    reason: str,
    min_idle_ms: int,
    actor: str,
    apply: bool,
    consumer: str | None = None,
    count: int = 100,
    streams: StreamNames = DEFAULT_STREAMS,
) -> PendingMove:
    """Move entries idle ≥ `min_idle_ms` to the dead-letter stream with `reason`, keeping their original fields,
    and acknowledge them — both in one atomic step per entry. An entry whose data is gone from the stream (trimmed
    or deleted) is still dead-lettered, with only the reason and its history, so nothing disappears silently."""
    if not reason.strip():
        raise ValueError("a dead-letter reason is required: say why these entries are given up on")
    planned = tuple(
        read_pending_entries(client, min_idle_ms=min_idle_ms, consumer=consumer, count=count, streams=streams)
    )
    details: dict[str, Any] = {"reason": reason, "min_idle_ms": min_idle_ms}
    if not apply or not planned:
        return PendingMove("dead_letter", planned, applied=apply, details=details)
    require_audit_trail(client)
    script = client.register_script(_DEAD_LETTER_LUA)
    moved: list[str] = []
    for entry in planned:
        found = entries(client, streams.input, lower=entry.entry_id, upper=entry.entry_id, count=1)
        original: dict[bytes, bytes] = dict(found[0][1]) if found else {}
        fields = dead_letter_fields(
            original,
            reason=reason if found else f"{reason} (entry no longer in {streams.input}: fields lost)",
            delivery_count=entry.times_delivered,
            entry_id=entry.entry_id.encode(),
            consumer=entry.consumer,
        )
        fields["dead_actor"] = actor
        flat: list[bytes | str] = [item for pair in fields.items() for item in pair]
        keys = [streams.input, streams.dead_letters]
        if (correlation_id := wire_correlation_id(original)) is not None:
            keys.append(processing_key(correlation_id))
        dead_id = script(keys=keys, args=[streams.group, min_idle_ms, entry.entry_id, *flat])
        if dead_id is not None:
            moved.append(entry.entry_id)
    audit_id = audit_error = None
    if moved:
        audit_id, audit_error = audit_done(
            client,
            actor=actor,
            action="pending_dead_letter",
            detail=f"dead-lettered {len(moved)} pending entries idle ≥ {min_idle_ms} ms of {streams.input} "
            f"to {streams.dead_letters}: {reason}",
            stream=streams.input,
            dead_letter_stream=streams.dead_letters,
            reason=reason,
            count=str(len(moved)),
            entry_ids=_id_list(moved),
        )
    return PendingMove("dead_letter", planned, tuple(moved), True, audit_id, details, audit_error=audit_error)
