"""`tacticalctl latency` against the worker's real HTTP server serving a real metrics registry."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from typer.testing import CliRunner, Result

from tacticalctl.app import app
from tests.cli.conftest import Ctl, WorkerAnswers, beat
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
        self._pending: tuple[float, int] | None = (seconds, count)

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


# ---- latency --all: every live worker, at the endpoint its heartbeat names ---------------------------------------

ServeWorker = Callable[..., tuple[HealthServer, WorkerAnswers]]


def fast(count: int = 100) -> TacticalMetrics:
    """A worker's metrics after `count` decisions of 3 ms each, their stages inside them."""
    metrics = TacticalMetrics()
    observe(metrics, 0.003, count)
    metrics.observe_stages({"validate": 0.0002, "inference": 0.002, "aggregate": 0.0003, "commit": 0.0005}, count)
    return metrics


def row(result: Result, consumer: str) -> str:
    """The table's row of `consumer` (indented, as the lines under the table are not): its one line."""
    rows = [line for line in result.stdout.splitlines() if line.startswith(" ") and line.split()[:1] == [consumer]]
    assert len(rows) == 1, f"no one line for {consumer}:\n{result.stdout}"
    return rows[0]


def said(result: Result) -> str:
    return " ".join(result.stdout.split())


def cells_of(ctl: Ctl, url: str) -> list[str]:
    """p50, p99 and slowest stage with its p99, as `latency --all` shows them, from what `latency` says of the worker
    at `url` alone."""
    operations = json.loads(ctl("latency", "--json", worker_url=url).stdout)["operations"]
    end_to_end = next(op for op in operations if op["operation"] == "end_to_end")
    stage = max((op for op in operations if op["operation"] != "end_to_end" and op["agent_type"] == "all"
                 and op["p99_ms"] is not None), key=lambda op: op["p99_ms"])
    return [f"{end_to_end['p50_ms']:.2f}", f"{end_to_end['p99_ms']:.2f}", stage["operation"], f"{stage['p99_ms']:.2f}"]


def test_latency_all_reads_every_live_worker_and_names_the_slow_one(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker, nobody_url: str
) -> None:
    slow = fast(95)
    observe(slow, 0.6, 5)  # P99 beyond 100 ms: critical
    a, _ = serve_worker("host-a:101", metrics=fast())
    b, _ = serve_worker("host-b:202", metrics=slow)
    beat(redis_client, "host-a:101", a.url)
    beat(redis_client, "host-b:202", b.url)
    # --worker-url names nobody: --all reads every worker where its own heartbeat says it serves.
    result = ctl("latency", "--all", worker_url=nobody_url)
    assert result.exit_code == 2, result.output
    first, second = row(result, "host-a:101").split(), row(result, "host-b:202").split()
    assert first == ["host-a:101", "100", *cells_of(ctl, a.url), "ok"], result.stdout
    assert second == ["host-b:202", "100", *cells_of(ctl, b.url), "critical"], result.stdout
    assert float(second[3]) > 100, "its P99 says why"
    assert "2 live workers: 1 ok, 1 critical" in said(result), result.stdout
    assert (f"host-b:202, critical: end_to_end p50 {second[2]} ms p99 {second[3]} ms" in said(result)
            and f"`tacticalctl --worker-url {b.url} latency --window 30`" in said(result)
            and "triage p99-latency" in said(result)), result.stdout
    assert "host-a:101," not in said(result)

    slow_p50 = TacticalMetrics()
    observe(slow_p50, 0.07, 100)  # P50 beyond 50 ms, P99 within 100 ms: a warning
    b.stop()
    c, _ = serve_worker("host-b:202", metrics=slow_p50)
    beat(redis_client, "host-b:202", c.url)
    result = ctl("latency", "--all")
    assert result.exit_code == 1, result.output
    assert row(result, "host-b:202").split()[-1] == "warn" and "triage p50-latency" in said(result), result.stdout


def test_latency_all_fits_80_columns_one_line_per_worker(
    ctl: Ctl, redis_url: str, redis_client: redis.Redis, serve_worker: ServeWorker
) -> None:
    servers = {}
    for consumer in ("3f2a9c1b7d4e:1", "tactical-b.prod:23456"):  # a container's, and a host's with a long PID
        servers[consumer], _ = serve_worker(consumer, metrics=fast())
        beat(redis_client, consumer, servers[consumer].url)
    result = CliRunner().invoke(app, ["--redis-url", redis_url, "latency", "--all"],
                                env={"COLUMNS": "80", "NO_COLOR": "1"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    for consumer, server in servers.items():
        assert row(result, consumer).split() == [consumer, "100", *cells_of(ctl, server.url), "ok"], result.stdout


def test_latency_all_names_a_live_worker_it_cannot_read_as_critical_with_why(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker, nobody_url: str
) -> None:
    a, _ = serve_worker("host-a:101", metrics=fast())
    beat(redis_client, "host-a:101", a.url)
    beat(redis_client, "host-c:303", nobody_url)  # live by its heartbeat, nothing answers there
    beat(redis_client, "host-z:909", a.url)  # elsewhere, bound to 127.0.0.1: from here, host-a answers there
    result = ctl("latency", "--all")
    assert result.exit_code == 2, result.output
    assert row(result, "host-a:101").split()[-1] == "ok", result.stdout
    assert row(result, "host-c:303").split()[-2:] == ["not", "read"], result.stdout
    assert row(result, "host-z:909").split()[-2:] == ["not", "read"], result.stdout
    assert (f"host-c:303 is live by its heartbeat but was not read (critical): worker unreachable at {nobody_url}"
            in said(result)), result.stdout
    assert "host-z:909 is live by its heartbeat but was not read (critical)" in said(result)
    assert "answered as host-a:101" in said(result), "host-a's latency is not host-z's"

    doc = json.loads(ctl("latency", "--all", "--json").stdout)
    workers = {worker["consumer"]: worker for worker in doc["workers"]}
    assert doc["status"] == "critical"
    assert workers["host-c:303"]["status"] == "critical" and workers["host-c:303"]["operations"] == []
    assert workers["host-c:303"]["error"].startswith(f"worker unreachable at {nobody_url}")
    assert workers["host-z:909"]["status"] == "critical" and workers["host-z:909"]["operations"] == []


def test_latency_all_of_a_worker_without_the_histogram_is_unknown_unless_worse(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker
) -> None:
    a, _ = serve_worker("host-a:101", metrics=fast())
    b, _ = serve_worker("host-b:202", metrics=NoHistogram())
    beat(redis_client, "host-a:101", a.url)
    beat(redis_client, "host-b:202", b.url)
    result = ctl("latency", "--all")
    assert result.exit_code == 3, result.output
    assert "no histogram" in row(result, "host-b:202") and "tactical_request_duration_seconds" in said(result)

    slow = TacticalMetrics()
    observe(slow, 0.6, 10)
    c, _ = serve_worker("host-c:303", metrics=slow)
    beat(redis_client, "host-c:303", c.url)
    assert ctl("latency", "--all").exit_code == 2


class NoHistogram(TacticalMetrics):
    """An endpoint that answers /health as a worker but whose /metrics carries nothing."""

    def render(self) -> tuple[bytes, str]:
        return b"", super().render()[1]


def test_latency_all_with_no_live_worker_is_critical_and_says_so(
    ctl: Ctl, redis_client: redis.Redis, served: tuple[str, TacticalMetrics]
) -> None:
    url, metrics = served  # answers at --worker-url, but beats in no heartbeat
    observe(metrics, 0.003, 10)
    result = ctl("latency", "--all", worker_url=url)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "no live worker" in result.stderr and "`tacticalctl triage worker-down`" in result.stderr, result.stderr
    doc = json.loads(ctl("latency", "--all", "--json", worker_url=url).stdout)
    assert doc["status"] == "critical" and "no live worker" in doc["error"]


def test_latency_all_json_has_the_documented_shape(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker
) -> None:
    a, _ = serve_worker("host-a:101", metrics=fast())
    beat(redis_client, "host-a:101", a.url)
    beat(redis_client, "host-d:404", None)  # its first beats come before it serves HTTP: shown, not judged
    result = ctl("latency", "--all", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"workers", "status"} and doc["status"] == "ok"
    read, starting = doc["workers"]  # by consumer name
    single = json.loads(ctl("latency", "--json", worker_url=a.url).stdout)["operations"]
    assert read == {"consumer": "host-a:101", "host": "host-a", "pid": 101, "url": a.url, "status": "ok",
                    "error": None, "operations": single}
    assert starting == {"consumer": "host-d:404", "host": "host-d", "pid": 404, "url": None, "status": None,
                        "error": starting["error"], "operations": []}
    assert "names no HTTP endpoint yet" in starting["error"]
    assert "starting" in row(ctl("latency", "--all"), "host-d:404")


class RecordsScrapes(ObservedAfterFirstScrape):
    """Records when each scrape was rendered."""

    def __init__(self, seconds: float, count: int) -> None:
        super().__init__(seconds, count)
        self.scraped_at: list[float] = []

    def render(self) -> tuple[bytes, str]:
        self.scraped_at.append(time.monotonic())
        return super().render()


def test_latency_all_window_scrapes_every_worker_around_the_same_window(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker
) -> None:
    fast_in_window, slow_in_window = RecordsScrapes(0.004, 40), RecordsScrapes(0.6, 30)
    observe(fast_in_window, 0.6, 50)  # slow before the window: not in it
    a, _ = serve_worker("host-a:101", metrics=fast_in_window)
    b, _ = serve_worker("host-b:202", metrics=slow_in_window)
    beat(redis_client, "host-a:101", a.url)
    beat(redis_client, "host-b:202", b.url)
    result = ctl("latency", "--all", "--window", "1", "--json")
    assert result.exit_code == 2, result.output
    workers = {worker["consumer"]: worker for worker in json.loads(result.stdout)["workers"]}
    counts = {name: next(op["count"] for op in worker["operations"] if op["operation"] == "end_to_end")
              for name, worker in workers.items()}
    assert counts == {"host-a:101": 40, "host-b:202": 30}
    assert (workers["host-a:101"]["status"], workers["host-b:202"]["status"]) == ("ok", "critical")
    # Both first scrapes, then the one window, then both second scrapes: never one worker's window after the other's.
    [a_first, a_second], [b_first, b_second] = fast_in_window.scraped_at, slow_in_window.scraped_at
    assert max(a_first, b_first) < min(a_second, b_second)
    assert min(a_second, b_second) - max(a_first, b_first) >= 1.0
