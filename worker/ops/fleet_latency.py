"""Every live worker's latency per operation (`tacticalctl latency --all`): each worker's own /metrics histogram,
read at the endpoint its heartbeat names, judged as one worker's is (`worker.ops.latency`).

Who is live, and whether the worker answering at an address is the one whose heartbeat names it, is
`read_fleet_health`'s answer: a worker elsewhere bound to 127.0.0.1 names this host's worker from here, and that
one's latency is not its. With a window, every worker's first scrape is taken at once, then the window waited once,
then every second scrape at once: the windows line up, and N workers cost one window, not N."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client.samples import Sample

from worker.health import CheckStatus
from worker.ops.fleet import STARTING, LiveWorker, WorkerHealth, at_once, read_fleet_health
from worker.ops.latency import DURATION_HISTOGRAM, NoLatencyHistogram, OperationLatency, operation_latencies, worst
from worker.ops.worker_client import WorkerClient, WorkerUnreachable

Families = Mapping[str, list[Sample]]
UNKNOWN = "unknown"  # its /metrics has no latency histogram: the check could not run on it (exit 3)
_ORDER = (CheckStatus.CRITICAL.value, CheckStatus.WARN.value, UNKNOWN)  # the monitoring plugins' order of exits


@dataclass(frozen=True, slots=True)
class WorkerLatency:
    """One live worker's latency per operation, or why it was not read."""

    worker: LiveWorker
    operations: tuple[OperationLatency, ...] | None = None  # None when not read: `error` says why
    error: str | None = None
    no_histogram: bool = False  # it answered, but its /metrics has no histogram

    @property
    def starting(self) -> bool:
        """Its heartbeat names no endpoint yet: shown, not judged (as `health --all` does)."""
        return self.operations is None and self.worker.url is None

    @property
    def status(self) -> str | None:
        """ok, warn or critical by the worst of its operations; critical when live by its heartbeat but not read;
        unknown when its /metrics has no histogram; None for a worker just starting."""
        if self.operations is not None:
            return worst(self.operations).value
        if self.starting:
            return None
        return UNKNOWN if self.no_histogram else CheckStatus.CRITICAL.value

    @property
    def end_to_end(self) -> OperationLatency | None:
        return next((row for row in self.operations or () if row.operation == "end_to_end"
                     and row.agent_type == "all"), None)

    @property
    def slowest_stage(self) -> OperationLatency | None:
        """Of validate … commit, the one with the highest P99, if any has one: where its decided events' time goes.
        Each agent's own inference is the monitor's probes, not decided events: judged, not ranked here."""
        stages = [row for row in self.operations or () if row.p99_ms is not None and row.agent_type == "all"
                  and row.operation != "end_to_end"]
        return max(stages, key=lambda row: (row.saturated, row.p99_ms or 0.0), default=None)

    @property
    def over_threshold(self) -> tuple[OperationLatency, ...]:
        """The operations that make its status: those judged as badly as the worst."""
        status = self.status
        return tuple(row for row in self.operations or () if row.status.value == status
                     and row.status is not CheckStatus.OK)

    def as_dict(self) -> dict[str, Any]:
        return {"consumer": self.worker.name, "host": self.worker.host, "pid": self.worker.pid,
                "url": self.worker.url, "status": self.status, "error": self.error,
                "operations": [row.as_dict() for row in self.operations or ()]}


@dataclass(frozen=True, slots=True)
class FleetLatency:
    """Every live worker's latency, by consumer name; `window_s` 0: since each worker started."""

    workers: tuple[WorkerLatency, ...]
    window_s: float = 0.0

    @property
    def status(self) -> str:
        """The worst of the workers judged: critical, then warn, then unknown, then ok. No live worker: critical.
        Every live one starting (none serves its metrics yet): a warning, as `health --all` says."""
        if not self.workers:
            return CheckStatus.CRITICAL.value
        statuses = {worker.status for worker in self.workers if worker.status is not None}
        if not statuses:
            return CheckStatus.WARN.value
        return next((status for status in _ORDER if status in statuses), CheckStatus.OK.value)


def read_fleet_latency(client: redis.Redis, *, timeout_s: float, window_s: float = 0.0,
                       wait: Callable[[float], None] = time.sleep) -> FleetLatency:
    """Every live worker's latency per operation: since it started, or over `window_s` (two scrapes of every worker,
    each round taken at once, `wait` between them)."""
    healths = read_fleet_health(client, timeout_s=timeout_s).workers
    scrapes: dict[str, list[Families | str]] = {health.worker.name: [] for health in healths}
    rounds = 2 if window_s > 0 else 1
    for round_ in range(rounds):
        if round_:
            wait(window_s)
        # A worker not read, or whose first scrape failed, is not scraped (nor waited for) again.
        due = [health.worker for health in healths if health.answer is not None
               and not any(isinstance(scrape, str) for scrape in scrapes[health.worker.name])]
        for worker, scrape in zip(due, at_once(lambda worker: _scrape(worker, timeout_s), due, "fleet-metrics"),
                                  strict=True):
            scrapes[worker.name].append(scrape)
    return FleetLatency(tuple(_judge(health, scrapes[health.worker.name]) for health in healths), window_s)


def _scrape(worker: LiveWorker, timeout_s: float) -> Families | str:
    """Its /metrics, or why it was not read."""
    assert worker.url is not None  # read_fleet_health read its /health there
    try:
        return WorkerClient(worker.url, timeout_s=timeout_s).metrics()
    except WorkerUnreachable as exc:
        return worker.unreachable(exc)


def _judge(health: WorkerHealth, scrapes: list[Families | str]) -> WorkerLatency:
    """Its latency from its scrapes (one: since it started; two: between them), or why not."""
    worker = health.worker
    if health.answer is None:
        return WorkerLatency(worker, error=health.error or STARTING)
    families = []
    for scrape in scrapes:
        if isinstance(scrape, str):
            return WorkerLatency(worker, error=scrape)
        families.append(scrape)
    try:
        rows = operation_latencies(families[-1], families[0] if len(families) > 1 else None)
    except NoLatencyHistogram:
        return WorkerLatency(worker, error=f"{worker.url}/metrics has no {DURATION_HISTOGRAM}: not a tactical "
                                           "worker, or an incompatible one", no_histogram=True)
    return WorkerLatency(worker, tuple(rows))


__all__ = ["UNKNOWN", "FleetLatency", "WorkerLatency", "read_fleet_latency"]
