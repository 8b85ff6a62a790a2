"""Liveness in Redis: each worker refreshes `tactical:heartbeat:{consumer}` more often than it expires.

The value is one JSON string written with `SET … PX` (value and TTL in one atomic command). The TTL is 2.5×
the refresh interval, so one late beat is tolerated and two are not. A clean shutdown deletes the key.

Each beat is also kept for a day under `tactical:lastbeat:{consumer}`: a worker that hung or was killed leaves no live
heartbeat, and the operator looking for it needs its host and PID (`tacticalctl triage worker-down` names them). A
clean shutdown deletes that too.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import redis

from worker.names import HEARTBEAT_PREFIX, LAST_BEAT_PREFIX, heartbeat_key, last_beat_key
from worker.redis_text import as_text

log = logging.getLogger(__name__)

TTL_FACTOR = 2.5
LAST_BEAT_KEEP_S = 86_400
_MGET_CHUNK = 200


def heartbeat_ttl_ms(interval_s: float) -> int:
    if not interval_s > 0:
        raise ValueError(f"heartbeat interval must be positive, got {interval_s}")
    return max(1, round(interval_s * TTL_FACTOR * 1000))


def write_heartbeat(
    client: redis.Redis,
    consumer: str,
    *,
    interval_s: float,
    info: dict[str, Any],
    now: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Write this consumer's heartbeat; `info` adds (or overrides) fields such as started_at, model_version,
    state. Returns what was written."""
    ttl_ms = heartbeat_ttl_ms(interval_s)
    beat = now()
    record: dict[str, Any] = {
        "consumer": consumer,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "interval_s": interval_s,
        "ttl_ms": ttl_ms,
        **info,
        "last_beat": datetime.fromtimestamp(beat, UTC).isoformat(timespec="milliseconds"),
        "last_beat_unix": beat,
    }
    text = json.dumps(record, default=str)
    with client.pipeline(transaction=False) as pipe:
        pipe.set(heartbeat_key(consumer), text, px=ttl_ms)
        pipe.set(last_beat_key(consumer), text, ex=LAST_BEAT_KEEP_S)
        pipe.execute()
    return record


def delete_heartbeat(client: redis.Redis, consumer: str) -> bool:
    """Remove the heartbeat and the last beat kept (clean shutdown); True if there was a heartbeat."""
    with client.pipeline(transaction=False) as pipe:
        pipe.delete(heartbeat_key(consumer))
        pipe.delete(last_beat_key(consumer))
        live, _ = pipe.execute()
    return bool(live)


def is_alive(client: redis.Redis, consumer: str) -> bool:
    return bool(client.exists(heartbeat_key(consumer)))


def _parse(consumer: str, raw: bytes | str) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        log.warning("heartbeat of %s is not a JSON object: %.200r", consumer, raw)
        return {"consumer": consumer, "error": "unreadable heartbeat", "raw": as_text(raw)[:200]}
    return record


def live_consumers(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every consumer with an unexpired heartbeat, by name. SCAN, never KEYS: safe on a busy server."""
    return _records(client, HEARTBEAT_PREFIX)


def last_beats_of_gone_workers(client: redis.Redis, live: Mapping[str, object]) -> dict[str, dict[str, Any]]:
    """The last heartbeat (of the last day) of each consumer not in `live` (`live_consumers`, read by the caller)
    whose live heartbeat expired without a clean shutdown: hung, stopped or killed. Newest first."""
    gone = {name: beat for name, beat in _records(client, LAST_BEAT_PREFIX).items() if name not in live}
    return dict(sorted(gone.items(), key=lambda item: -float(item[1].get("last_beat_unix") or 0)))


def _records(client: redis.Redis, prefix: str) -> dict[str, dict[str, Any]]:
    keys = list(client.scan_iter(match=prefix + "*", count=500))
    consumers: dict[str, dict[str, Any]] = {}
    for start in range(0, len(keys), _MGET_CHUNK):
        chunk = keys[start : start + _MGET_CHUNK]
        for key, raw in zip(chunk, client.mget(chunk), strict=True):
            if raw is None:  # expired between SCAN and MGET
                continue
            consumer = as_text(key)[len(prefix) :]
            consumers[consumer] = _parse(consumer, raw)
    return dict(sorted(consumers.items()))


class Heartbeat:
    """Beats from the worker's own loop when due: a beat proves the loop runs, not just that a thread does."""

    def __init__(
        self,
        client: redis.Redis,
        consumer: str,
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        heartbeat_ttl_ms(interval_s)
        self.client = client
        self.consumer = consumer
        self.interval_s = interval_s
        self._clock = clock
        self._next_beat = float("-inf")

    def beat_if_due(self, info: Callable[[], dict[str, Any]]) -> bool:
        """Write the heartbeat if an interval has passed since the last one; True if it wrote. `info` is called only
        then: the loop asks every batch, and building it (hostname, state) costs more than the check."""
        now = self._clock()
        if now < self._next_beat:
            return False
        write_heartbeat(self.client, self.consumer, interval_s=self.interval_s, info=info())
        self._next_beat = now + self.interval_s
        return True

    def stop(self) -> bool:
        self._next_beat = float("inf")
        return delete_heartbeat(self.client, self.consumer)


__all__ = [
    "TTL_FACTOR",
    "Heartbeat",
    "delete_heartbeat",
    "heartbeat_ttl_ms",
    "is_alive",
    "last_beats_of_gone_workers",
    "live_consumers",
    "write_heartbeat",
]
