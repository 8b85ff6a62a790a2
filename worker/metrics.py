"""Every Prometheus metric the runbook names, defined once, in a registry of the worker's own.

Label values come from fixed sets (never a correlation id): a value outside them raises `UnknownLabelError`.
Gauges the worker has not measured yet read NaN, never a made-up 0. Ratios are 0..1, not percent:
`tactical_execution_rate` is executed / decided (executed + hold) and `tactical_error_rate` is errors / attempts
(events handled, and attempts that failed without an outcome: each event of a failed batch counts), both over the
rolling window (see `worker.rolling`).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Gauge, Histogram, Info
from prometheus_client import Counter as PromCounter
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.actions import AGENT_NAMES
from worker.records import EventOutcome, SynergyType
from worker.rolling import WindowStats
from worker.version import release

NAN = float("nan")
ALL = "all"

LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)
STAGE_OPERATIONS: tuple[str, ...] = ("end_to_end", "validate", "claim", "inference", "aggregate", "commit")
# The hot path's stages the worker times per batch (`BatchResult.stage_seconds`), as they are observed.
# `claim` is the worker's time to send the idempotency claim: its reply is read with the commit, not waited for.
PIPELINE_STAGES: tuple[str, ...] = ("validate", "claim", "inference", "aggregate", "commit")
ERROR_OPERATIONS: tuple[str, ...] = (
    "read",
    "validate",
    "claim",
    "inference",
    "aggregate",
    "batch",  # a batch failed as a whole (inference or aggregate) and its events were decided one at a time
    "commit",
    "reclaim",
    "model_load",
    "heartbeat",
)
OUTCOMES: tuple[str, ...] = tuple(outcome.value for outcome in EventOutcome)
SYNERGY_LABELS: tuple[str, ...] = tuple(kind.value for kind in SynergyType)
HEALTH_STATE_NAMES: tuple[str, ...] = ("healthy", "degraded", "critical", "failed")
BREAKER_STATE_NAMES: tuple[str, ...] = ("closed", "open", "half_open")

# The histogram series that exist: end-to-end per synergy type, each stage of the hot path (inference for the whole
# ensemble), inference per agent (the monitor's probes). Pre-created so /metrics carries them before the first event.
STAGE_SERIES: tuple[tuple[str, str, str], ...] = (
    *(("end_to_end", ALL, synergy) for synergy in SYNERGY_LABELS),
    ("validate", ALL, ALL),
    ("claim", ALL, ALL),
    *(("inference", agent, ALL) for agent in (*AGENT_NAMES, ALL)),
    ("aggregate", ALL, ALL),
    ("commit", ALL, ALL),
)

# The text format 0.0.4 body is what generate_latest writes for our (legacy-charset) names; announcing 0.0.4
# rather than the library's default 1.0.0 keeps older Prometheus servers parsing it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class _WithoutCreatedSeries(Collector):
    """The registry minus the `*_created` samples: in the text format each would be one more gauge series
    per labelled counter or histogram, doubling cardinality for a timestamp nobody queries."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            metric.samples = [sample for sample in metric.samples if not sample.name.endswith("_created")]
            yield metric


class _BuildInfo(Collector):
    """`tactical_build_info{version, commit}`, read when scraped: the commit asks git (cached once known), which must
    not hold up a worker's start."""

    NAME, DOCUMENTATION = "tactical_build", "The tactical-marl release and commit this worker runs"

    def describe(self) -> Iterator[Metric]:  # the registry's name check, without collecting
        yield InfoMetricFamily(self.NAME, self.DOCUMENTATION)

    def collect(self) -> Iterator[Metric]:
        family = InfoMetricFamily(self.NAME, self.DOCUMENTATION)
        family.add_metric([], {name: value or "unknown" for name, value in release().items()})
        yield family


class UnknownLabelError(ValueError):
    """A label value outside its fixed set: a bug in the caller, refused to keep cardinality bounded."""


def _observe_times(series: Histogram, seconds: float, times: int) -> None:
    """`series.observe(seconds)`, `times` times, as one update of its sum and of its bucket: the same bucket counts,
    and the sum up to rounding (`seconds * times`, not `seconds` added `times` times). Reaches into the histogram's
    values (`_sum`, `_buckets`, `_upper_bounds`: prometheus_client's layout since 0.4; the tests compare the exposition
    with observing one by one)."""
    if not math.isfinite(seconds):  # observe() puts a NaN in no bucket; bisect would put it in one
        for _ in range(times):
            series.observe(seconds)
        return
    series._sum.inc(seconds * times)
    series._buckets[bisect.bisect_left(series._upper_bounds, seconds)].inc(times)


def _check(label: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise UnknownLabelError(f"{label}={value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _state_name(state: str | int, names: Sequence[str], label: str) -> str:
    if isinstance(state, int):
        if not 0 <= state < len(names):
            raise UnknownLabelError(f"{label}={state} is not a code 0..{len(names) - 1}")
        return names[state]
    return _check(label, str(state).lower(), names)


def _or_nan(value: float | None) -> float:
    return NAN if value is None else float(value)


class TacticalMetrics:
    """The worker's metrics. Hot-path methods take whole batches and touch pre-bound series only."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.request_duration = Histogram(
            "tactical_request_duration_seconds",
            "Time spent per stage; end_to_end is stream entry read to decision committed",
            ["operation", "agent_type", "synergy_type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.events_processed = PromCounter(
            "tactical_events_processed_total", "Events handled, by what became of them", ["outcome"], registry=r
        )
        self.errors = PromCounter("tactical_errors_total", "Failures, by operation", ["operation"], registry=r)
        self.error_rate = Gauge(
            "tactical_error_rate",
            "Errors / attempts over the rolling window (0..1), by operation; operation=all is the total",
            ["operation"],
            registry=r,
        )
        self.active_positions = Gauge(
            "tactical_active_positions", "Positions currently open from executed commands", registry=r
        )
        self.model_confidence = Gauge(
            "tactical_model_confidence", "Mean agent confidence over the rolling window (0..1)", registry=r
        )
        self.agent_accuracy = Gauge(
            "tactical_agent_accuracy", "Agent prediction accuracy (0..1)", ["agent_type"], registry=r
        )
        self.execution_rate = Gauge(
            "tactical_execution_rate",
            "Executed / decided (executed + hold) over the rolling window, a ratio 0..1",
            registry=r,
        )
        self.consumer_lag_seconds = Gauge(
            "tactical_redis_consumer_lag_seconds",
            "Age of the oldest entry not yet delivered or still pending in the consumer group",
            registry=r,
        )
        self.consumer_lag_messages = Gauge(
            "tactical_redis_consumer_lag_messages",
            "Entries not yet delivered to the consumer group; NaN when Redis cannot tell",
            registry=r,
        )
        self.model_staleness = Gauge(
            "tactical_model_staleness_seconds",
            "Seconds since the loaded model bundle was last confirmed current and intact",
            registry=r,
        )
        self.health_state = Gauge(
            "tactical_health_state", "Health state: 0 healthy, 1 degraded, 2 critical, 3 failed", registry=r
        )
        self.circuit_breaker_state = Gauge(
            "tactical_circuit_breaker_state", "Circuit breaker: 0 closed, 1 open, 2 half-open", registry=r
        )
        self.duplicate_events = PromCounter(
            "tactical_duplicate_events_total", "Events already decided or in flight elsewhere", registry=r
        )
        self.state_transitions = PromCounter(
            "tactical_state_transitions_total",
            "Health state transitions",
            ["from_state", "to_state"],
            registry=r,
        )
        self.model_info = Info("tactical_model", "The loaded model bundle", registry=r)
        r.register(_BuildInfo())
        self._exposed = _WithoutCreatedSeries(self.registry)
        self._precreate()

    def _precreate(self) -> None:
        self._stages = {series: self.request_duration.labels(*series) for series in STAGE_SERIES}
        self._processed = {outcome: self.events_processed.labels(outcome) for outcome in OUTCOMES}
        self._errors = {operation: self.errors.labels(operation) for operation in ERROR_OPERATIONS}
        self._error_rates = {op: self.error_rate.labels(op) for op in (*ERROR_OPERATIONS, ALL)}
        self._accuracy = {agent: self.agent_accuracy.labels(agent) for agent in AGENT_NAMES}
        for gauge in (*self._error_rates.values(), *self._accuracy.values()):
            gauge.set(NAN)
        for gauge in (
            self.active_positions,
            self.model_confidence,
            self.execution_rate,
            self.consumer_lag_seconds,
            self.consumer_lag_messages,
            self.model_staleness,
            self.health_state,
            self.circuit_breaker_state,
        ):
            gauge.set(NAN)
        for source in HEALTH_STATE_NAMES:
            for target in HEALTH_STATE_NAMES:
                if source != target:
                    self.state_transitions.labels(source, target)
        self.model_info.info({"version": "none"})

    def observe_stage(self, operation: str, seconds: float, synergy_type: str = ALL, agent_type: str = ALL) -> None:
        self._stage_series(operation, agent_type, synergy_type).observe(seconds)

    def _stage_series(self, operation: str, agent_type: str, synergy_type: str) -> Histogram:
        series = self._stages.get((operation, agent_type, synergy_type))
        return series if series is not None else self._new_stage_series(operation, agent_type, synergy_type)

    def _new_stage_series(self, operation: str, agent_type: str, synergy_type: str) -> Histogram:
        key = (
            _check("operation", operation, STAGE_OPERATIONS),
            _check("agent_type", agent_type, (*AGENT_NAMES, ALL)),
            _check("synergy_type", synergy_type, (*SYNERGY_LABELS, ALL)),
        )
        series = self._stages[key] = self.request_duration.labels(*key)
        return series

    def observe_events(
        self, latencies_s: Sequence[float], synergy_types: Sequence[str], outcomes: Iterable[str]
    ) -> None:
        """One batch. `latencies_s[i]` is the end-to-end time of a decided event of type `synergy_types[i]`;
        `outcomes` has one entry per event handled (duplicates and dead letters included)."""
        if len(latencies_s) != len(synergy_types):
            raise ValueError(
                f"{len(latencies_s)} latencies for {len(synergy_types)} synergy types: one each per decision"
            )
        # A batch's events share one latency: one update per (latency, type), not one observe per event (~2.7 µs).
        for (seconds, synergy), times in Counter(zip(latencies_s, synergy_types, strict=True)).items():
            _observe_times(self._stage_series("end_to_end", ALL, synergy), seconds, times)
        for outcome, count in Counter(outcomes).items():
            series = self._processed.get(outcome)
            if series is None:
                _check("outcome", outcome, OUTCOMES)
            else:
                series.inc(count)
            if outcome == EventOutcome.DUPLICATE:
                self.duplicate_events.inc(count)

    def observe_stages(self, stage_seconds: Mapping[str, float], decided: int) -> None:
        """One batch's stage times, each observed once per decided event of the batch, as `end_to_end` is: every
        event of the batch waited the whole stage. Weighted per batch instead, a stage's quantiles would describe
        batches beside end_to_end's events (one slow batch of 1 event reading P99 like a hundred); weighted alike,
        they describe the same events, and a stage's quantile never reads above end_to_end's. A batch that decided
        nothing (only duplicates or dead letters) adds to neither."""
        if decided <= 0:
            return
        for stage in PIPELINE_STAGES:
            seconds = stage_seconds.get(stage)
            if seconds is not None:
                _observe_times(self._stages[(stage, ALL, ALL)], seconds, decided)

    def record_error(self, operation: str, count: int = 1) -> None:
        series = self._errors.get(operation)
        if series is None:
            _check("operation", operation, ERROR_OPERATIONS)
        else:
            series.inc(count)

    def record_transition(self, from_state: str | int, to_state: str | int) -> None:
        """Count one health transition; states by name (any case) or code 0..3."""
        self.state_transitions.labels(
            _state_name(from_state, HEALTH_STATE_NAMES, "from_state"),
            _state_name(to_state, HEALTH_STATE_NAMES, "to_state"),
        ).inc()

    def set_health_state(self, code: int) -> None:
        _state_name(code, HEALTH_STATE_NAMES, "health_state")
        self.health_state.set(code)

    def set_breaker_state(self, code: int) -> None:
        _state_name(code, BREAKER_STATE_NAMES, "circuit_breaker_state")
        self.circuit_breaker_state.set(code)

    def set_consumer_lag(self, seconds: float | None, messages: int | None) -> None:
        """None means unknown (e.g. XINFO GROUPS lag is null) and reads NaN, never 0."""
        self.consumer_lag_seconds.set(_or_nan(seconds))
        self.consumer_lag_messages.set(_or_nan(messages))

    def set_model(self, version: str, staleness_s: float | None) -> None:
        """The loaded bundle: one version label at a time (the previous one disappears)."""
        self.model_info.info({"version": version})
        self.model_staleness.set(_or_nan(staleness_s))

    def set_model_staleness(self, seconds: float | None) -> None:
        self.model_staleness.set(_or_nan(seconds))

    def set_active_positions(self, count: int | None) -> None:
        self.active_positions.set(_or_nan(count))

    def set_agent_accuracy(self, agent_type: str, accuracy: float | None) -> None:
        series = self._accuracy.get(agent_type)
        if series is None:
            _check("agent_type", agent_type, AGENT_NAMES)
        else:
            series.set(_or_nan(accuracy))

    def publish_window(self, stats: WindowStats) -> None:
        """Copy the rolling window's rates into their gauges (cheap: call it once per batch or per second)."""
        self._error_rates[ALL].set(stats.error_rate)
        for operation, series in self._error_rates.items():
            if operation != ALL:
                series.set(stats.error_rates.get(operation, 0.0))
        self.model_confidence.set(stats.mean_confidence)
        self.execution_rate.set(stats.execution_rate)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition (body, content type) for GET /metrics."""
        return generate_latest(self._exposed), CONTENT_TYPE


__all__ = [
    "ALL",
    "CONTENT_TYPE",
    "ERROR_OPERATIONS",
    "HEALTH_STATE_NAMES",
    "LATENCY_BUCKETS",
    "OUTCOMES",
    "PIPELINE_STAGES",
    "STAGE_OPERATIONS",
    "STAGE_SERIES",
    "SYNERGY_LABELS",
    "TacticalMetrics",
    "UnknownLabelError",
]
