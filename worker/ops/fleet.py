"""The other live workers of a scaled stack, and where to read them: each heartbeat names the HTTP address its worker
bound, so a command pointed at one worker (`--worker-url`) can read the others at theirs. Each counts only what it
did itself: a figure for the stack is a sum over every one of them (`read_fleet_metrics`)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis
from prometheus_client.samples import Sample

from worker.heartbeat import live_consumers
from worker.ops.worker_client import WorkerClient, WorkerUnreachable

Families = Mapping[str, list[Sample]]
ValueT = TypeVar("ValueT")


@dataclass(frozen=True, slots=True)
class OtherWorker:
    name: str
    url: str | None  # None: its heartbeat names no endpoint (yet): a starting worker's first beats come before it


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


def other_live_workers(client: redis.Redis, *, measured: str | None, worker_url: str) -> list[OtherWorker]:
    """Every live worker but the one at `worker_url`, by name. That one is left out by the consumer name it answered
    with (`measured`), else by the URL its heartbeat names: it was read, or found unreachable, there already, and is
    neither counted nor waited for twice."""
    here = socket.gethostname()
    others = []
    for name, beat in sorted(live_consumers(client).items()):
        if name == measured:
            continue
        url = worker_url_of(beat, here)
        if url is not None and url == worker_url.rstrip("/"):
            continue
        others.append(OtherWorker(name, url))
    return others


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
    workers = [first]
    for other in other_live_workers(client, measured=first.consumer, worker_url=worker_url):
        if other.url is None:
            workers.append(WorkerMetrics(other.name, None, None, "its heartbeat names no HTTP endpoint yet: "
                                                                 "a worker just starting"))
        else:
            workers.append(_read(other.name, other.url, WorkerClient(other.url, timeout_s=timeout_s).metrics))
    return tuple(workers)


def _read(consumer: str | None, url: str, metrics: Callable[[], Families]) -> WorkerMetrics:
    try:
        return WorkerMetrics(consumer, url, metrics())
    except WorkerUnreachable as exc:
        return WorkerMetrics(consumer, url, None, str(exc))


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


__all__ = ["Families", "FleetCounter", "OtherWorker", "WorkerCounter", "WorkerMetrics", "other_live_workers",
           "read_fleet_metrics", "worker_url_of"]
