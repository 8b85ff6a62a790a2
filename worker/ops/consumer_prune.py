"""Consumer names left in the worker's group by workers that died: each crash or kill leaves one behind (a clean
exit removes its own), and `stream info` lists them for ever. Pruned here: a consumer with nothing pending, no
live heartbeat and idle at least a while.

XGROUP DELCONSUMER drops the consumer's pending entries with it, and they would never be delivered again. So each
name is checked and deleted in one script (`delete_consumers_without_pending`, which a worker's clean exit uses too):
nothing pending at that instant, or it stays. A live worker's name
deleted by mistake would cost nothing (its next read creates it again); the heartbeat and idle checks keep the
listing from flapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from worker.alerts import audit_done, require_audit_trail
from worker.delivery import DEFAULT_STREAMS, StreamNames, delete_consumers_without_pending
from worker.ops.stream_info import ConsumerInfo, read_stream_overview

DEFAULT_MIN_IDLE_S = 600.0

@dataclass(frozen=True, slots=True)
class ConsumerPrune:
    planned: tuple[ConsumerInfo, ...]
    removed: tuple[str, ...]
    applied: bool
    min_idle_s: float
    audit_id: str | None = None
    audit_error: str | None = None  # the names were removed, their audit entry refused (Redis at maxmemory)

    @property
    def kept(self) -> tuple[str, ...]:
        """Planned names left in place: an entry became pending on them before the script ran."""
        removed = set(self.removed)
        return tuple(c.name for c in self.planned if c.name not in removed) if self.applied else ()

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "min_idle_s": self.min_idle_s,
                "planned": [c.as_dict() for c in self.planned], "removed": list(self.removed),
                "audit_id": self.audit_id, "audit_error": self.audit_error}


def prunable_consumers(client: redis.Redis, *, min_idle_s: float = DEFAULT_MIN_IDLE_S,
                       streams: StreamNames = DEFAULT_STREAMS) -> list[ConsumerInfo]:
    """The group's consumers with nothing pending, no live heartbeat, idle at least `min_idle_s`. StreamMissing
    when the stream does not exist."""
    overview = read_stream_overview(client, streams.input)
    group = next((g for g in overview.groups if g.name == streams.group), None)
    if group is None:
        return []
    return [c for c in group.consumers if c.pending == 0 and not c.alive and c.idle_ms >= min_idle_s * 1000]


def prune_consumers(client: redis.Redis, *, actor: str, apply: bool, min_idle_s: float = DEFAULT_MIN_IDLE_S,
                    streams: StreamNames = DEFAULT_STREAMS) -> ConsumerPrune:
    """Delete the prunable consumers (each only if still nothing is pending on it), audited; nothing unless
    `apply`."""
    planned = tuple(prunable_consumers(client, min_idle_s=min_idle_s, streams=streams))
    if not apply or not planned:
        return ConsumerPrune(planned, (), apply, min_idle_s)
    require_audit_trail(client)
    removed = delete_consumers_without_pending(client, [c.name for c in planned], streams)
    audit_id = audit_error = None
    if removed:
        audit_id, audit_error = audit_done(
            client, actor=actor, action="consumer_prune",
            detail=f"removed {len(removed)} consumers with nothing pending from {streams.group}: "
                   + ", ".join(removed[:50]) + (" …" if len(removed) > 50 else ""),
            stream=streams.input, group=streams.group, count=str(len(removed)),
        )
    return ConsumerPrune(planned, removed, True, min_idle_s, audit_id, audit_error)
