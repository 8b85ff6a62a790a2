"""P50/P99 per operation from the worker's `/metrics` histogram, computed the way Prometheus does.

`tactical_request_duration_seconds` is cumulative since the worker started. One scrape gives the distribution since
start; two scrapes some seconds apart, subtracted, give the distribution of that window — what
`histogram_quantile(…, rate(…[window]))` shows on the dashboard. Quantiles interpolate linearly inside a bucket,
and a quantile beyond the last finite bucket (1 s) reads as that bound, flagged `saturated`.

The series do not all count the same thing (`counted_per`): `end_to_end` and each stage are observed once per
decided event (a stage's time once for each event of its batch: every one waited it), each agent's own inference
once per probe of the health monitor. The probes' counts are not comparable with the others', so every row says
what its count counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from prometheus_client.samples import Sample

from worker.health import DEFAULT_THRESHOLDS, CheckStatus, Thresholds, check_latency

DURATION_HISTOGRAM = "tactical_request_duration_seconds"
GROUP_LABELS = ("operation", "agent_type")
OPERATION_ORDER = ("end_to_end", "validate", "claim", "inference", "aggregate", "commit")


class CountedPer(StrEnum):
    """What one observation of a series is, so its count reads as what it is."""

    # end_to_end and validate … commit: one per decided event (the worker observes its batch's time, or the batch's
    # time in that stage, once per decision: every event of the batch waited it)
    EVENT = "events"
    PROBE = "probes"  # inference per agent: the monitor times each agent alone on one event, every few seconds


_SINGULAR = {CountedPer.EVENT: "event", CountedPer.PROBE: "probe"}


def counted_per(operation: str, agent_type: str) -> CountedPer:
    """How `worker.telemetry` and the monitor's agent probe observe a series of the histogram."""
    return CountedPer.EVENT if agent_type == "all" else CountedPer.PROBE


class NoLatencyHistogram(LookupError):
    """/metrics carries no `tactical_request_duration_seconds`: not a tactical worker, or an incompatible one."""


@dataclass(frozen=True, slots=True)
class Histogram:
    """One series of the histogram, summed over the labels not grouped by. `buckets` are (upper bound,
    cumulative count), ascending, ending with +Inf."""

    operation: str
    agent_type: str
    buckets: tuple[tuple[float, float], ...]
    count: float
    sum: float

    def minus(self, earlier: Histogram | None) -> Histogram:
        """The observations made since `earlier` (a counter reset — the worker restarted — keeps these)."""
        if earlier is None or earlier.count > self.count:
            return self
        before = dict(earlier.buckets)
        return Histogram(
            self.operation,
            self.agent_type,
            tuple((le, cumulative - before.get(le, 0.0)) for le, cumulative in self.buckets),
            self.count - earlier.count,
            self.sum - earlier.sum,
        )


def histograms(families: Mapping[str, list[Sample]], name: str = DURATION_HISTOGRAM) -> list[Histogram]:
    """The histogram's series grouped by (operation, agent_type), summed over synergy types."""
    samples = families.get(name)
    if samples is None:
        raise NoLatencyHistogram(f"/metrics has no {name}: is --worker-url pointing at a tactical worker?")
    buckets: dict[tuple[str, str], dict[float, float]] = {}
    counts: dict[tuple[str, str], float] = {}
    sums: dict[tuple[str, str], float] = {}
    for sample in samples:
        key = (sample.labels.get("operation", ""), sample.labels.get("agent_type", "all"))
        if sample.name == name + "_bucket":
            le = float(sample.labels["le"])
            group = buckets.setdefault(key, {})
            group[le] = group.get(le, 0.0) + float(sample.value)
        elif sample.name == name + "_count":
            counts[key] = counts.get(key, 0.0) + float(sample.value)
        elif sample.name == name + "_sum":
            sums[key] = sums.get(key, 0.0) + float(sample.value)
    return [
        Histogram(operation, agent, tuple(sorted(buckets[(operation, agent)].items())),
                  counts.get((operation, agent), 0.0), sums.get((operation, agent), 0.0))
        for operation, agent in sorted(buckets, key=_order)
    ]


def _order(key: tuple[str, str]) -> tuple[int, str, int, str]:
    operation, agent = key
    rank = OPERATION_ORDER.index(operation) if operation in OPERATION_ORDER else len(OPERATION_ORDER)
    return rank, operation, agent != "all", agent


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> tuple[float | None, bool]:
    """(quantile in seconds, saturated) with Prometheus' rules; (None, False) when there is nothing to measure."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return None, False
    total = buckets[-1][1]
    if total <= 0:
        return None, False
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for index, (bound, cumulative) in enumerate(buckets):
        if cumulative >= rank:
            if math.isinf(bound):
                return buckets[index - 1][0], True
            if index == 0 and bound <= 0:
                return bound, False
            in_bucket = cumulative - previous_count
            if in_bucket <= 0:
                return bound, False
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / in_bucket, False
        previous_bound, previous_count = bound, cumulative
    return None, False


@dataclass(frozen=True, slots=True)
class OperationLatency:
    operation: str
    agent_type: str
    count: int
    p50_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    saturated: bool  # a quantile is beyond the last finite bucket: the true value is larger
    status: CheckStatus

    @property
    def label(self) -> str:
        return self.operation if self.agent_type == "all" else f"{self.operation} ({self.agent_type})"

    @property
    def counted_per(self) -> CountedPer:
        return counted_per(self.operation, self.agent_type)

    @property
    def count_text(self) -> str:
        """`10000 events`, `3 probes`: a count never reads as comparable with another row's of another kind."""
        unit = self.counted_per
        return f"{self.count} {_SINGULAR[unit] if self.count == 1 else unit.value}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "agent_type": self.agent_type,
            "count": self.count,
            "counted_per": self.counted_per.value,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "mean_ms": self.mean_ms,
            "saturated": self.saturated,
            "status": self.status.value,
        }


def evaluate(histogram: Histogram, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> OperationLatency:
    """Quantiles of one series, judged by the runbook: P99 above 100 ms critical, P50 above 50 ms warning."""
    p50, saturated50 = histogram_quantile(0.50, histogram.buckets)
    p99, saturated99 = histogram_quantile(0.99, histogram.buckets)
    p50_ms = None if p50 is None else p50 * 1e3
    p99_ms = None if p99 is None else p99 * 1e3
    mean_ms = histogram.sum / histogram.count * 1e3 if histogram.count > 0 else None
    return OperationLatency(
        operation=histogram.operation,
        agent_type=histogram.agent_type,
        count=round(histogram.count),
        p50_ms=p50_ms,
        p99_ms=p99_ms,
        mean_ms=mean_ms,
        saturated=saturated50 or saturated99,
        status=check_latency(p50_ms, p99_ms, thresholds).status,
    )


def operation_latencies(
    families: Mapping[str, list[Sample]],
    earlier: Mapping[str, list[Sample]] | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[OperationLatency]:
    """Per (operation, agent): since the worker started, or since the `earlier` scrape when given."""
    before = {(h.operation, h.agent_type): h for h in histograms(earlier)} if earlier is not None else {}
    return [
        evaluate(h.minus(before.get((h.operation, h.agent_type))), thresholds)
        for h in histograms(families)
    ]


def worst(latencies: Sequence[OperationLatency]) -> CheckStatus:
    return max((row.status for row in latencies), key=lambda status: status.rank, default=CheckStatus.OK)


def end_to_end(latencies: Sequence[OperationLatency]) -> OperationLatency | None:
    return next((row for row in latencies if row.operation == "end_to_end" and row.agent_type == "all"), None)


__all__ = [
    "DURATION_HISTOGRAM",
    "CountedPer",
    "Histogram",
    "NoLatencyHistogram",
    "OperationLatency",
    "counted_per",
    "end_to_end",
    "evaluate",
    "histogram_quantile",
    "histograms",
    "operation_latencies",
    "worst",
]
