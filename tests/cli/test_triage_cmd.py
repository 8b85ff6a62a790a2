"""`tacticalctl triage`: the cause named for induced faults, alert names and aliases, exit codes and JSON."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from models.bundle import current_bundle_dir
from tests.cli.conftest import Ctl, WorkerAnswers, counting_worker, worker_url
from tests.cli.streams import deliver_without_ack, publish
from worker.breaker import CircuitBreaker, publish_breaker_state, record_restart
from worker.delivery import ensure_group
from worker.heartbeat import delete_heartbeat, write_heartbeat
from worker.http_server import HealthServer
from worker.metrics import TacticalMetrics
from worker.names import INPUT_STREAM, processing_key
from worker.process import WorkerProcess
from worker.settings import default_models_dir

SHIPPED = current_bundle_dir(default_models_dir())
REPORT_KEYS = {"alert", "title", "severity", "runbook", "status", "reason", "findings", "actions"}


def reports(result) -> dict[str, dict]:
    doc = json.loads(result.stdout)
    assert set(doc) == {"picked", "status", "alerts"}
    for report in doc["alerts"]:
        assert set(report) == REPORT_KEYS
        for finding in report["findings"]:
            assert set(finding) == {"status", "summary", "evidence"}
    return {report["alert"]: report for report in doc["alerts"]}


def summaries(report: dict, status: str) -> list[str]:
    return [f["summary"] for f in report["findings"] if f["status"] == status]


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "models"
    shutil.copytree(SHIPPED, directory / SHIPPED.name)
    (directory / "CURRENT").write_text(SHIPPED.name + "\n")
    return directory


def healthy_worker(client: redis.Redis, answers: WorkerAnswers) -> None:
    """A worker that answers healthy over HTTP and left its heartbeat and closed breaker in Redis."""
    answers.set_state(0, window={"events": 50, "p50_ms": 2.0, "p99_ms": 6.0, "error_rate": 0.0,
                                 "mean_confidence": 0.8, "throughput_per_s": 1.0},
                      model={"version": SHIPPED.name, "staleness_s": 2.0})
    answers.health["consumer"] = "host-a:101"
    write_heartbeat(client, "host-a:101", interval_s=30.0, info={})
    publish_breaker_state(client, "host-a:101", CircuitBreaker())
    ensure_group(client)
    client.slowlog_reset()  # the session's server also ran other tests: their slow commands are not this fault


def test_nothing_wrong_means_no_alert_and_exit_0(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    result = ctl("triage", worker_url=url)
    assert result.exit_code == 0, result.stdout
    assert "no alert condition" in result.stdout
    doc = json.loads(ctl("triage", "--json", worker_url=url).stdout)
    assert doc == {"picked": True, "status": "ok", "alerts": []}


def test_redis_unreachable_is_named_as_the_cause(ctl: Ctl, nobody_url: str) -> None:
    dead_redis = f"redis://127.0.0.1:{nobody_url.rsplit(':', 1)[1]}/2"
    result = ctl("triage", redis_url=dead_redis)
    assert result.exit_code == 2
    assert "Consumer lag > 5 seconds" in result.stdout
    assert "Redis unreachable" in result.stdout
    picked = reports(ctl("triage", "--json", redis_url=dead_redis))
    lag = picked["consumer-lag"]
    assert lag["reason"].startswith("Redis unreachable")
    assert any(s.startswith("Redis unreachable at redis://127.0.0.1:") and "neither read events nor commit" in s
               for s in summaries(lag, "critical"))
    assert lag["status"] == "critical"


def test_a_tampered_bundle_is_named_with_its_file(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers], models_dir: Path
) -> None:
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    path = models_dir / SHIPPED.name / "fvg.pt"
    path.write_bytes(path.read_bytes() + b"\x00")

    result = ctl("triage", "model-compilation", "--models-dir", str(models_dir), worker_url=url)
    assert result.exit_code == 2
    assert "fvg.pt" in result.stdout and "SHA-256 mismatch" in result.stdout
    assert "tacticalctl models rollback" in result.stdout

    picked = reports(ctl("triage", "--models-dir", str(models_dir), "--json", worker_url=url))
    assert list(picked) == ["model-compilation"]
    assert "fvg.pt" in picked["model-compilation"]["reason"]
    assert any("fvg.pt" in s for s in summaries(picked["model-compilation"], "critical"))
    # Pasted as shown, every suggested models command acts on these bundles, not the shipped ones.
    said = json.dumps(picked["model-compilation"])
    commands = re.findall(r"`([^`]*tacticalctl models [^`]*)`", said)
    assert commands and all(c.endswith(f"--models-dir {models_dir}") for c in commands), commands


def test_stale_processing_keys_of_a_dead_owner_are_named(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    for cid in ("evt-1", "evt-2"):
        redis_client.set(processing_key(cid), f"crashed-worker:42|{int(time.time() * 1000) - 60000}-0")

    result = ctl("triage", "duplicate-processing", worker_url=url)
    assert result.exit_code == 1
    assert "2 stale processing key(s) whose owner has no heartbeat: crashed-worker:42 (2)" in result.stdout
    assert "tacticalctl keys clean --yes" in result.stdout

    picked = reports(ctl("triage", "--json", worker_url=url))
    assert list(picked) == ["duplicate-processing"]
    assert picked["duplicate-processing"]["reason"] == "2 stale processing key(s) with a dead owner"
    alias = reports(ctl("triage", "TacticalDuplicateEvents", "--json", worker_url=url))
    assert list(alias) == ["duplicate-processing"]


def test_an_id_resent_in_the_window_is_named_as_the_duplicate_alert_would(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    """TacticalDuplicateEvents fires on the workers' counter; `duplicates` and market-check read the ids resent in
    the last 15 minutes: the triage of the current state does too, not "no alert condition"."""
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    for _ in range(3):
        publish(redis_client, 1, prefix="resent")

    picked = reports(ctl("triage", "--json", worker_url=url))
    assert list(picked) == ["duplicate-processing"]
    assert picked["duplicate-processing"]["reason"] == "1 correlation id(s) sent more than once in the last 15 minutes"


def test_a_fleet_at_the_restart_limit_is_named_as_breaker_status_warns(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    now = time.time()
    for n in range(5):  # the default limit: the breaker stays closed, the next start opens it
        record_restart(redis_client, f"w-{n}", now - n, window_s=300.0)

    picked = reports(ctl("triage", "--json", worker_url=url))
    assert "breaker-open" in picked
    reason = "5 restarts reach the limit of 5: the next worker start opens the breaker"
    assert picked["breaker-open"]["reason"] == reason


def test_entries_held_by_a_dead_consumer_are_named_for_consumer_lag(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    publish(redis_client, 4)
    deliver_without_ack(redis_client, "gone-worker:7", 4)
    doc = reports(ctl("triage", "TacticalConsumerLagCritical", "--json", worker_url=url))
    lag = doc["consumer-lag"]
    assert any("gone-worker:7 has no heartbeat and holds 4 pending entries" in s for s in summaries(lag, "warn"))


def test_a_downstream_readers_own_group_is_not_taken_for_dead_workers(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    publish(redis_client, 3)
    redis_client.xgroup_create(INPUT_STREAM, "downstream", id="0")
    redis_client.xreadgroup("downstream", "reader-1", {INPUT_STREAM: ">"}, count=3)  # never acked: its business
    result = ctl("triage", "worker-down", "--json", worker_url=url)
    report = reports(result)["worker-down"]
    assert not any("reader-1" in s for s in summaries(report, "warn")), report["findings"]
    assert result.exit_code == 0, result.stdout


def test_an_open_breaker_inside_a_running_worker_is_named(
    ctl: Ctl, redis_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    # A restart limit of 0: the worker's own start exceeds it, so its breaker opens and stays open.
    worker = start_worker(redis_url, breaker_restart_limit=0, breaker_reset_timeout_s=600, heartbeat_interval_s=0.5,
                          health_recovery_s=0.5)
    url = worker_url(worker)
    deadline = time.monotonic() + 30
    while "breaker-open" not in reports(ctl("triage", "--json", worker_url=url)):
        assert time.monotonic() < deadline, "triage never picked breaker-open"
        time.sleep(0.3)
    result = ctl("triage", "TacticalCircuitBreakerOpen", worker_url=url)
    assert result.exit_code == 2
    assert f"breaker of {worker.consumer}: open" in result.stdout
    assert "last reason: 1 worker restarts within 300 s exceed the limit of 0" in result.stdout
    assert "tacticalctl breaker reset --yes" in result.stdout


def test_model_staleness_names_a_broken_pipeline(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers], models_dir: Path
) -> None:
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    answers.state["model"] = {"version": SHIPPED.name, "created_at": "2025-06-15T08:00:00+00:00",
                              "staleness_s": 1250.0, "problem": "model bundle not confirmed: CURRENT names 'v9'"}
    (models_dir / "CURRENT").write_text("v9\n")
    result = ctl("triage", "model-staleness", "--models-dir", str(models_dir), "--json", worker_url=url)
    assert result.exit_code == 2
    report = reports(result)["model-staleness"]
    critical = summaries(report, "critical")
    assert any("the model pipeline is broken" in s and "'v9'" in s for s in critical)
    assert any("1250 s ago (> 15 min)" in s for s in critical)


def test_a_critical_state_with_every_check_passing_is_named_as_recovering(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    now = time.time()
    answers.set_state(2, health_checks=[{"name": "redis", "status": "ok", "message": "PING 0.4 ms"}],
                      recovery={"to": "degraded", "better_since": now - 10, "next_step_at": now + 20})
    result = ctl("triage", "health-stuck", worker_url=url)
    assert result.exit_code == 2, result.stdout  # the state is still critical
    assert "recovering: the next step, to degraded, is due in" in result.stdout
    assert "With none failing, the state is recovering on its own" in result.stdout
    state = ctl("health", "state", worker_url=url)
    assert "recovering: next step to degraded at" in state.stdout


def test_a_stuck_health_state_names_each_live_workers_pid_for_py_spy(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    # A hung worker (SIGSTOP, a stuck loop) is what keeps a state stuck; its actions say `py-spy dump --pid <pid>`,
    # and the pid is in its heartbeat: the triage names it, as worker-down's does.
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    answers.set_state(2, health_checks=[{"name": "latency", "status": "critical", "message": "p99 180 ms"}])
    result = ctl("triage", "health-stuck", worker_url=url)
    assert f"host-a:101 (pid {os.getpid()} on {socket.gethostname()}" in " ".join(result.stdout.split()), result.stdout


@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru"])
def test_no_alert_in_the_history_while_redis_refuses_writes_is_not_an_all_clear(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers], policy: str
) -> None:
    # At maxmemory the workers cannot write their P0s: they hold them until Redis takes writes again. An empty
    # history then says nothing about what happened, and must not read as "OK". Under a volatile-* policy Redis
    # refuses writes too once no key it may evict is left (INFO's policy alone said it took them).
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    before = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
    assert before is not None  # the server has the setting
    redis_client.config_set("maxmemory-policy", policy)
    redis_client.config_set("maxmemory", 1)
    try:
        with pytest.raises(redis.OutOfMemoryError):  # what the workers meet
            redis_client.set("tactical:probe", "1")
        report = reports(ctl("triage", "breaker-open", "--json", worker_url=url))["breaker-open"]
    finally:
        redis_client.config_set("maxmemory", 0)
        redis_client.config_set("maxmemory-policy", before)
    [held] = [s for s in summaries(report, "warn") if "P0/P1" in s]
    assert "Redis refuses writes now" in held and "hold the alerts" in held, held
    assert not [s for s in summaries(report, "ok") if "P0/P1" in s]


def test_an_unknown_alert_is_one_line_and_exit_3(ctl: Ctl) -> None:
    result = ctl("triage", "disk-full")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "p99-latency" in result.stderr


def test_a_named_alert_always_reports_even_when_fine(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    result = ctl("triage", "p99-latency", worker_url=url)
    assert "runbook/RUNBOOK.md#p99-latency--100ms" in result.stdout
    assert "last 60 s: p50 2.0 ms, p99 6.0 ms" in result.stdout
    assert "CPU" in result.stdout and "Redis answers PING" in result.stdout
    assert "Escalate to the on-call engineer" in result.stdout
    doc = json.loads(ctl("triage", "TacticalP99LatencyHigh", "--json", worker_url=url).stdout)
    assert doc["picked"] is False and doc["alerts"][0]["alert"] == "p99-latency"
    # (its exit code depends on this machine's load; the breaker's does not)
    breaker = ctl("triage", "breaker-open", worker_url=url)
    assert breaker.exit_code == 0, breaker.stdout
    assert "breaker of host-a:101: closed" in breaker.stdout


def test_a_slow_rate_is_named_only_under_a_backlog(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    # As the worker's event_rate health check judges it: at least 50 entries waiting (one second of work at 50/s).
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    answers.state["window"]["throughput_per_s"] = 10.0
    publish(redis_client, 49)
    quiet = reports(ctl("triage", "event-rate", "--json", worker_url=url))["event-rate"]
    assert any("processing 10.0 events/s" in s for s in summaries(quiet, "ok"))
    # The host's own load is judged in the same report: this machine is shared, so only the rate's verdict is ours.
    assert not [s for s in summaries(quiet, "warn") if "events/s" in s]
    publish(redis_client, 1, prefix="one-more")
    backlog = reports(ctl("triage", "event-rate", "--json", worker_url=url))["event-rate"]
    assert any("processing 10.0 events/s < 50/s with 50 waiting" in s for s in summaries(backlog, "warn"))


def test_a_slow_rate_under_a_backlog_known_only_as_a_bound_is_named_with_its_low_end(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    """612 published, 356 delivered (3 of them pending), Redis's entries-read gone stale (as after a 7.0 restart):
    the count is the bound 256–356 with no figure. The triage took that for no backlog and called 10/s fine."""
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    answers.state["window"]["throughput_per_s"] = 10.0
    publish(redis_client, 612)
    delivered = deliver_without_ack(redis_client, "c1", 356)
    redis_client.xack(INPUT_STREAM, "tactical_group", *delivered[:-3])
    redis_client.execute_command("XGROUP", "SETID", INPUT_STREAM, "tactical_group", delivered[-1], "ENTRIESREAD", 0)
    report = reports(ctl("triage", "event-rate", "--json", worker_url=url))["event-rate"]
    assert any("processing 10.0 events/s < 50/s with at least 259 waiting" in s for s in summaries(report, "warn")), \
        report


def test_a_worker_gone_without_a_clean_exit_is_named_with_its_pid_and_host(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    # A hung or killed worker's heartbeat expires; the operator looking for the process needs where it ran.
    url, _ = worker_http
    ensure_group(redis_client)
    write_heartbeat(redis_client, "stack-worker-0-0", interval_s=0.05, info={})  # a 125 ms TTL
    write_heartbeat(redis_client, "stopped-cleanly", interval_s=0.05, info={})
    delete_heartbeat(redis_client, "stopped-cleanly")
    time.sleep(0.3)
    report = reports(ctl("triage", "worker-down", "--json", worker_url=url))["worker-down"]
    [finding] = [f for f in report["findings"] if "no worker has a live heartbeat" in f["summary"]]
    assert f"stack-worker-0-0 (pid {os.getpid()} on {socket.gethostname()})" in finding["summary"], finding
    assert "py-spy dump --pid" in finding["summary"]
    assert set(finding["evidence"]["last_seen"]) == {"stack-worker-0-0"}, "a clean exit is not a worker gone"


def test_latency_triage_judges_every_live_worker_not_only_the_one_at_worker_url(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers], nobody_url: str
) -> None:
    """Scaled out, one replica slow (its host, its model) while --worker-url names a fast one: the triage read the
    fast one alone and said OK. Each live worker's heartbeat names its HTTP address; the triage reads them all."""
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    slow = WorkerAnswers()
    slow.set_state(0, consumer="host-b:202", window={"events": 40, "p50_ms": 300.0, "p99_ms": 310.0})
    server = HealthServer("127.0.0.1", 0, metrics=TacticalMetrics(), health_snapshot=lambda: slow.health,
                          state_snapshot=lambda: slow.state).start()
    try:
        write_heartbeat(redis_client, "host-b:202", interval_s=30.0,
                        info={"http": f"0.0.0.0:{server.url.rsplit(':', 1)[1]}"})  # bound to every address, here
        for alert in ("p99-latency", "p50-latency"):
            result = ctl("triage", alert, worker_url=url)
            assert result.exit_code == 2, result.stdout
            assert "host-a:101, last 60 s: p50 2.0 ms, p99 6.0 ms" in result.stdout
            assert "host-b:202, last 60 s: p50 300.0 ms, p99 310.0 ms: p99 > 100 ms" in result.stdout
        doc = json.loads(ctl("triage", "p99-latency", "--json", worker_url=url).stdout)
        [finding] = [f for f in doc["alerts"][0]["findings"] if f["evidence"].get("consumer") == "host-b:202"]
        assert finding["status"] == "critical" and finding["evidence"]["p99_ms"] == 310.0
    finally:
        server.stop()
    # A live worker whose endpoint cannot be read is said, not taken for fast.
    write_heartbeat(redis_client, "host-b:202", interval_s=30.0, info={"http": nobody_url.removeprefix("http://")})
    result = ctl("triage", "p99-latency", worker_url=url)
    assert "host-b:202: latency not judged" in result.stdout and result.exit_code == 1, result.stdout
    # ... unless it is the one at --worker-url: said by the first finding, not waited for twice.
    result = ctl("triage", "p99-latency", worker_url=nobody_url)
    assert "host-b:202: latency not judged" not in result.stdout, result.stdout


def test_worker_down_names_a_worker_killed_while_others_still_beat(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    """Scaled out to two workers, one SIGKILLed: TacticalWorkerDown fires for its instance, and the triage said
    "worker-down: OK, 1 live worker(s)" without a word of the one that died, though its last beat was in Redis."""
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    write_heartbeat(redis_client, "host-b:202", interval_s=2.0, info={})
    redis_client.delete("tactical:heartbeat:host-b:202")  # its TTL ran out: killed, no clean stop
    result = ctl("triage", "worker-down", worker_url=url)
    assert result.exit_code == 1, result.stdout
    assert "host-b:202 (pid" in result.stdout and "without a clean stop" in result.stdout, result.stdout
    report = reports(ctl("triage", "worker-down", "--json", worker_url=url))["worker-down"]
    [gone] = [f for f in report["findings"] if f["status"] == "warn"]
    assert list(gone["evidence"]["gone"]) == ["host-b:202"], gone
    # A worker that stopped cleanly leaves no last beat behind: nothing to report.
    redis_client.delete("tactical:lastbeat:host-b:202")
    assert ctl("triage", "worker-down", worker_url=url).exit_code == 0


def test_worker_down_names_a_gone_worker_past_the_window_while_its_port_still_hangs(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers], hung_worker_url: str,
    nobody_url: str
) -> None:
    """A worker SIGSTOPped an hour ago still holds its port and TacticalWorkerDown still fires for it: past the
    15 minutes the triage said "OK, 1 live worker(s)". Its port accepting without answering says it is still there,
    hung; a port nobody holds any more is history."""
    url, answers = worker_http
    healthy_worker(redis_client, answers)
    an_hour_ago = time.time() - 3600
    for address, named in ((hung_worker_url, True), (nobody_url, False)):
        write_heartbeat(redis_client, "host-b:202", interval_s=2.0, info={"http": address.removeprefix("http://")},
                        now=lambda: an_hour_ago)
        redis_client.delete("tactical:heartbeat:host-b:202")  # no beat for an hour, no clean stop
        result = ctl("triage", "worker-down", worker_url=url)
        said = " ".join(result.stdout.split())
        if named:
            assert result.exit_code == 1, result.stdout
            assert "host-b:202 (pid" in said and "still hold their port without answering" in said, said
        else:
            assert result.exit_code == 0 and "host-b:202" not in said, said


def test_worker_down_at_worker_url_names_the_endpoints_of_the_live_workers(
    ctl: Ctl, redis_client: redis.Redis, nobody_url: str
) -> None:
    """--worker-url names no running worker while another beats: the triage said "Start the service" and gave no way
    to reach the live one. Its heartbeat names its endpoint; the finding now carries it."""
    ensure_group(redis_client)
    write_heartbeat(redis_client, "host-c:303", interval_s=30.0, info={"http": "127.0.0.1:18001"})
    result = ctl("triage", "worker-down", worker_url=nobody_url)
    assert "1 live worker(s) by heartbeat: host-c:303 (pid" in result.stdout
    assert "http://127.0.0.1:18001)" in result.stdout, result.stdout
    doc = json.loads(ctl("triage", "worker-down", "--json", worker_url=nobody_url).stdout)
    [beats] = [f for f in doc["alerts"][0]["findings"] if "live worker(s)" in f["summary"]]
    assert beats["evidence"]["endpoints"] == {"host-c:303": "http://127.0.0.1:18001"}


def test_duplicate_triage_sums_the_counter_of_every_live_worker_and_names_those_not_read(
    ctl: Ctl, redis_client: redis.Redis, nobody_url: str
) -> None:
    """Scaled out, each worker counts only the duplicates it caught itself: the triage said "the worker caught 3"
    from the one at --worker-url, and the others' duplicates were left out without a word."""
    ensure_group(redis_client)
    fast, other = counting_worker("host-a:101", 3), counting_worker("host-b:202", 4)
    try:
        write_heartbeat(redis_client, "host-a:101", interval_s=30.0, info={"http": fast.url.removeprefix("http://")})
        write_heartbeat(redis_client, "host-b:202", interval_s=30.0,
                        info={"http": f"0.0.0.0:{other.port}"})  # bound to every address, here
        result = ctl("triage", "duplicate-processing", worker_url=fast.url)
        assert result.exit_code == 0, result.stdout
        assert ("7 duplicate events caught by 2 worker(s) since each started (host-a:101 3, host-b:202 4), each "
                "acked without a second command") in " ".join(result.stdout.split()), result.stdout
        doc = json.loads(ctl("triage", "duplicate-processing", "--json", worker_url=fast.url).stdout)
        [counted] = [f for f in doc["alerts"][0]["findings"] if "workers" in f["evidence"]]
        assert counted["status"] == "ok" and counted["evidence"]["duplicate_events_total"] == 7
        assert [(w["consumer"], w["duplicate_events_total"]) for w in counted["evidence"]["workers"]] == [
            ("host-a:101", 3), ("host-b:202", 4)]

        # A live worker that cannot be read: its duplicates are missing, said as a warning, never taken for 0.
        write_heartbeat(redis_client, "host-c:303", interval_s=30.0, info={"http": nobody_url.removeprefix("http://")})
        result = ctl("triage", "duplicate-processing", worker_url=fast.url)
        assert result.exit_code == 1, result.stdout
        said = " ".join(result.stdout.split())  # a long finding wraps
        assert ("7 duplicate events caught by 2 worker(s) since each started (host-a:101 3, host-b:202 4), each "
                "acked without a second command; not read, so their duplicates are missing from that total: host-c:303 "
                f"(worker unreachable at {nobody_url}/metrics") in said, result.stdout
        doc = json.loads(ctl("triage", "duplicate-processing", "--json", worker_url=fast.url).stdout)
        [counted] = [f for f in doc["alerts"][0]["findings"] if "workers" in f["evidence"]]
        assert counted["status"] == "warn" and counted["evidence"]["duplicate_events_total"] == 7
        [unread] = [w for w in counted["evidence"]["workers"] if w["consumer"] == "host-c:303"]
        assert unread["duplicate_events_total"] is None and unread["error"].startswith("worker unreachable at")
    finally:
        fast.stop()
        other.stop()


def test_an_open_breaker_seen_only_over_http_is_named_with_its_last_reason(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    # Redis refusing writes (OOM): the worker's heartbeat and published breaker lapse, so only its HTTP view says the
    # breaker is open — and why. The actions send the operator to "the breaker's last reason above": it must be there.
    url, answers = worker_http
    answers.set_state(2, circuit_breaker={
        "state": "open", "state_code": 1, "consecutive_failures": 9, "restart_count": 1, "restart_limit": 5,
        "opened_at": 1_700_000_000.0,
        "last_reason": "Redis refused the heartbeat: command not allowed when used memory > 'maxmemory'."})
    ensure_group(redis_client)
    result = ctl("triage", "breaker-open", worker_url=url)
    assert result.exit_code == 2, result.stdout
    assert "breaker (HTTP): open, 9 consecutive failures" in result.stdout
    assert "last reason: Redis refused the heartbeat: command not allowed when used memory" in result.stdout


def test_low_confidence_names_the_agent_from_recent_decisions_old_and_new(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    """Per-agent confidence is read from the decisions stream: entries a worker writes now (binary numbers) and
    entries of a worker before the upgrade (one text field per agent) alike."""
    from tests.unit.test_aggregator import make_event
    from worker.aggregator import AggregatorConfig, aggregate
    from worker.decision_entry import decision_fields
    from worker.names import DECISIONS_STREAM
    from worker.records import AgentVote

    url, answers = worker_http
    healthy_worker(redis_client, answers)
    answers.state["window"] = {"events": 50, "mean_confidence": 0.55}
    confidences = {"fvg": 0.25, "momentum": 0.75, "entry": 1.0}
    votes = [AgentVote(agent, (0.25, 0.5, 0.25), confidence) for agent, confidence in confidences.items()]
    for i in range(3):
        decision = aggregate(make_event(correlation_id=f"low-{i}"), votes, AggregatorConfig(), "v1")
        redis_client.xadd(DECISIONS_STREAM, decision_fields(decision, b"1-1"))  # type: ignore[arg-type]
    redis_client.xadd(DECISIONS_STREAM, {"correlation_id": "older", "confidence_fvg": "0.25",
                                         "confidence_momentum": "0.75", "confidence_entry": "1.0"})

    report = reports(ctl("triage", "low-confidence", "--json", worker_url=url))["low-confidence"]
    [finding] = [f for f in report["findings"] if "mean confidence:" in f["summary"]]
    assert finding["status"] == "warn"
    assert finding["summary"] == "last 4 decisions, mean confidence: fvg 0.25, momentum 0.75, entry 1.00 — low: fvg"
