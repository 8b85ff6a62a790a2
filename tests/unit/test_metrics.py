"""The metric set operators and alert rules depend on: names, buckets, labels, values."""

from __future__ import annotations

import math
import shutil
import subprocess
from importlib.metadata import version

import pytest
from prometheus_client import REGISTRY

from tests.deploy.deploy_contract import RUNBOOK_METRICS
from worker.metrics import LATENCY_BUCKETS, TacticalMetrics, UnknownLabelError
from worker.records import EventOutcome
from worker.rolling import RollingWindow
from worker.version import build_commit

# The runbook's names, plus those this implementation adds (lag in messages, the loaded model's version, the
# release).
EXPORTED_METRICS = sorted(RUNBOOK_METRICS | {"tactical_redis_consumer_lag_messages", "tactical_model_info",
                                             "tactical_build_info"})


@pytest.fixture
def metrics() -> TacticalMetrics:
    return TacticalMetrics()


def text(metrics: TacticalMetrics) -> str:
    return metrics.render()[0].decode()


def sample(metrics: TacticalMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_every_runbook_metric_is_exposed_before_the_first_event(metrics: TacticalMetrics) -> None:
    body = text(metrics)
    for name in EXPORTED_METRICS:
        assert f"# TYPE {name.removesuffix('_total')} " in body or f"# TYPE {name} " in body, name
        assert f"\n{name}" in body, f"{name} has no sample"


def test_latency_histogram_has_exactly_the_runbook_buckets(metrics: TacticalMetrics) -> None:
    assert LATENCY_BUCKETS == (0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)
    body = text(metrics)
    for le in ("0.001", "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "1.0", "+Inf"):
        labels = f'agent_type="all",le="{le}",operation="end_to_end",synergy_type="TYPE_1"'
        assert f"tactical_request_duration_seconds_bucket{{{labels}}} 0.0" in body
    assert 'le="0.0025"' not in body


def test_exposition_passes_promtool(metrics: TacticalMetrics) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH")
    metrics.observe_events([0.002, 0.03], ["TYPE_1", "manual"], ["executed", "hold", "duplicate"])
    metrics.set_model("v3", 12.5)
    result = subprocess.run([promtool, "check", "metrics"], input=metrics.render()[0], capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_uses_its_own_registry_not_the_global_one() -> None:
    TacticalMetrics()
    TacticalMetrics()  # a second instance would collide in a shared registry
    assert REGISTRY.get_sample_value("tactical_duplicate_events_total") is None


def test_observe_events_counts_outcomes_and_end_to_end_latency_by_synergy_type(
    metrics: TacticalMetrics,
) -> None:
    metrics.observe_events(
        [0.0008, 0.004, 0.06],
        ["TYPE_1", "TYPE_1", "TYPE_3"],
        [EventOutcome.EXECUTED, "hold", "hold", "duplicate", "dead_letter", "duplicate"],
    )

    assert sample(metrics, "tactical_events_processed_total", outcome="executed") == 1
    assert sample(metrics, "tactical_events_processed_total", outcome="hold") == 2
    assert sample(metrics, "tactical_events_processed_total", outcome="duplicate") == 2
    assert sample(metrics, "tactical_events_processed_total", outcome="dead_letter") == 1
    assert sample(metrics, "tactical_duplicate_events_total") == 2
    e2e = {"operation": "end_to_end", "agent_type": "all"}
    assert sample(metrics, "tactical_request_duration_seconds_count", **e2e, synergy_type="TYPE_1") == 2
    assert sample(metrics, "tactical_request_duration_seconds_bucket", **e2e, synergy_type="TYPE_1", le="0.001") == 1
    assert sample(metrics, "tactical_request_duration_seconds_bucket", **e2e, synergy_type="TYPE_3", le="0.05") == 0
    assert sample(metrics, "tactical_request_duration_seconds_bucket", **e2e, synergy_type="TYPE_3", le="0.075") == 1


def _duration_histogram(metrics: TacticalMetrics) -> list[str]:
    return [line for line in text(metrics).splitlines()
            if line.startswith("tactical_request_duration_seconds_") and "_created" not in line]


# 0.005: on a bucket's bound; 0.003: six of it summed one by one is not 6 × 0.003 in floating point.
@pytest.mark.parametrize("seconds", [0.0078125, 0.005, 0.003, 0.0005, 2.0, math.nan])
def test_a_batch_sharing_one_latency_reads_as_its_events_observed_one_by_one(seconds: float) -> None:
    batched, one_by_one = TacticalMetrics(), TacticalMetrics()
    for metrics in (batched, one_by_one):
        metrics.observe_events([0.0041], ["TYPE_2"], ["hold"])  # a sum already running
    batched.observe_events([seconds] * 6 + [0.03], ["TYPE_2"] * 6 + ["TYPE_1"], ["hold"] * 7)
    for latency, synergy in [(seconds, "TYPE_2")] * 6 + [(0.03, "TYPE_1")]:
        one_by_one.observe_events([latency], [synergy], ["hold"])

    def histogram(metrics: TacticalMetrics) -> tuple[list[str], list[float]]:
        lines = _duration_histogram(metrics)
        return [line for line in lines if "_sum{" not in line], [float(line.split()[-1]) for line in lines
                                                               if "_sum{" in line]

    counts, sums = histogram(batched)
    assert counts == histogram(one_by_one)[0]  # every bucket and count exactly
    assert sums == pytest.approx(histogram(one_by_one)[1], rel=1e-12, nan_ok=True)  # the sums up to rounding
    count = sample(batched, "tactical_request_duration_seconds_count", operation="end_to_end", agent_type="all",
                   synergy_type="TYPE_2")
    assert count == (7 if math.isfinite(seconds) else 1)  # NaN falls in no bucket, +Inf's included


# The bounds themselves, between them, beyond the last, below zero, and what is no number: each lands where
# prometheus_client's own observe() puts it.
@pytest.mark.parametrize("seconds", [*LATENCY_BUCKETS, 0.0, 0.0042, 0.0078125, 2.0, 1e9, -0.001, math.inf, math.nan])
def test_a_latency_observed_once_reads_as_prometheus_own_observe_gives_it(seconds: float) -> None:
    ours, theirs = TacticalMetrics(), TacticalMetrics()
    ours.observe_events([seconds], ["TYPE_2"], [])
    theirs.request_duration.labels("end_to_end", "all", "TYPE_2").observe(seconds)

    assert _duration_histogram(ours) == _duration_histogram(theirs)


def test_observe_events_needs_one_synergy_type_per_latency(metrics: TacticalMetrics) -> None:
    with pytest.raises(ValueError, match="2 latencies for 1 synergy types"):
        metrics.observe_events([0.001, 0.002], ["TYPE_1"], [])


def test_a_batch_adds_one_observation_of_each_stage_per_decided_event(metrics: TacticalMetrics) -> None:
    seconds = {"validate": 0.0003, "inference": 0.004, "aggregate": 0.0005, "commit": 0.03}
    metrics.observe_stages(seconds, 100)
    metrics.observe_stages(seconds, 0)  # only duplicates or dead letters: nothing decided, as end_to_end
    one_by_one = TacticalMetrics()
    for _ in range(100):
        for stage, value in seconds.items():
            one_by_one.observe_stage(stage, value)

    for stage, value in seconds.items():
        labels = {"operation": stage, "agent_type": "all", "synergy_type": "all"}
        assert sample(metrics, "tactical_request_duration_seconds_count", **labels) == 100, stage
        assert sample(metrics, "tactical_request_duration_seconds_sum", **labels) == pytest.approx(100 * value)
    def buckets(metrics: TacticalMetrics) -> list[str]:
        return [line for line in text(metrics).splitlines() if "_bucket{" in line or "_count{" in line]

    assert buckets(metrics) == buckets(one_by_one)  # every bucket as if each event were observed alone


def test_stage_timings_per_agent_and_per_batch(metrics: TacticalMetrics) -> None:
    metrics.observe_stage("inference", 0.0004, agent_type="fvg")
    metrics.observe_stage("commit", 0.002)
    metrics.observe_stage("aggregate", 0.0001, synergy_type="TYPE_2")  # allowed, created on first use

    assert (
        sample(
            metrics,
            "tactical_request_duration_seconds_count",
            operation="inference",
            agent_type="fvg",
            synergy_type="all",
        )
        == 1
    )
    assert sample(
        metrics, "tactical_request_duration_seconds_sum", operation="commit", agent_type="all", synergy_type="all"
    ) == pytest.approx(0.002)
    assert (
        sample(
            metrics,
            "tactical_request_duration_seconds_count",
            operation="aggregate",
            agent_type="all",
            synergy_type="TYPE_2",
        )
        == 1
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.observe_stage("corr-123", 0.001), "operation='corr-123'"),
        (lambda m: m.observe_stage("inference", 0.001, agent_type="strategic"), "agent_type='strategic'"),
        (lambda m: m.observe_events([0.001], ["TYPE_9"], []), "synergy_type='TYPE_9'"),
        (lambda m: m.observe_events([], [], ["lost"]), "outcome='lost'"),
        (lambda m: m.record_error("corr-123"), "operation='corr-123'"),
        (lambda m: m.record_transition("healthy", "sleepy"), "to_state='sleepy'"),
        (lambda m: m.set_health_state(4), "health_state=4"),
        (lambda m: m.set_breaker_state(3), "circuit_breaker_state=3"),
        (lambda m: m.set_agent_accuracy("strategic", 0.5), "agent_type='strategic'"),
    ],
)
def test_label_values_outside_their_sets_are_refused(metrics: TacticalMetrics, call, message: str) -> None:
    with pytest.raises(UnknownLabelError, match=message.replace("(", r"\(")):
        call(metrics)
    assert "corr-123" not in text(metrics)


def test_errors_and_transitions_are_counted(metrics: TacticalMetrics) -> None:
    metrics.record_error("commit")
    metrics.record_error("commit", count=2)
    metrics.record_transition("healthy", "degraded")
    metrics.record_transition(1, 2)
    metrics.record_transition("DEGRADED", "critical")

    assert sample(metrics, "tactical_errors_total", operation="commit") == 3
    assert sample(metrics, "tactical_errors_total", operation="inference") == 0
    assert sample(metrics, "tactical_state_transitions_total", from_state="healthy", to_state="degraded") == 1
    assert sample(metrics, "tactical_state_transitions_total", from_state="degraded", to_state="critical") == 2


def is_nan(value: float | None) -> bool:
    """A sample that reads NaN, not a missing one."""
    return value is not None and math.isnan(value)


def test_unmeasured_gauges_read_nan_then_their_values(metrics: TacticalMetrics) -> None:
    assert is_nan(sample(metrics, "tactical_health_state"))
    assert is_nan(sample(metrics, "tactical_model_confidence"))

    metrics.set_health_state(2)
    metrics.set_breaker_state(1)
    metrics.set_active_positions(3)
    metrics.set_agent_accuracy("momentum", 0.61)

    assert sample(metrics, "tactical_health_state") == 2
    assert sample(metrics, "tactical_circuit_breaker_state") == 1
    assert sample(metrics, "tactical_active_positions") == 3
    assert sample(metrics, "tactical_agent_accuracy", agent_type="momentum") == pytest.approx(0.61)
    assert is_nan(sample(metrics, "tactical_agent_accuracy", agent_type="fvg"))


def test_unknown_consumer_lag_is_nan_not_zero(metrics: TacticalMetrics) -> None:
    metrics.set_consumer_lag(1.5, 42)
    assert sample(metrics, "tactical_redis_consumer_lag_seconds") == 1.5
    assert sample(metrics, "tactical_redis_consumer_lag_messages") == 42

    metrics.set_consumer_lag(0.2, None)
    assert is_nan(sample(metrics, "tactical_redis_consumer_lag_messages"))


def test_model_info_carries_one_version_at_a_time(metrics: TacticalMetrics) -> None:
    metrics.set_model("2024-06-01T00-00-00", 30.0)
    metrics.set_model("2024-06-02T00-00-00", 5.0)

    body = text(metrics)
    assert 'tactical_model_info{version="2024-06-02T00-00-00"} 1.0' in body
    assert "2024-06-01" not in body
    assert sample(metrics, "tactical_model_staleness_seconds") == 5.0


def test_publish_window_copies_the_rolling_rates(metrics: TacticalMetrics) -> None:
    now = [100.0]
    window = RollingWindow(60, clock=lambda: now[0])
    window.record_events(["executed", "hold", "hold", "hold"], [0.001] * 4, [0.8, 0.6, 0.7, 0.5])
    window.record_error("inference")

    metrics.publish_window(window.snapshot())

    assert sample(metrics, "tactical_execution_rate") == pytest.approx(0.25)
    assert sample(metrics, "tactical_model_confidence") == pytest.approx(0.65)
    # One failed attempt beside four events handled: 1 / 5.
    assert sample(metrics, "tactical_error_rate", operation="all") == pytest.approx(0.2)
    assert sample(metrics, "tactical_error_rate", operation="inference") == pytest.approx(0.2)
    assert sample(metrics, "tactical_error_rate", operation="commit") == 0.0


def test_series_count_stays_bounded_under_many_events(metrics: TacticalMetrics) -> None:
    before = text(metrics).count("\n")
    for i in range(200):
        metrics.observe_events([0.001 * (i % 7)], ["TYPE_2"], ["executed" if i % 2 else "hold"])
        metrics.observe_stage("inference", 0.0002, agent_type="entry")
        metrics.record_error("validate")

    assert text(metrics).count("\n") == before


def test_the_release_is_exposed(metrics: TacticalMetrics) -> None:
    commit = build_commit() or "unknown"
    assert sample(metrics, "tactical_build_info", version=version("tactical-marl"), commit=commit) == 1.0


def test_the_commit_is_asked_for_when_scraped_not_when_the_worker_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    # It asks git: a slow git (a network home directory) must not hold up a worker's start.
    asked: list[int] = []

    def git_asked() -> str:
        asked.append(1)
        return "0123456789ab"

    monkeypatch.setattr("worker.version.build_commit", git_asked)
    metrics = TacticalMetrics()
    assert asked == []
    assert sample(metrics, "tactical_build_info", version=version("tactical-marl"), commit="0123456789ab") == 1.0
    assert asked
