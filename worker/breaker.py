"""Circuit breaker: stop taking events while processing keeps failing, so they wait in the stream, nothing lost.

Two halves. `CircuitBreaker` is the pure state machine one worker holds (injectable clock). The Redis functions are
operator actions in rq's `suspension.py` style: `tacticalctl breaker reset` calls `request_reset`, every running
worker calls `take_reset_request` between batches and honours it; restarts are counted in Redis so the count
survives the process that restarted.

States and moves (anything else raises `IllegalBreakerTransition`):

    CLOSED    --N consecutive failures / force_open / restart limit-->  OPEN
    OPEN      --reset_timeout_s passed, on allow()------------------->  HALF_OPEN
    OPEN      --reset(actor)----------------------------------------->  CLOSED
    HALF_OPEN --trial succeeded / reset(actor)----------------------->  CLOSED
    HALF_OPEN --trial failed / force_open---------------------------->  OPEN
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any

import redis

from worker.alerts import audit, require_audit_trail
from worker.connection import refused_as_wrong_type
from worker.names import (
    BREAKER_RESET_REQUEST_KEY,
    BREAKER_RESET_SEQUENCE_KEY,
    BREAKER_RESTARTS_KEY,
    BREAKER_STATE_PREFIX,
    breaker_reset_honoured_key,
    breaker_state_key,
)
from worker.redis_text import as_text
from worker.settings import WorkerSettings

Clock = Callable[[], float]

# The numbers live in WorkerSettings (flags > TACTICAL_* > defaults); read its defaults, never restate them.
_SETTING_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(WorkerSettings)}


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


BREAKER_TRANSITIONS: Mapping[BreakerState, frozenset[BreakerState]] = {
    BreakerState.CLOSED: frozenset({BreakerState.OPEN}),
    BreakerState.OPEN: frozenset({BreakerState.HALF_OPEN, BreakerState.CLOSED}),
    BreakerState.HALF_OPEN: frozenset({BreakerState.CLOSED, BreakerState.OPEN}),
}


class IllegalBreakerTransition(RuntimeError):
    """A move the transition table does not allow: a bug in the caller, never an operational condition."""


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_threshold: int = _SETTING_DEFAULTS["breaker_failure_threshold"]
    reset_timeout_s: float = _SETTING_DEFAULTS["breaker_reset_timeout_s"]
    restart_limit: int = _SETTING_DEFAULTS["breaker_restart_limit"]
    restart_window_s: float = _SETTING_DEFAULTS["breaker_restart_window_s"]
    history: int = 50

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError(f"breaker failure_threshold must be at least 1, got {self.failure_threshold}")
        if self.reset_timeout_s <= 0:
            raise ValueError(f"breaker reset_timeout_s must be positive, got {self.reset_timeout_s}")

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> BreakerConfig:
        return cls(
            failure_threshold=settings.breaker_failure_threshold,
            reset_timeout_s=settings.breaker_reset_timeout_s,
            restart_limit=settings.breaker_restart_limit,
            restart_window_s=settings.breaker_restart_window_s,
        )


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    at: float
    from_state: BreakerState
    to_state: BreakerState
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "from": self.from_state.name, "to": self.to_state.name, "reason": self.reason}


class CircuitBreaker:
    """One worker's breaker. Every `allow()` that returned True must be answered by `record_success()` (a batch
    decided), `record_failure()`, or `record_idle()` (nothing to decide: an empty read proves nothing either way, so
    it neither clears the failures counted nor ends a half-open trial). A half-open trial that is never answered is
    taken as lost after `reset_timeout_s`, and another trial is let through."""

    def __init__(self, config: BreakerConfig | None = None, *, clock: Clock = time.time) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._opened_at: float | None = None
        self._last_reason: str | None = None
        self._trial_started_at: float | None = None
        self._transitions: deque[BreakerTransition] = deque(maxlen=self.config.history)
        self._transitions_total = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    @property
    def opened_at(self) -> float | None:
        return self._opened_at

    @property
    def last_reason(self) -> str | None:
        """Why it is open, or the last of the failures it is counting; None once those are over (a success, a
        close, a reset): a closed breaker that shows an old reason reads as one still in trouble. The history keeps
        every reason (`recent_transitions`, the alert stream)."""
        return self._last_reason

    @property
    def recent_transitions(self) -> list[BreakerTransition]:
        return list(self._transitions)

    @property
    def transitions_total(self) -> int:
        return self._transitions_total

    def transitions_since(self, seen: int) -> tuple[int, list[BreakerTransition]]:
        """(lost, kept) for a publisher that has handled the first `seen` transitions of all time: how many of the
        later ones are no longer kept (only the last `config.history` are), and those still kept, oldest first."""
        owed = self._transitions_total - seen
        kept = min(owed, len(self._transitions))
        return owed - kept, list(self._transitions)[len(self._transitions) - kept:] if kept > 0 else []

    def allow(self) -> bool:
        now = self._clock()
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            assert self._opened_at is not None
            if now - self._opened_at < self.config.reset_timeout_s:
                return False
            self._move(BreakerState.HALF_OPEN, f"open for {self.config.reset_timeout_s:g} s: trying one", now)
            self._trial_started_at = now
            return True
        trial_lost = self._trial_started_at is not None and now - self._trial_started_at >= self.config.reset_timeout_s
        if self._trial_started_at is None or trial_lost:
            self._trial_started_at = now
            return True
        return False

    def record_success(self) -> None:
        self._consecutive_failures = 0
        if self._state is BreakerState.CLOSED:
            # Open, a success is an earlier batch's commit settling: the reason it is open still holds.
            self._last_reason = None
        if self._state is BreakerState.HALF_OPEN:
            self._close("trial succeeded", self._clock())

    def record_idle(self) -> None:
        """An allowed turn found no event. Half-open, the trial is still to come: the next `allow()` lets one through
        again, and only an event decided (or failing) closes (or opens) the breaker."""
        if self._state is BreakerState.HALF_OPEN:
            self._trial_started_at = None

    def record_failure(self, reason: str) -> None:
        now = self._clock()
        self._consecutive_failures += 1
        self._last_reason = reason
        if self._state is BreakerState.HALF_OPEN:
            self._open(f"trial failed: {reason}", now)
        elif self._state is BreakerState.CLOSED and self._consecutive_failures >= self.config.failure_threshold:
            self._open(f"{self._consecutive_failures} consecutive failures, last: {reason}", now)

    def force_open(self, reason: str) -> None:
        """Open now (or, if already open, restart the timeout) with `reason`."""
        now = self._clock()
        self._last_reason = reason
        if self._state is BreakerState.OPEN:
            self._opened_at = now
        else:
            self._open(reason, now)

    def record_restarts(self, restarts: int) -> bool:
        """Open the breaker when `restarts` (within the configured window) exceed the limit; True if it did."""
        if restarts <= self.config.restart_limit:
            return False
        self.force_open(
            f"{restarts} worker restarts within {self.config.restart_window_s:g} s "
            f"exceed the limit of {self.config.restart_limit}"
        )
        return True

    def reset(self, actor: str) -> None:
        """Close the breaker on an operator's word; a closed breaker just forgets its failures."""
        self._consecutive_failures = 0
        self._last_reason = None
        if self._state is not BreakerState.CLOSED:
            self._close(f"reset by {actor}", self._clock())

    def _open(self, reason: str, now: float) -> None:
        self._move(BreakerState.OPEN, reason, now)
        self._opened_at = now
        self._last_reason = reason
        self._trial_started_at = None

    def _close(self, reason: str, now: float) -> None:
        self._move(BreakerState.CLOSED, reason, now)
        self._opened_at = None
        self._last_reason = None
        self._trial_started_at = None

    def _move(self, to_state: BreakerState, reason: str, now: float) -> None:
        if to_state not in BREAKER_TRANSITIONS[self._state]:
            raise IllegalBreakerTransition(
                f"circuit breaker cannot go from {self._state.name} to {to_state.name} ({reason})"
            )
        self._transitions.append(BreakerTransition(now, self._state, to_state, reason))
        self._transitions_total += 1
        self._state = to_state


# ---- Redis side: the operator's actions and what the worker publishes ----------------------------------------

RESET_REQUEST_TTL_S = 60  # a request nobody picked up within a minute is history, not an instruction


def record_restart(
    client: redis.Redis,
    consumer: str,
    now: float,
    *,
    window_s: float = _SETTING_DEFAULTS["breaker_restart_window_s"],
) -> int:
    """Record that `consumer` (re)started at `now`; return the restarts within the window, this one included."""
    with client.pipeline(transaction=True) as pipe:
        pipe.zadd(BREAKER_RESTARTS_KEY, {f"{consumer}@{now:.6f}": now})
        pipe.zremrangebyscore(BREAKER_RESTARTS_KEY, "-inf", now - window_s)
        pipe.zcount(BREAKER_RESTARTS_KEY, f"({now - window_s}", "+inf")
        pipe.expire(BREAKER_RESTARTS_KEY, max(1, int(window_s) + 1))
        _added, _pruned, count, _expire = pipe.execute()
    return int(count)


def restart_count(client: redis.Redis, window_s: float, now: float) -> int:
    """Restarts within the last `window_s` seconds, across all workers (a read: nothing is pruned)."""
    return int(client.zcount(BREAKER_RESTARTS_KEY, f"({now - window_s}", "+inf"))


# One atomic step, so concurrent requests keep their ids in order and the hash always names the latest.
_REQUEST_RESET_SCRIPT = """
local request_id = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], 'id', request_id, 'actor', ARGV[1], 'requested_at', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
return request_id
"""


def request_reset(client: redis.Redis, actor: str, *, now: float | None = None) -> int:
    """Ask every running worker to close its breaker, clear the restart counter, and audit it; return the
    request id. Workers pick the request up between batches (within `block_ms`, well under a second)."""
    now = time.time() if now is None else now
    require_audit_trail(client)
    request_id = int(
        client.eval(
            _REQUEST_RESET_SCRIPT,
            3,
            BREAKER_RESET_SEQUENCE_KEY,
            BREAKER_RESET_REQUEST_KEY,
            BREAKER_RESTARTS_KEY,
            actor,
            repr(now),
            RESET_REQUEST_TTL_S,
        )
    )
    audit(
        client,
        actor=actor,
        action="breaker_reset",
        detail="circuit breaker reset requested; restart counter cleared",
        request_id=str(request_id),
    )
    return request_id


# Compare-and-set in one step, so a request is honoured exactly once per consumer even if it polls twice at once.
_TAKE_RESET_SCRIPT = """
local request_id = redis.call('HGET', KEYS[1], 'id')
if not request_id then return false end
local honoured = redis.call('GET', KEYS[2])
if honoured and tonumber(honoured) >= tonumber(request_id) then return false end
redis.call('SET', KEYS[2], request_id, 'EX', ARGV[1])
return redis.call('HGET', KEYS[1], 'actor')
"""


def take_reset_request(client: redis.Redis, consumer: str) -> str | None:
    """The worker's side: the actor of a reset request this consumer has not honoured yet, else None.

    Each consumer remembers the last request id it honoured, so one request resets every worker once."""
    actor = client.eval(
        _TAKE_RESET_SCRIPT,
        2,
        BREAKER_RESET_REQUEST_KEY,
        breaker_reset_honoured_key(consumer),
        RESET_REQUEST_TTL_S,
    )
    if actor is None:
        return None
    return actor.decode() if isinstance(actor, bytes) else str(actor)


# Every request made so far counts as honoured: they were for the workers running then.
_SKIP_EARLIER_RESETS_SCRIPT = """
local request_id = tonumber(redis.call('GET', KEYS[1]) or '0')
local honoured = tonumber(redis.call('GET', KEYS[2]) or '0')
if request_id > honoured then redis.call('SET', KEYS[2], request_id, 'EX', ARGV[1]) end
return request_id
"""


def skip_earlier_reset_requests(client: redis.Redis, consumer: str) -> None:
    """At a worker's start: a reset asked for before it is not for it. A request lives a minute, and a worker that
    crash-looped into an open breaker within that minute closed it again at once, on an operator's word given
    before the breaker opened."""
    client.eval(_SKIP_EARLIER_RESETS_SCRIPT, 2, BREAKER_RESET_SEQUENCE_KEY, breaker_reset_honoured_key(consumer),
                RESET_REQUEST_TTL_S)


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """A worker's breaker as it last published it."""

    consumer: str
    state: BreakerState
    consecutive_failures: int
    opened_at: float | None
    last_reason: str | None
    updated_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "consumer": self.consumer,
            "state": int(self.state),
            "state_name": self.state.name.lower(),
            "consecutive_failures": self.consecutive_failures,
            "opened_at": self.opened_at,
            "last_reason": self.last_reason,
            "updated_at": self.updated_at,
        }


def publish_breaker_state(
    client: redis.Redis, consumer: str, breaker: CircuitBreaker, *, now: float | None = None, ttl_s: int = 60
) -> None:
    """Write this worker's breaker to Redis so the CLI can read it even when HTTP is unreachable.

    The hash expires after `ttl_s`: publish at least every `ttl_s / 2` (with the heartbeat), so a dead
    worker's breaker disappears instead of looking current."""
    now = time.time() if now is None else now
    key = breaker_state_key(consumer)
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(
            key,
            mapping={
                "state": int(breaker.state),
                "consecutive_failures": breaker.consecutive_failures,
                "opened_at": "" if breaker.opened_at is None else repr(breaker.opened_at),
                "last_reason": breaker.last_reason or "",
                "updated_at": repr(now),
            },
        )
        pipe.expire(key, ttl_s)
        pipe.execute()


def read_breaker_states(client: redis.Redis) -> dict[str, BreakerStatus]:
    """Every live worker's published breaker, by consumer name."""
    keys = sorted(as_text(key) for key in client.scan_iter(match=BREAKER_STATE_PREFIX + "*", count=100))
    if not keys:
        return {}
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        hashes = pipe.execute(raise_on_error=False)  # a key of another type is one refused reply, not a failure
    states: dict[str, BreakerStatus] = {}
    for key, raw in zip(keys, hashes, strict=True):
        if refused_as_wrong_type(raw) or not raw:
            continue  # not a hash (no worker wrote it), or expired between SCAN and HGETALL
        values = {as_text(k): as_text(v) for k, v in raw.items()}
        consumer = key[len(BREAKER_STATE_PREFIX) :]
        try:
            states[consumer] = BreakerStatus(
                consumer=consumer,
                state=BreakerState(int(values["state"])),
                consecutive_failures=int(values.get("consecutive_failures") or 0),
                opened_at=float(values["opened_at"]) if values.get("opened_at") else None,
                last_reason=values.get("last_reason") or None,
                updated_at=float(values.get("updated_at") or 0.0),
            )
        except (KeyError, ValueError):
            # Not what a worker writes (something else wrote the key): left out as if expired. A live worker
            # rewrites its own with every heartbeat, and its HTTP view still says what its breaker is.
            continue
    return states
