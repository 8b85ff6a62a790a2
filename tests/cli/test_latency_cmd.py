"""`tacticalctl latency` against the worker's real HTTP server serving a real metrics registry."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.cli.conftest import Ctl
from worker.http_server import HealthServer
from worker.metrics import TacticalMetrics


@pytest.fixture
def served() -> Iterator[tuple[str, TacticalMetrics]]:
    metrics = TacticalMetrics()
    server = HealthServer("127.0.0.1", 0, metrics=metrics, health_snapshot=dict, state_snapshot=dict).start()
    yield server.url, metrics
    server.stop()


def observe(metrics: TacticalMetrics, seconds: float, count: int) -> None:
    for _ in range(count):
        metrics.observe_stage("end_to_end", seconds, synergy_type="TYPE_1")


def test_fast_decisions_exit_0_with_every_operation_listed(ctl: Ctl, served: tuple[str, TacticalMetrics]) -> None:
    url, metrics = served
    observe(metrics, 0.003, 100)
    metrics.observe_stage("inference", 0.0004, agent_type="momentum")
    result = ctl("latency", worker_url=url)
    assert result.exit_code == 0
    for operation in ("end_to_end", "validate", "claim", "inference", "inference (momentum)", "aggregate", "commit"):
        assert operation in result.stdout
    doc = json.loads(ctl("latency", "--json", worker_url=url).stdout)
    assert set(doc) == {"url", "window_s", "status", "thresholds", "operations"}
    assert doc["thresholds"] == {"p50_warn_ms": 50.0, "p99_critical_ms": 100.0}
    end_to_end = next(op for op in doc["operations"] if op["operation"] == "end_to_end")
    assert set(end_to_end) == {"operation", "agent_type", "count", "counted_per", "p50_ms", "p99_ms", "mean_ms",
                               "saturated", "status"}
    assert end_to_end["count"] == 100 and end_to_end["p99_ms"] <= 5.0


def test_each_count_says_what_it_counts_events_or_probes(ctl: Ctl, served: tuple[str, TacticalMetrics]) -> None:
    # As the worker observes them: 100 batches of 100 events each, and 3 probes of one agent alone.
    url, metrics = served
    for _ in range(100):
        metrics.observe_events([0.004] * 100, ["TYPE_1"] * 100, ["hold"] * 100)
        metrics.observe_stages({"validate": 0.0002, "inference": 0.002, "aggregate": 0.0003, "commit": 0.001}, 100)
    for _ in range(3):
        metrics.observe_stage("inference", 0.0004, agent_type="fvg")

    rows = {op["operation"] + ("" if op["agent_type"] == "all" else f" ({op['agent_type']})"):
            (op["count"], op["counted_per"]) for op in json.loads(ctl("latency", "--json", worker_url=url).stdout)
            ["operations"]}
    assert rows["end_to_end"] == (10_000, "events")
    # Each event of a batch waited the batch's whole stage: counted once per event, like end_to_end.
    for stage in ("validate", "inference", "aggregate", "commit"):
        assert rows[stage] == (10_000, "events"), stage
    assert rows["inference (fvg)"] == (3, "probes")

    text = ctl("latency", worker_url=url).stdout
    assert "10000 events" in text and "3 probes" in text and "batches" not in text
    assert "one per decided event" in " ".join(text.split()), "the table says what each row counts"


def test_p50_above_50ms_exits_1(ctl: Ctl, served: tuple[str, TacticalMetrics]) -> None:
    url, metrics = served
    observe(metrics, 0.07, 100)
    result = ctl("latency", worker_url=url)
    assert result.exit_code == 1
    assert "warn" in result.stdout


def test_p99_above_100ms_exits_2(ctl: Ctl, served: tuple[str, TacticalMetrics]) -> None:
    url, metrics = served
    observe(metrics, 0.003, 95)
    observe(metrics, 0.6, 5)
    result = ctl("latency", "--json", worker_url=url)
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["status"] == "critical"


class ObservedAfterFirstScrape(TacticalMetrics):
    """Real metrics that record `count` fast decisions right after the first scrape has been rendered: inside the
    command's window whatever the machine's load, never before it."""

    def __init__(self, seconds: float, count: int) -> None:
        super().__init__()
        self._pending = (seconds, count)

    def render(self) -> tuple[bytes, str]:
        rendered = super().render()
        pending, self._pending = self._pending, None
        if pending is not None:
            observe(self, *pending)
        return rendered


def test_a_window_measures_only_what_happens_in_it(ctl: Ctl) -> None:
    metrics = ObservedAfterFirstScrape(0.004, 40)
    observe(metrics, 0.6, 50)  # a slow morning, before the window
    server = HealthServer("127.0.0.1", 0, metrics=metrics, health_snapshot=dict, state_snapshot=dict).start()
    try:
        result = ctl("latency", "--window", "1", "--json", worker_url=server.url)
        assert result.exit_code == 0, result.stdout
        doc = json.loads(result.stdout)
        end_to_end = next(op for op in doc["operations"] if op["operation"] == "end_to_end")
        assert (doc["window_s"], end_to_end["count"]) == (1.0, 40)
        assert ctl("latency", worker_url=server.url).exit_code == 2  # since start, the slow morning still counts
    finally:
        server.stop()


def test_an_unreachable_worker_is_critical_in_one_line(ctl: Ctl) -> None:
    result = ctl("latency")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("tacticalctl: worker unreachable at ") and result.stderr.count("\n") == 1
