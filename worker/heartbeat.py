"""Liveness in Redis: each worker refreshes `tactical:heartbeat:{consumer}` more often than it expires.

The value is one JSON string written with `SET … PX` (value and TTL in one atomic command). The TTL is 2.5×
the refresh interval, so one late beat is tolerated and two are not. A clean shutdown deletes the key.

Each beat is also kept for a day under `tactical:lastbeat:{consumer}`: a worker that hung, was killed or stopped on an
error leaves no live heartbeat, and the operator looking for it needs its host and PID (`tacticalctl triage
worker-down` names them). A clean shutdown deletes that too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import redis

from worker.connection import REDIS_REFUSING_WRITES
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
    record = _write(client, consumer, interval_s=interval_s, info=info, now=now)
    assert record is not None  # written unconditionally
    return record


def _write(
    client: redis.Redis,
    consumer: str,
    *,
    interval_s: float,
    info: dict[str, Any],
    now: Callable[[], float] = time.time,
    only_if_free: bool = False,
) -> dict[str, Any] | None:
    """The heartbeat and the last beat kept; with `only_if_free`, only if no heartbeat is there (None if one is)."""
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
    if only_if_free and not client.set(heartbeat_key(consumer), text, px=ttl_ms, nx=True):
        return None
    with client.pipeline(transaction=False) as pipe:
        if not only_if_free:
            pipe.set(heartbeat_key(consumer), text, px=ttl_ms)
        pipe.set(last_beat_key(consumer), text, ex=LAST_BEAT_KEEP_S)
        pipe.execute()
    return record


class ConsumerNameInUse(RuntimeError):
    """Another live worker beats under this consumer name: two workers sharing one name would read each other's
    pending entries as their own, show as one in every view, and one's clean stop would delete the other's
    heartbeat."""


def claim_consumer_name(
    client: redis.Redis,
    consumer: str,
    *,
    interval_s: float,
    info: Callable[[], dict[str, Any]],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    stopping: Callable[[], bool] = lambda: False,
) -> bool:
    """Write this worker's first heartbeat only if no other worker's is there (SET NX: two workers starting at once
    cannot both take the name). A heartbeat of another process is watched until it expires — a worker killed or hung
    a moment ago, whose name this one takes over — or is refreshed: then its worker is alive and ConsumerNameInUse is
    raised. A live worker refreshes well inside its TTL, so watching for that TTL tells the two apart; a heartbeat of
    this very host and PID is this process's earlier life (a container's PID 1 restarted) and is taken over at once.
    True once the name is this worker's; False if `stopping` ended the wait first."""
    key = heartbeat_key(consumer)
    while not stopping():
        try:
            if _write(client, consumer, interval_s=interval_s, info=info(), only_if_free=True) is not None:
                return True
            writes_refused = False
        except REDIS_REFUSING_WRITES:
            # Out of memory, or a replica: the worker starts all the same and its loop beats once writes are taken.
            # The name is still checked by reading: only two workers starting at this very moment could share it.
            writes_refused = True
        raw = client.get(key)
        if raw is None:
            if writes_refused:
                return True
            continue  # expired since the SET NX: try it again
        ttl_ms = client.pttl(key)
        if ttl_ms == -2:
            continue  # expired between the two reads
        held = _parse(consumer, raw)
        if ttl_ms == -1:  # no expiry: no worker wrote it (they all set one), and waiting would not free it
            raise ConsumerNameInUse(f"{as_text(key)} exists without an expiry, so it is no worker's heartbeat and "
                                    "will never lapse: delete it (DEL) or give this worker another TACTICAL_CONSUMER")
        if held.get("host") == socket.gethostname() and held.get("pid") == os.getpid():
            with contextlib.suppress(*REDIS_REFUSING_WRITES):  # the loop beats once writes are taken
                write_heartbeat(client, consumer, interval_s=interval_s, info=info())
            return True
        log.warning("consumer name %s has a heartbeat of %s (pid %s, last beat %s): waiting up to %.1fs for it to "
                    "expire (a worker gone a moment ago) or be refreshed (a live worker: this one then exits)",
                    consumer, held.get("host"), held.get("pid"), held.get("last_beat"), max(ttl_ms, 0) / 1e3)
        deadline = clock() + max(ttl_ms, 0) / 1e3 + 0.5
        while clock() < deadline and not stopping():
            sleep(min(0.1, max(deadline - clock(), 0.0)))
            now_raw = client.get(key)
            if now_raw is None:
                break
            if now_raw != raw:
                beat = _parse(consumer, now_raw)
                raise ConsumerNameInUse(
                    f"consumer name {consumer!r} is in use by a live worker on {beat.get('host')} (pid "
                    f"{beat.get('pid')}, heartbeat refreshed at {beat.get('last_beat')}): give each worker its own "
                    "TACTICAL_CONSUMER (the default, host:pid, is unique)")
        # Expired, or its TTL passed unrefreshed: the name is tried again (SET NX decides between starters).
    return False


def delete_heartbeat(client: redis.Redis, consumer: str, *, keep_last_beat: bool = False) -> bool:
    """Remove the heartbeat and the last beat kept (clean shutdown); True if there was a heartbeat. `keep_last_beat`:
    a worker stopping on an error keeps its last beat, by which `tacticalctl triage worker-down` names it."""
    with client.pipeline(transaction=False) as pipe:
        pipe.delete(heartbeat_key(consumer))
        if not keep_last_beat:
            pipe.delete(last_beat_key(consumer))
        live = pipe.execute()[0]
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

    def claim_name(self, info: Callable[[], dict[str, Any]], *, stopping: Callable[[], bool] = lambda: False) -> bool:
        """The first beat, taken only if no other live worker beats under this name (`claim_consumer_name`)."""
        # The loop's first turn beats again (its first write: under a Redis refusing writes, it is refused there).
        return claim_consumer_name(self.client, self.consumer, interval_s=self.interval_s, info=info,
                                   stopping=stopping)

    def stop(self, *, keep_last_beat: bool = False) -> bool:
        self._next_beat = float("inf")
        return delete_heartbeat(self.client, self.consumer, keep_last_beat=keep_last_beat)


__all__ = [
    "TTL_FACTOR",
    "ConsumerNameInUse",
    "Heartbeat",
    "claim_consumer_name",
    "delete_heartbeat",
    "heartbeat_ttl_ms",
    "is_alive",
    "last_beats_of_gone_workers",
    "live_consumers",
    "write_heartbeat",
]
