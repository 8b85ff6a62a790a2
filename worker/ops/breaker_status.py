"""The circuit breaker as the operator sees it: every worker's published state, the HTTP view, the restart count,
a reset that reports its audit entry and who honoured it, and the breaker's history from `tactical_alerts`.

Workers publish their breaker to Redis (`worker.breaker.publish_breaker_state`), so a dead or hung HTTP endpoint
does not hide an open breaker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import redis

from worker.alerts import Alert, recent_alerts
from worker.breaker import BreakerState, BreakerStatus, read_breaker_states, request_reset, restart_count
from worker.heartbeat import live_consumers
from worker.names import breaker_reset_honoured_key
from worker.settings import WorkerSettings

_SETTING_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(WorkerSettings)}
BREAKER_ALERT_PREFIX = "breaker_"

# Worst first: an open breaker anywhere means events are not being taken there.
_SEVERITY = {BreakerState.OPEN: 2, BreakerState.HALF_OPEN: 1, BreakerState.CLOSED: 0}


def worst_breaker_state(states: Iterable[BreakerState]) -> BreakerState | None:
    """OPEN beats HALF_OPEN beats CLOSED; None when there is no state at all."""
    return max(states, key=_SEVERITY.__getitem__, default=None)


def breaker_state_from_http(circuit_breaker: Mapping[str, Any]) -> BreakerState | None:
    """`/health/state`'s `circuit_breaker` section → its state (by code, else by name); None if unreadable."""
    code = circuit_breaker.get("state_code")
    if isinstance(code, int) and not isinstance(code, bool) and code in {s.value for s in BreakerState}:
        return BreakerState(code)
    name = str(circuit_breaker.get("state", "")).upper().replace("-", "_")
    return BreakerState.__members__.get(name)


@dataclass(frozen=True, slots=True)
class BreakerOverview:
    published: Mapping[str, BreakerStatus]  # by consumer
    http: Mapping[str, Any] | None  # `/health/state`'s circuit_breaker, when the worker answered
    http_error: str | None
    restarts: int
    restart_limit: int
    restart_window_s: float

    @property
    def state(self) -> BreakerState | None:
        states = [s.state for s in self.published.values()]
        if self.http is not None and (http_state := breaker_state_from_http(self.http)) is not None:
            states.append(http_state)
        return worst_breaker_state(states)

    @property
    def over_restart_limit(self) -> bool:
        """The worker's own rule (`CircuitBreaker.record_restarts`): more starts in the window than the limit open
        the breaker; as many as the limit do not."""
        return self.restarts > self.restart_limit

    @property
    def next_start_opens(self) -> bool:
        """As many starts in the window as the limit: one more worker start (a crash restarted, a replica added)
        opens the breaker, until the oldest start leaves the window or `breaker reset` clears the count. Not for a
        limit of 0: that is a hold an operator set on purpose (every start opens the breaker), not a warning."""
        return 0 < self.restart_limit <= self.restarts

    def as_dict(self) -> dict[str, Any]:
        state = self.state
        return {
            "state": None if state is None else state.name.lower(),
            "state_code": None if state is None else int(state),
            "workers": {name: status.as_dict() for name, status in self.published.items()},
            "http": None if self.http is None else dict(self.http),
            "http_error": self.http_error,
            "restarts": self.restarts,
            "restart_limit": self.restart_limit,
            "restart_window_s": self.restart_window_s,
            "next_start_opens": self.next_start_opens,
        }


def read_breaker_overview(
    client: redis.Redis,
    *,
    http: Mapping[str, Any] | None,
    http_error: str | None = None,
    settings: WorkerSettings | None = None,
    now: float | None = None,
) -> BreakerOverview:
    """Published states of live workers (a heartbeat within its TTL) and the restart count from Redis, with the HTTP
    view the caller fetched (or its error).

    The restart limit and window come from the worker's own report when it gave one, else from the settings."""
    limit = _SETTING_DEFAULTS["breaker_restart_limit"] if settings is None else settings.breaker_restart_limit
    window = _SETTING_DEFAULTS["breaker_restart_window_s"] if settings is None else settings.breaker_restart_window_s
    if http is not None:
        reported = http.get("restart_limit")
        limit = int(reported) if reported is not None else limit
        window = float(http.get("restart_window_s") or window)
    now = time.time() if now is None else now
    # A published state outlives its worker by up to a minute (its TTL); a heartbeat by a few seconds. A killed
    # worker's last "closed" must not stand in for a running one.
    live = live_consumers(client)
    return BreakerOverview(
        published={name: status for name, status in read_breaker_states(client).items() if name in live},
        http=http,
        http_error=http_error,
        restarts=restart_count(client, window, now),
        restart_limit=limit,
        restart_window_s=window,
    )


@dataclass(frozen=True, slots=True)
class ResetReceipt:
    request_id: int
    audit_id: str | None
    honoured_by: tuple[str, ...]
    waiting_on: tuple[str, ...]  # live workers that had not honoured it when we stopped waiting

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "audit_id": self.audit_id,
            "honoured_by": list(self.honoured_by),
            "waiting_on": list(self.waiting_on),
        }


def _audit_entry_of(client: redis.Redis, request_id: int) -> str | None:
    for alert in reversed(recent_alerts(client, count=100)):
        if alert.kind == "breaker_reset" and alert.fields.get("request_id") == str(request_id):
            return alert.id
    return None


def honoured_by(client: redis.Redis, request_id: int, consumers: Sequence[str]) -> tuple[str, ...]:
    """The consumers that have taken reset request `request_id` (or a later one)."""
    if not consumers:
        return ()
    values = client.mget([breaker_reset_honoured_key(c) for c in consumers])
    return tuple(c for c, v in zip(consumers, values, strict=True) if v is not None and int(v) >= request_id)


def reset_breaker(
    client: redis.Redis,
    *,
    actor: str,
    wait_s: float = 0.0,
    poll_s: float = 0.1,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ResetReceipt:
    """Request a reset (audited), then wait up to `wait_s` for every live worker to honour it."""
    consumers = tuple(live_consumers(client))
    request_id = request_reset(client, actor)
    audit_id = _audit_entry_of(client, request_id)
    deadline = clock() + wait_s
    done = honoured_by(client, request_id, consumers)
    while len(done) < len(consumers) and clock() < deadline:
        sleep(poll_s)
        done = honoured_by(client, request_id, consumers)
    return ResetReceipt(request_id, audit_id, done, tuple(c for c in consumers if c not in done))


def is_breaker_alert(alert: Alert) -> bool:
    return alert.kind.startswith(BREAKER_ALERT_PREFIX)


def breaker_history(client: redis.Redis, *, count: int, scan: int = 2000) -> list[Alert]:
    """The latest `count` breaker alerts and resets (among the last `scan` alerts), oldest first."""
    return [a for a in recent_alerts(client, count=scan) if is_breaker_alert(a)][-count:]
