"""Performance over a period, read back from what the worker wrote: the overnight summary and the daily report.

Everything comes from the streams, not from the worker's memory, so a report covers restarts and survives them:
decisions (`tactical_decisions`: executed or not, per-stage timings), end-to-end latency (the decision's stream id
minus its event's — both stamped by the same Redis clock — so it includes the time an event queued), the worker's
service time (its stage timings summed: the time it worked on the event up to its commit, what the runbook's P99/P50
bounds judge; the worker's latency metric adds the commit; queueing is consumer lag's), dead letters, execution
commands, and the health and breaker transitions the worker alerted to `tactical_alerts`. Scans are bounded by
`limit` entries, newest first; a summary that hit the limit says so (`truncated`).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from worker.alerts import Alert, read_alerts
from worker.decision_entry import entry_timings_ms
from worker.names import COMMANDS_STREAM, DEAD_LETTER_STREAM, DECISIONS_STREAM, INPUT_STREAM
from worker.ops.duplicates import FleetDuplicates, ScanResult, duplicates_of, iter_newest, scan_offenders
from worker.ops.fleet import Families, FleetCounter, WorkerCounter, WorkerMetrics
from worker.stream_entries import entry_time_ms

DEFAULT_SCAN_LIMIT = 100_000
HOUR_MS = 3_600_000
TOP_REASONS = 5
ERRORS_COUNTER = "tactical_errors_total"
TRANSITION_KINDS = ("health_transition",)
BREAKER_KIND_PREFIX = "breaker_"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 1]) of `values`; None when there are none."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"percentile q must be in [0, 1], got {q}")
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@dataclass(frozen=True, slots=True)
class LatencyStats:
    count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> LatencyStats:
        return cls(
            count=len(values_ms),
            p50_ms=percentile(values_ms, 0.50),
            p90_ms=percentile(values_ms, 0.90),
            p99_ms=percentile(values_ms, 0.99),
            max_ms=max(values_ms) if values_ms else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "p50_ms": self.p50_ms, "p90_ms": self.p90_ms, "p99_ms": self.p99_ms,
                "max_ms": self.max_ms}


@dataclass(frozen=True, slots=True)
class HourStats:
    hour: str  # ISO-8601 UTC start of the hour
    decisions: int
    p99_ms: float | None  # end to end, queueing included
    service_p99_ms: float | None = None  # the worker's own time

    def as_dict(self) -> dict[str, Any]:
        return {"hour": self.hour, "decisions": self.decisions, "p99_ms": self.p99_ms,
                "service_p99_ms": self.service_p99_ms}


@dataclass(frozen=True, slots=True)
class DecisionStats:
    decisions: int
    executed: int
    latency: LatencyStats  # end to end: event accepted by Redis → decision committed, queueing included
    stages: Mapping[str, LatencyStats]  # the worker's own per-stage timings (validate, claim, inference, …)
    hourly: tuple[HourStats, ...]
    truncated: bool = False
    service: LatencyStats = LatencyStats(0, None, None, None, None)  # the stages summed, per decision

    @property
    def execution_rate(self) -> float | None:
        return self.executed / self.decisions if self.decisions else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "executed": self.executed,
            "execution_rate": self.execution_rate,
            "latency": self.latency.as_dict(),
            "service": self.service.as_dict(),
            "stages": {name: stats.as_dict() for name, stats in self.stages.items()},
            "hourly": [hour.as_dict() for hour in self.hourly],
            "truncated": self.truncated,
        }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def summarize_decisions(
    entries: Iterable[tuple[bytes, Mapping[bytes, bytes]]], *, truncated: bool = False
) -> DecisionStats:
    """Counts, latency percentiles, per-stage timings and an hourly P99 of decision entries (any order)."""
    decisions = executed = 0
    latencies: list[float] = []
    service: list[float] = []
    stages: dict[str, list[float]] = {}
    by_hour: dict[int, list[float]] = {}
    service_by_hour: dict[int, list[float]] = {}
    counts_by_hour: Counter[int] = Counter()
    for decision_id, fields in entries:
        decisions += 1
        executed += fields.get(b"execute") == b"1"
        decided_ms = entry_time_ms(decision_id)
        hour = decided_ms - decided_ms % HOUR_MS
        counts_by_hour[hour] += 1
        event_id = fields.get(b"event_id")
        if event_id:
            latency = float(decided_ms - entry_time_ms(event_id))
            latencies.append(latency)
            by_hour.setdefault(hour, []).append(latency)
        timings = entry_timings_ms(fields)
        for stage, value in timings.items():
            stages.setdefault(stage, []).append(value)
        if timings:
            worked_ms = sum(timings.values())
            service.append(worked_ms)
            service_by_hour.setdefault(hour, []).append(worked_ms)
    hourly = tuple(
        HourStats(_iso(hour), counts_by_hour[hour], percentile(by_hour.get(hour, []), 0.99),
                  percentile(service_by_hour.get(hour, []), 0.99))
        for hour in sorted(counts_by_hour)
    )
    return DecisionStats(
        decisions=decisions,
        executed=executed,
        latency=LatencyStats.of(latencies),
        service=LatencyStats.of(service),
        stages={name: LatencyStats.of(values) for name, values in sorted(stages.items())},
        hourly=hourly,
        truncated=truncated,
    )


def read_decision_stats(
    client: redis.Redis, since_ms: int, until_ms: int, *, limit: int = DEFAULT_SCAN_LIMIT
) -> DecisionStats:
    entries = iter_newest(client, DECISIONS_STREAM, limit=limit + 1, since_ms=since_ms, until_ms=until_ms)
    kept: list[tuple[bytes, dict[bytes, bytes]]] = []
    truncated = False
    for entry in entries:
        if len(kept) == limit:
            truncated = True
            break
        entry_id, fields = entry
        # Keep only what the summary reads: a day of decisions must not hold every vote in memory.
        kept.append((entry_id, {k: v for k, v in fields.items() if k in (b"execute", b"event_id") or
                                k.endswith(b"_ms")}))
    return summarize_decisions(kept, truncated=truncated)


@dataclass(frozen=True, slots=True)
class DeadLetterStats:
    count: int
    reasons: tuple[tuple[str, int], ...]  # the most frequent reasons, with their counts
    truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "reasons": [{"reason": reason, "count": n} for reason, n in self.reasons],
            "truncated": self.truncated,
        }


def read_dead_letters(
    client: redis.Redis, since_ms: int, until_ms: int, *, limit: int = DEFAULT_SCAN_LIMIT
) -> DeadLetterStats:
    reasons: Counter[str] = Counter()
    count = 0
    truncated = False
    for _entry_id, fields in iter_newest(client, DEAD_LETTER_STREAM, limit=limit + 1, since_ms=since_ms,
                                         until_ms=until_ms):
        if count == limit:
            truncated = True
            break
        count += 1
        reason = fields.get(b"dead_reason", b"(no reason recorded)").decode("utf-8", "replace")
        # By the reason's code (`matrix_not_finite: matrix[3][1] is nan`): its detail differs from event to event.
        code = reason.split(":", 1)[0].strip()[:120] or "(no reason recorded)"
        reasons[code] += 1
    top = reasons.most_common(TOP_REASONS)
    others = count - sum(n for _, n in top)
    if others:
        top.append((f"{len(reasons) - len(top)} other reason(s)", others))
    return DeadLetterStats(count, tuple(top), truncated)


def read_alert_history(client: redis.Redis, since_ms: int, until_ms: int, *, limit: int = 10_000) -> list[Alert]:
    """Alerts written in [since_ms, until_ms], oldest first, at most `limit`."""
    alerts: list[Alert] = []
    cursor = f"{max(0, since_ms - 1)}-18446744073709551615"
    while len(alerts) < limit:
        page = read_alerts(client, count=min(1000, limit - len(alerts)), since_id=cursor)
        if not page:
            break
        for alert in page:
            if entry_time_ms(alert.id) > until_ms:
                return alerts
            alerts.append(alert)
        cursor = page[-1].id
    return alerts


def transitions_of(alerts: Iterable[Alert]) -> list[dict[str, Any]]:
    """The health and breaker transitions among `alerts`, as the worker recorded them."""
    moves = []
    for alert in alerts:
        if alert.kind in TRANSITION_KINDS or alert.kind.startswith(BREAKER_KIND_PREFIX):
            moves.append({
                "at": alert.ts,
                "kind": alert.kind,
                "severity": alert.severity,
                "from": alert.fields.get("from_state"),
                "to": alert.fields.get("to_state"),
                "source": alert.source,
                "message": alert.message,
            })
    return moves


@dataclass(frozen=True, slots=True)
class PerformanceSummary:
    since_ms: int
    until_ms: int
    decisions: DecisionStats
    dead_letters: DeadLetterStats

    @property
    def error_rate(self) -> float | None:
        """Dead-lettered / handled (decided + dead-lettered) over the period."""
        handled = self.decisions.decisions + self.dead_letters.count
        return self.dead_letters.count / handled if handled else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": _iso(self.since_ms),
            "until": _iso(self.until_ms),
            **self.decisions.as_dict(),
            "dead_letters": self.dead_letters.as_dict(),
            "error_rate": self.error_rate,
        }


def read_performance(
    client: redis.Redis, since_ms: int, until_ms: int, *, limit: int = DEFAULT_SCAN_LIMIT
) -> PerformanceSummary:
    return PerformanceSummary(
        since_ms,
        until_ms,
        read_decision_stats(client, since_ms, until_ms, limit=limit),
        read_dead_letters(client, since_ms, until_ms, limit=limit),
    )


def _counter_by_label(families: Families, sample_name: str, label: str) -> dict[str, float]:
    family = families.get(sample_name.removesuffix("_total"), [])
    return {s.labels.get(label, ""): float(s.value) for s in family if s.name == sample_name}


@dataclass(frozen=True, slots=True)
class FleetErrors(FleetCounter[Mapping[str, float]]):
    """The error counters of every live worker, by operation: each counts only the errors it met itself."""

    @classmethod
    def of(cls, fleet: Iterable[WorkerMetrics]) -> FleetErrors:
        return cls(tuple(WorkerCounter.of(worker, ERRORS_COUNTER, _errors_by_operation) for worker in fleet))

    @property
    def total(self) -> dict[str, float] | None:
        """The counters read, summed by operation; None when none was."""
        read = self.read
        if not read:
            return None
        summed: Counter[str] = Counter()
        for worker in read:
            summed.update(worker.value or {})
        return dict(summed)

    def shortfall(self) -> str:
        """What the sums leave out, with why (`FleetCounter.left_out`)."""
        return self.left_out("their errors are missing from these sums")

    def as_dict(self) -> dict[str, Any]:
        return {"worker_errors_total": self.total,
                "workers": [worker.as_dict("worker_errors_total") for worker in self.workers]}


def _errors_by_operation(families: Families) -> dict[str, float]:
    return _counter_by_label(families, ERRORS_COUNTER, "operation")


@dataclass(frozen=True, slots=True)
class DailyReport:
    date: str
    generated_at: str
    performance: PerformanceSummary
    commands: int
    duplicate_inputs: ScanResult
    duplicate_commands: ScanResult
    duplicate_events: FleetDuplicates  # every live worker's counter, each since its start
    worker_errors: FleetErrors  # every live worker's tactical_errors_total by operation, each since its start
    transitions: tuple[dict[str, Any], ...]
    alerts_by_severity: Mapping[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        performance = self.performance
        decisions = performance.decisions
        return {
            "date": self.date,
            "generated_at": self.generated_at,
            "period": {"since": _iso(performance.since_ms), "until": _iso(performance.until_ms)},
            "decisions": decisions.decisions,
            "executed": decisions.executed,
            "execution_rate": decisions.execution_rate,
            "commands": self.commands,
            "latency": decisions.latency.as_dict(),
            "service": decisions.service.as_dict(),
            "stages": {name: stats.as_dict() for name, stats in decisions.stages.items()},
            "hourly": [hour.as_dict() for hour in decisions.hourly],
            "errors": {
                "dead_letters": performance.dead_letters.as_dict(),
                "error_rate": performance.error_rate,
                **self.worker_errors.as_dict(),
            },
            "duplicates": {
                "input": self.duplicate_inputs.as_dict(),
                "commands": self.duplicate_commands.as_dict(),
                **self.duplicate_events.as_dict(),
            },
            "transitions": list(self.transitions),
            "alerts_by_severity": dict(self.alerts_by_severity),
            "truncated": decisions.truncated or performance.dead_letters.truncated
            or self.duplicate_inputs.truncated or self.duplicate_commands.truncated,
        }


def count_entries(client: redis.Redis, stream: str, since_ms: int, until_ms: int, *, limit: int) -> int:
    return sum(1 for _ in iter_newest(client, stream, limit=limit, since_ms=since_ms, until_ms=until_ms))


def build_daily_report(
    client: redis.Redis,
    since_ms: int,
    until_ms: int,
    *,
    fleet: Sequence[WorkerMetrics],
    limit: int = DEFAULT_SCAN_LIMIT,
) -> DailyReport:
    """The day's report; the worker counters are `fleet`'s (`read_fleet_metrics`: every live worker's /metrics),
    summed."""
    alerts = read_alert_history(client, since_ms, until_ms)
    return DailyReport(
        date=_iso(since_ms)[:10],
        generated_at=_iso(until_ms),
        performance=read_performance(client, since_ms, until_ms, limit=limit),
        commands=count_entries(client, COMMANDS_STREAM, since_ms, until_ms, limit=limit),
        duplicate_inputs=scan_offenders(client, INPUT_STREAM, limit=limit, since_ms=since_ms, until_ms=until_ms),
        duplicate_commands=scan_offenders(client, COMMANDS_STREAM, limit=limit, since_ms=since_ms,
                                          until_ms=until_ms),
        duplicate_events=duplicates_of(fleet),
        worker_errors=FleetErrors.of(fleet),
        transitions=tuple(transitions_of(alerts)),
        alerts_by_severity=dict(sorted(Counter(alert.severity for alert in alerts).items())),
    )


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} ms"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def render_markdown(report: DailyReport) -> str:
    data = report.as_dict()
    latency, service = data["latency"], data["service"]
    errors = data["errors"]
    duplicates = data["duplicates"]
    # Each worker counts only its own: the sums say how many were read, and name any that were not.
    fleet = report.duplicate_events
    caught = fleet.summary() + (f"; {fleet.shortfall()}" if fleet.unread else "")
    lines = [
        f"# tactical-marl daily performance report — {report.date}",
        "",
        f"Period {data['period']['since']} → {data['period']['until']} (generated {report.generated_at}).",
        "",
        "| metric | value |",
        "|---|---|",
        f"| decisions | {data['decisions']} |",
        f"| executed | {data['executed']} |",
        f"| execution rate | {_ratio(data['execution_rate'])} |",
        f"| execution commands | {data['commands']} |",
        f"| worker's time p50 / p90 / p99 / max | {_ms(service['p50_ms'])} / {_ms(service['p90_ms'])} / "
        f"{_ms(service['p99_ms'])} / {_ms(service['max_ms'])} |",
        f"| end to end, queueing included, p50 / p90 / p99 / max | {_ms(latency['p50_ms'])} / "
        f"{_ms(latency['p90_ms'])} / {_ms(latency['p99_ms'])} / {_ms(latency['max_ms'])} |",
        f"| dead letters | {errors['dead_letters']['count']} |",
        f"| error rate (dead-lettered / handled) | {_ratio(errors['error_rate'])} |",
        f"| correlation ids repeated in synergy_events | {len(duplicates['input']['offenders'])} |",
        f"| correlation ids with more than one command | {len(duplicates['commands']['offenders'])} |",
        f"| duplicate events counted by the workers | {caught.replace('|', '/')} |",
        f"| health and breaker transitions | {len(data['transitions'])} |",
        f"| alerts by severity | {', '.join(f'{k} {v}' for k, v in data['alerts_by_severity'].items()) or 'none'} |",
    ]
    if data["truncated"]:
        lines += ["", "Scans hit their entry limit: counts cover the most recent entries only."]
    if data["stages"]:
        lines += ["", "## Stage timings (worker-measured, per decision: each carries its batch's times)", "",
                  "| stage | p50 | p99 | max |", "|---|---|---|---|"]
        for name, stats in data["stages"].items():
            lines.append(f"| {name} | {_ms(stats['p50_ms'])} | {_ms(stats['p99_ms'])} | {_ms(stats['max_ms'])} |")
    if data["hourly"]:
        lines += ["", "## P99 by hour", "", "| hour (UTC) | decisions | worker's time p99 | end to end p99 |",
                  "|---|---|---|---|"]
        for hour in data["hourly"]:
            lines.append(f"| {hour['hour']} | {hour['decisions']} | {_ms(hour['service_p99_ms'])} | "
                         f"{_ms(hour['p99_ms'])} |")
    if errors["dead_letters"]["reasons"]:
        lines += ["", "## Dead-letter reasons", ""]
        lines += [f"- {item['count']} × {item['reason']}" for item in errors["dead_letters"]["reasons"]]
    counted = sorted((op, n) for op, n in (errors["worker_errors_total"] or {}).items() if n)
    left_out = report.worker_errors.shortfall()
    if counted or left_out:
        lines += ["", f"## Worker errors by operation (summed over {len(report.worker_errors.read)} worker(s), each "
                  "since its start)", ""]
        lines += [f"- {op}: {int(n)}" for op, n in counted] or ["- none"]
        if left_out:
            lines += ["", left_out[0].upper() + left_out[1:]]
    if data["transitions"]:
        # Each worker alerts its own transitions: without the source, two workers' moves read as one flapping.
        lines += ["", "## Transitions", "", "| at | source | kind | from → to | message |", "|---|---|---|---|---|"]
        for move in data["transitions"]:
            lines.append(f"| {move['at']} | {(move.get('source') or '').replace('|', '/')} | {move['kind']} | "
                         f"{move['from'] or ''} → {move['to'] or ''} | {move['message'].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def write_report(report: DailyReport, directory: Path) -> tuple[Path, Path]:
    """Write `tactical-report-<date>.md` and `.json` into `directory`; returns both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"tactical-report-{report.date}"
    markdown, data = stem.with_suffix(".md"), stem.with_suffix(".json")
    markdown.write_text(render_markdown(report), encoding="utf-8")
    data.write_text(json.dumps(report.as_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return markdown, data


__all__ = [
    "DailyReport",
    "DeadLetterStats",
    "DecisionStats",
    "FleetErrors",
    "HourStats",
    "LatencyStats",
    "PerformanceSummary",
    "build_daily_report",
    "percentile",
    "read_alert_history",
    "read_dead_letters",
    "read_decision_stats",
    "read_performance",
    "render_markdown",
    "summarize_decisions",
    "transitions_of",
    "write_report",
]
