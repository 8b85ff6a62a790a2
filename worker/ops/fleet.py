"""The live workers of a scaled stack, and where to read them: each heartbeat names the HTTP address its worker
bound, so a command pointed at one worker (`--worker-url`) can read the others at theirs, or every one
(`read_fleet_health`, `read_fleet_state`). Each counts only what it did itself: a figure for the stack is a sum over
every one of them (`read_fleet_metrics`)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import redis
from prometheus_client.samples import Sample

from worker.health import CheckStatus
from worker.heartbeat import live_consumers
from worker.ops.worker_client import (
    HEALTH_PATH,
    STATE_PATH,
    WorkerClient,
    WorkerUnreachable,
    health_level,
    is_loopback,
)

Families = Mapping[str, list[Sample]]
ValueT = TypeVar("ValueT")
ItemT = TypeVar("ItemT")


STARTING = "its heartbeat names no HTTP endpoint yet: a worker just starting"


@dataclass(frozen=True, slots=True)
class LiveWorker:
    """A worker with an unexpired heartbeat: its consumer name, the host and PID it beats from, its endpoint."""

    name: str
    url: str | None  # None: its heartbeat names no endpoint (yet): a starting worker's first beats come before it
    host: str | None = None
    pid: int | None = None

    def unreachable(self, exc: WorkerUnreachable) -> str:
        """Why it was not read. A worker on another host bound to a loopback address (127.0.0.1:8001 is the default
        outside Docker) names an address that, read from here, is this host's own: only its host can read it."""
        host = urlsplit(self.url).hostname if self.url else None
        if is_loopback(host) and self.host not in (None, socket.gethostname()):
            return (f"{exc} — it runs on {self.host} bound to a loopback address, which only that host can read: "
                    "read it there, or start it with --http-addr 0.0.0.0:<port>")
        return str(exc)


def worker_url_of(beat: Mapping[str, Any], here: str) -> str | None:
    """The URL of a worker's endpoint from its heartbeat's `http` (the address it bound): a wildcard address is the
    worker's host (this machine's loopback when it runs here)."""
    address = beat.get("http")
    if not isinstance(address, str) or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        beat_host = beat.get("host")
        host = "127.0.0.1" if beat_host in (None, here) else str(beat_host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def live_workers(client: redis.Redis) -> list[LiveWorker]:
    """Every live worker, by name, as its heartbeat describes it."""
    here = socket.gethostname()
    workers = []
    for name, beat in sorted(live_consumers(client).items()):
        host, pid = beat.get("host"), beat.get("pid")
        workers.append(LiveWorker(name, worker_url_of(beat, here), host if isinstance(host, str) else None,
                                  pid if isinstance(pid, int) and not isinstance(pid, bool) else None))
    return workers


def other_live_workers(client: redis.Redis, *, measured: str | None, worker_url: str) -> list[LiveWorker]:
    """Every live worker but the one at `worker_url`, by name. That one is left out by the consumer name it answered
    with (`measured`), else by the URL its heartbeat names: it was read, or found unreachable, there already, and is
    neither counted nor waited for twice."""
    return [worker for worker in live_workers(client)
            if worker.name != measured and (worker.url is None or worker.url != worker_url.rstrip("/"))]


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """One live worker's /health, read at the endpoint its heartbeat names, or why it was not read."""

    worker: LiveWorker
    http_status: int | None = None
    answer: Mapping[str, Any] | None = None  # None when not read: `error` says why
    error: str | None = None

    @property
    def starting(self) -> bool:
        """Not read because its heartbeat names no endpoint yet: shown, not judged."""
        return self.answer is None and self.worker.url is None

    @property
    def level(self) -> CheckStatus | None:
        """What its answer means (`health_level`); not read although it names an endpoint: critical — live by its
        heartbeat, yet it does not answer there. None for a worker just starting."""
        if self.answer is not None and self.http_status is not None:
            return health_level(self.http_status, dict(self.answer))
        return None if self.starting else CheckStatus.CRITICAL

    @property
    def state(self) -> str | None:
        state = None if self.answer is None else self.answer.get("state")
        return state if isinstance(state, str) else None

    @property
    def state_code(self) -> int | None:
        code = None if self.answer is None else self.answer.get("state_code")
        return code if isinstance(code, int) and not isinstance(code, bool) else None

    @property
    def model_version(self) -> str | None:
        version = None if self.answer is None else self.answer.get("model_version")
        return version if isinstance(version, str) else None

    def _identity(self) -> dict[str, Any]:
        """Which worker, how it was judged (null: starting) and why it was not read: every fleet answer's keys."""
        level = self.level
        return {"consumer": self.worker.name, "host": self.worker.host, "pid": self.worker.pid, "url": self.worker.url,
                "check": None if level is None else level.value, "error": self.error}

    def as_dict(self) -> dict[str, Any]:
        return {**self._identity(), "http_status": self.http_status, "state": self.state,
                "state_code": self.state_code, "model_version": self.model_version}


@dataclass(frozen=True, slots=True)
class WorkerState(WorkerHealth):
    """One live worker's /health/state document (`read_fleet_state`), judged by its state code as `health state`
    judges one worker's, or why it was not read."""

    def as_dict(self) -> dict[str, Any]:
        return {**self._identity(), "state": None if self.answer is None else dict(self.answer)}


@dataclass(frozen=True, slots=True)
class FleetHealth:
    """Every live worker's /health (or /health/state: `read_fleet_state`), by consumer name."""

    workers: tuple[WorkerHealth, ...]

    @property
    def status(self) -> CheckStatus:
        """The worst of the workers judged. No live worker: critical. Every live one starting (none serves /health
        yet): a warning, as one worker's /health is while it starts."""
        if not self.workers:
            return CheckStatus.CRITICAL
        levels = [worker.level for worker in self.workers if worker.level is not None]
        if not levels:
            return CheckStatus.WARN
        return max(levels, key=lambda level: level.rank)

    def as_dict(self) -> dict[str, Any]:
        return {"workers": [worker.as_dict() for worker in self.workers], "status": self.status.value}


def read_fleet_health(client: redis.Redis, *, timeout_s: float) -> FleetHealth:
    """GET /health of every live worker at the endpoint its heartbeat names, all at once: a worker that does not
    answer costs `timeout_s` once, not once per worker."""
    def read(worker: LiveWorker) -> WorkerHealth:
        return _read_at_heartbeat(worker, WorkerHealth, HEALTH_PATH, lambda at: at.health(), timeout_s)

    return FleetHealth(at_once(read, live_workers(client), "fleet-health"))


def read_fleet_state(client: redis.Redis, *, timeout_s: float) -> FleetHealth:
    """GET /health/state of every live worker, found, read and judged as `read_fleet_health` reads /health: each
    worker's `answer` is its document as served (a WorkerState)."""
    def read(worker: LiveWorker) -> WorkerHealth:
        # /health/state answers 200 or not at all (`WorkerClient.state`): its state code alone judges it.
        return _read_at_heartbeat(worker, WorkerState, STATE_PATH, lambda at: (200, at.state()), timeout_s)

    return FleetHealth(at_once(read, live_workers(client), "fleet-state"))


def at_once(read: Callable[[ItemT], ValueT], items: Sequence[ItemT], name: str) -> tuple[ValueT, ...]:
    """`read` of every item, in threads (16 at most), in the items' order: reads that wait on the network wait
    together. `read` says its own failures in what it returns."""
    if not items:
        return ()
    with ThreadPoolExecutor(max_workers=min(len(items), 16), thread_name_prefix=name) as pool:
        return tuple(pool.map(read, items))


def _read_at_heartbeat(worker: LiveWorker, record: type[WorkerHealth], path: str,
                       get: Callable[[WorkerClient], tuple[int, Mapping[str, Any]]], timeout_s: float) -> WorkerHealth:
    """`get` of the worker at the endpoint its heartbeat names, as a `record`; or why it was not read."""
    if worker.url is None:
        return record(worker, error=STARTING)
    try:
        http_status, answer = get(WorkerClient(worker.url, timeout_s=timeout_s))
    except WorkerUnreachable as exc:
        return record(worker, error=worker.unreachable(exc))
    answered_as = answer.get("consumer")
    if isinstance(answered_as, str) and answered_as != worker.name:
        # A worker elsewhere bound to 127.0.0.1: from here its address is another worker's, whose health is not its.
        return record(worker, error=f"{worker.url}{path} answered as {answered_as}: from here the address its "
                                    "heartbeat names is another worker's — read it where it runs")
    return record(worker, http_status, answer)


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    """One live worker's /metrics, parsed by family, or why it was not read."""

    consumer: str | None  # None: the worker at --worker-url did not answer with its name
    url: str | None  # None: its heartbeat names no HTTP endpoint (yet)
    families: Families | None  # None when not read: `error` says why
    error: str | None = None


def read_fleet_metrics(
    client: redis.Redis, worker_url: str, *, metrics: Callable[[], Families],
    health: Callable[[], tuple[int, Mapping[str, Any]]], timeout_s: float,
) -> tuple[WorkerMetrics, ...]:
    """The /metrics of the worker at `worker_url` (read through `metrics` and, for its name, `health`: the caller's,
    cached or not) and of every other live worker at the endpoint its heartbeat names, that one first. A worker not
    read is in the answer with why."""
    first = _read(None, worker_url.rstrip("/"), metrics)
    if first.families is not None:
        try:
            name = health()[1].get("consumer")
        except WorkerUnreachable:
            name = None
        first = WorkerMetrics(name if isinstance(name, str) else None, first.url, first.families)

    def read_other(other: LiveWorker) -> WorkerMetrics:
        if other.url is None:
            return WorkerMetrics(other.name, None, None, STARTING)
        return _read(other.name, other.url, WorkerClient(other.url, timeout_s=timeout_s).metrics, other)

    # All at once, as `read_fleet_health` reads: a worker that does not answer costs `timeout_s` once, not once each.
    others = other_live_workers(client, measured=first.consumer, worker_url=worker_url)
    return (first, *at_once(read_other, others, "fleet-metrics"))


def _read(consumer: str | None, url: str, metrics: Callable[[], Families],
          worker: LiveWorker | None = None) -> WorkerMetrics:
    try:
        return WorkerMetrics(consumer, url, metrics())
    except WorkerUnreachable as exc:
        return WorkerMetrics(consumer, url, None, worker.unreachable(exc) if worker else str(exc))


@dataclass(frozen=True, slots=True)
class WorkerCounter(Generic[ValueT]):
    """One live worker's counter (since its start) as its /metrics carries it, or why it is not in the sum."""

    consumer: str | None  # None: the worker at --worker-url did not answer with its name
    url: str | None  # None: its heartbeat names no HTTP endpoint (yet)
    value: ValueT | None  # None when not read: `error` says why
    error: str | None = None

    @classmethod
    def of(cls, worker: WorkerMetrics, counter: str,
           read: Callable[[Families], ValueT | None]) -> WorkerCounter[ValueT]:
        """`read` of the worker's families; a worker not read, or whose /metrics lacks `counter`, with why."""
        if worker.families is None:
            return cls(worker.consumer, worker.url, None, worker.error)
        value = read(worker.families)
        if value is None:
            return cls(worker.consumer, worker.url, None, f"its /metrics carries no {counter}")
        return cls(worker.consumer, worker.url, value)

    @property
    def name(self) -> str:
        return self.consumer or self.url or "?"

    @property
    def missing(self) -> bool:
        """Not read although it has an endpoint: what it counted is missing from the sum, a warning. A worker whose
        heartbeat names no endpoint yet has just started (it serves HTTP before it takes events)."""
        return self.value is None and self.url is not None

    def as_dict(self, key: str) -> dict[str, Any]:
        value = dict(self.value) if isinstance(self.value, Mapping) else self.value
        return {"consumer": self.consumer, "url": self.url, key: value, "error": self.error}


@dataclass(frozen=True, slots=True)
class FleetCounter(Generic[ValueT]):
    """A counter of every live worker, the one at --worker-url first: each counts only its own, so the stack's
    figure is their sum, and a worker not read is named, never taken for 0."""

    workers: tuple[WorkerCounter[ValueT], ...]

    @property
    def read(self) -> tuple[WorkerCounter[ValueT], ...]:
        return tuple(worker for worker in self.workers if worker.value is not None)

    @property
    def unread(self) -> tuple[WorkerCounter[ValueT], ...]:
        return tuple(worker for worker in self.workers if worker.value is None)

    @property
    def missing(self) -> tuple[WorkerCounter[ValueT], ...]:
        return tuple(worker for worker in self.workers if worker.missing)

    def left_out(self, what: str, hint: str = "") -> str:
        """What the sum leaves out, with why: the workers not read although they have an endpoint (`what` says what
        is missing from it: the sum is a floor; then `hint`), then those just starting (no endpoint yet, nothing
        counted). Empty when every live worker was read."""
        missing = [worker for worker in self.unread if worker.missing]
        starting = [worker for worker in self.unread if not worker.missing]
        parts = []
        if missing:
            parts.append(f"not read, so {what}: " + _named(missing) + hint)
        if starting:
            parts.append("not counted: " + _named(starting))
        return "; ".join(parts)


def _named(workers: Iterable[WorkerCounter[Any]]) -> str:
    """`host-c:303 (worker unreachable at …)`: each worker not read, with why."""
    return "; ".join(f"{worker.name} ({worker.error})" for worker in workers)


__all__ = ["STARTING", "Families", "FleetCounter", "FleetHealth", "LiveWorker", "WorkerCounter", "WorkerHealth",
           "WorkerMetrics", "WorkerState", "at_once", "live_workers", "other_live_workers", "read_fleet_health",
           "read_fleet_metrics", "read_fleet_state", "worker_url_of"]
