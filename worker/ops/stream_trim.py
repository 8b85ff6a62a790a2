"""Stream retention: trim the entries older than an age, never one that a consumer group still needs.

The streams are not trimmed as they are written (trimming at XADD can drop events no worker has read), so they grow
at the full event rate. `XTRIM … MINID` by hand can drop an event no worker has read yet, or one pending on a worker
(being decided, or a dead worker's waiting to be reclaimed). `plan_trim` caps each stream's cutoff at what its groups
still need: each group's oldest pending entry, and the first entry after its last-delivered id (not read yet). A
reader without a group (XREAD) is invisible here: choose an age longer than it lags.

Trimmed: the input, decision and command streams. Never here: the dead letters (each waits for an operator:
`tacticalctl dead-letter`), the alert history (capped at ~100,000 entries as it is written).

`trim_streams` removes whole stream nodes first, `TRIM_STEP` entries at most per XTRIM (`MINID ~ … LIMIT`), so Redis
is never held for long however much goes; then one exact XTRIM takes the entries of the last, partial node.

A plan counts what it would remove (Redis has no count of a stream's range): from whichever end of the stream is
nearer the cutoff, `COUNT_PAGE` entries per XRANGE and `COUNT_LIMIT` at most from each end, so a dry run reads a
bounded amount; past that the count is a lower bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

import redis

from worker.alerts import audit_done, require_audit_trail
from worker.names import COMMANDS_STREAM, CONSUMER_GROUP, DECISIONS_STREAM, INPUT_STREAM
from worker.redis_text import as_text
from worker.stream_entries import paged, parse_stream_id, server_now_ms

TRIMMED_STREAMS = (INPUT_STREAM, DECISIONS_STREAM, COMMANDS_STREAM)
TRIM_STEP = 10_000
COUNT_LIMIT = 10_000  # entries counted at most from each end of a stream (input entries are ~2 KB each)
COUNT_PAGE = 1_000


class StreamTrimError(ValueError):
    """A stream this command does not trim, or an age it cannot use."""


@dataclass(frozen=True, slots=True)
class StreamTrimPlan:
    """What trimming one stream would remove: every entry with an id before `cutoff_id`."""

    stream: str
    length: int  # entries now; 0 when the stream does not exist
    first_id: str | None
    cutoff_id: str  # XTRIM MINID: entries with smaller ids go
    cutoff_reason: str  # the age, or the group whose pending or unread entries hold the cutoff back
    would_remove: int = 0  # entries before the cutoff when planned: exact, or a lower bound (`would_remove_exact`)
    would_remove_exact: bool = True

    @property
    def removes_any(self) -> bool:
        return self.first_id is not None and parse_stream_id(self.first_id) < parse_stream_id(self.cutoff_id)

    def as_dict(self) -> dict[str, Any]:
        return {"stream": self.stream, "length": self.length, "first_id": self.first_id, "cutoff_id": self.cutoff_id,
                "cutoff_reason": self.cutoff_reason, "removes_any": self.removes_any,
                "would_remove": self.would_remove, "would_remove_exact": self.would_remove_exact}


@dataclass(frozen=True, slots=True)
class StreamTrimResult:
    older_than_s: float
    plans: tuple[StreamTrimPlan, ...]
    applied: bool
    removed: dict[str, int]  # per stream, what XTRIM said it removed (empty in a dry run)
    audit_id: str | None = None
    audit_error: str | None = None  # the trim happened, its audit entry was refused (Redis at maxmemory takes XTRIM)

    def as_dict(self) -> dict[str, Any]:
        return {"older_than_s": self.older_than_s, "streams": [p.as_dict() for p in self.plans],
                "applied": self.applied, "removed": self.removed, "audit_id": self.audit_id,
                "audit_error": self.audit_error}


def plan_trim(client: redis.Redis, older_than_s: float,
              streams: Sequence[str] = TRIMMED_STREAMS) -> list[StreamTrimPlan]:
    """Per stream, the cutoff: entries older than `older_than_s` by Redis's clock (stream ids are its clock too),
    held back to each group's oldest pending entry and to its first unread one."""
    if not older_than_s > 0:
        raise StreamTrimError(f"an age of {older_than_s:g} s would trim everything delivered: give one > 0")
    unknown = [s for s in streams if s not in TRIMMED_STREAMS]
    if unknown:
        raise StreamTrimError(f"{', '.join(unknown)}: only {', '.join(TRIMMED_STREAMS)} are trimmed here (dead letters "
                              "wait for an operator, the alert history is capped as it is written)")
    age_cutoff = (server_now_ms(client) - int(older_than_s * 1000), 0)
    return [_plan(client, stream, age_cutoff, older_than_s) for stream in dict.fromkeys(streams)]


def _plan(client: redis.Redis, stream: str, age_cutoff: tuple[int, int], older_than_s: float) -> StreamTrimPlan:
    try:
        info = client.xinfo_stream(stream)
    except redis.ResponseError as exc:
        if "no such key" not in str(exc):
            raise
        return StreamTrimPlan(stream, 0, None, _id(age_cutoff), "no such stream")
    cutoff, reason = max(age_cutoff, (0, 0)), f"older than {older_than_s:g} s"
    groups = client.xinfo_groups(stream)
    if stream == INPUT_STREAM and not any(as_text(group["name"]) == CONSUMER_GROUP for group in groups):
        # The worker creates its group at 0 when it first starts, so that what was published before is decided:
        # without the group, every entry is one it has not read yet.
        cutoff, reason = (0, 0), f"group {CONSUMER_GROUP} not created yet: no worker has read anything"
    for group in groups:
        name = as_text(group["name"])
        oldest_pending = client.xpending(stream, name).get("min")
        if oldest_pending is not None and parse_stream_id(oldest_pending) < cutoff:
            cutoff, reason = parse_stream_id(oldest_pending), f"group {name}: oldest pending entry"
        ms, seq = parse_stream_id(group["last-delivered-id"])
        first_unread = (ms, seq + 1)
        if first_unread < cutoff:
            cutoff, reason = first_unread, f"group {name}: entries not read yet"
    first, last, length = info.get("first-entry"), info.get("last-entry"), int(info["length"])
    plan = StreamTrimPlan(stream, length, as_text(first[0]) if first else None, _id(cutoff), reason)
    if not plan.removes_any or last is None:
        return plan
    would_remove, exact = _count_before(client, stream, plan.cutoff_id, as_text(last[0]), length)
    return replace(plan, would_remove=would_remove, would_remove_exact=exact)


def _count_before(client: redis.Redis, stream: str, cutoff_id: str, last_id: str, length: int) -> tuple[int, bool]:
    """Entries with ids before `cutoff_id`, of the `length` up to `last_id` that XINFO saw (entries added since are
    after the cutoff, and not counted as kept): counted from both ends a page at a time until one end reaches the
    cutoff. (count, True) when exact; (COUNT_LIMIT, False) when neither end reached it within COUNT_LIMIT."""
    ends = [paged(client, stream, page=COUNT_PAGE, upper=f"({cutoff_id}", limit=COUNT_LIMIT),  # what would go
            paged(client, stream, page=COUNT_PAGE, lower=cutoff_id, upper=last_id, newest_first=True,
                  limit=COUNT_LIMIT)]  # what would stay
    counted = [0, 0]
    for _ in range(-(-COUNT_LIMIT // COUNT_PAGE) + 1):
        for end, entries in enumerate(ends):
            page = sum(1 for _ in islice(entries, COUNT_PAGE))
            counted[end] += page
            if page < COUNT_PAGE and counted[end] < COUNT_LIMIT:  # this end reached the cutoff
                return (counted[0], True) if end == 0 else (max(0, length - counted[1]), True)
    return COUNT_LIMIT, False


def trim_streams(client: redis.Redis, plans: Sequence[StreamTrimPlan], *, older_than_s: float, actor: str,
                 apply: bool) -> StreamTrimResult:
    """Trim each planned stream to its cutoff and audit it; nothing when not `apply`."""
    plans = tuple(plans)
    if not apply or not any(plan.removes_any for plan in plans):
        return StreamTrimResult(older_than_s, plans, apply, {})
    require_audit_trail(client)
    removed: dict[str, int] = {}
    for plan in plans:
        if plan.removes_any:
            removed[plan.stream] = _trim(client, plan.stream, plan.cutoff_id)
    audit_id, audit_error = audit_done(
        client, actor=actor, action="stream_trim",
        detail=f"trimmed entries older than {older_than_s:g} s: " + ", ".join(f"{s} {n}" for s, n in removed.items()),
        older_than_s=f"{older_than_s:g}",
        **{f"{plan.stream}_cutoff": plan.cutoff_id for plan in plans if plan.stream in removed},
    )
    return StreamTrimResult(older_than_s, plans, True, removed, audit_id, audit_error)


def _trim(client: redis.Redis, stream: str, cutoff_id: str) -> int:
    removed = 0
    while step := int(client.xtrim(stream, minid=cutoff_id, approximate=True, limit=TRIM_STEP)):
        removed += step
    return removed + int(client.xtrim(stream, minid=cutoff_id, approximate=False))


def _id(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]}"


