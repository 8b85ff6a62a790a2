"""`tacticalctl morning-check`, `market-check` and `eod`: exit codes, rows and JSON, against a real Redis, the
worker's real HTTP server answering set documents, and a real worker process."""

from __future__ import annotations

import gzip
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from models.bundle import current_bundle_dir
from tests.cli.conftest import Ctl, WorkerAnswers, counting_worker, worker_url
from tests.cli.streams import publish
from worker.alerts import Severity, publish_alert, recent_alerts
from worker.breaker import CircuitBreaker, publish_breaker_state, record_restart, restart_count
from worker.delivery import ensure_group
from worker.embedded_redis import EmbeddedRedis
from worker.heartbeat import write_heartbeat
from worker.names import COMPLETED_PREFIX, DECISIONS_STREAM, processing_key
from worker.ops.checks import THRESHOLDS
from worker.process import WorkerProcess
from worker.settings import default_models_dir

SHIPPED_VERSION = current_bundle_dir(default_models_dir()).name
STEP_KEYS = {"step", "status", "value", "threshold", "next_action", "details"}


def eventually(check: Callable[[], bool], *, timeout_s: float = 30.0, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.2)


def steps(result) -> dict[str, dict]:
    doc = json.loads(result.stdout)
    assert set(doc) == {"checklist", "status", "generated_at", "steps"}
    for step in doc["steps"]:
        assert set(step) == STEP_KEYS
    return {step["step"]: step for step in doc["steps"]}


def a_live_worker_named(client: redis.Redis, consumer: str) -> None:
    """What a running worker leaves in Redis: its heartbeat and its closed breaker."""
    write_heartbeat(client, consumer, interval_s=30.0, info={})
    publish_breaker_state(client, consumer, CircuitBreaker())


def healthy(answers: WorkerAnswers, **state: object) -> None:
    state.setdefault("model", {"version": SHIPPED_VERSION, "staleness_s": 30.0})
    answers.set_state(0, window={"events": 120, "p50_ms": 3.0, "p99_ms": 9.0, "error_rate": 0.0,
                                 "mean_confidence": 0.74, "throughput_per_s": 2.0},
                      positions={"active": 2, "realised_pnl": 12.5}, **state)
    answers.health["model_version"] = SHIPPED_VERSION


def daily_backup(ctl: Ctl, tmp_path: Path, redis_url: str | None = None) -> Path:
    """The runbook's daily `tacticalctl backup`, which the end-of-day backups step looks for."""
    archive = tmp_path / "backups" / "tactical.tar.gz"
    archive.parent.mkdir(exist_ok=True)
    made = ctl("backup", str(archive), "--no-models", redis_url=redis_url)
    assert made.exit_code == 0, made.stderr
    return archive


# ---- morning-check ---------------------------------------------------------------------------------------------


def not_ok_but_for_load(rows: dict[str, dict]) -> dict[str, str]:
    """The steps not ok, with what they say — but the overnight step judging a worker's p99 over the runbook's bound,
    when the decisions it read say so: on a machine loaded by the rest of the suite one slow event of twenty is the
    p99, and the step is right to call it."""
    bad = {name: f"{row['status']}: {row['value']}" for name, row in rows.items() if row["status"] != "ok"}
    overnight = rows.get("overnight performance")
    if overnight and overnight["status"] != "ok":
        p99 = overnight["details"]["service"]["p99_ms"]
        if p99 is not None and p99 > THRESHOLDS.p99_critical_ms:
            bad.pop("overnight performance")
    return bad


def test_morning_check_against_a_running_worker_is_ok(
    ctl: Ctl, redis_url: str, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    worker = start_worker(redis_url, heartbeat_interval_s=0.5)
    url = worker_url(worker)
    publish(redis_client, 20)
    eventually(lambda: redis_client.xlen(DECISIONS_STREAM) == 20, what="20 decisions")
    deadline, bad = time.monotonic() + 30, {"": "not run"}
    while bad and time.monotonic() < deadline:
        bad = not_ok_but_for_load(steps(ctl("morning-check", "--json", worker_url=url)))
    assert bad == {}, f"no clean morning check in 30 s: {bad}"
    rows = steps(ctl("morning-check", "--json", worker_url=url))
    assert list(rows) == ["worker running", "Redis ping (db 2)", "JIT compilation", "overnight performance",
                          "/health", "/health/state", "stale processing keys", "breaker and alert history"]
    assert not_ok_but_for_load(rows) == {}
    assert rows["overnight performance"]["value"].startswith("20 decisions")
    assert worker.consumer in rows["worker running"]["value"]
    assert SHIPPED_VERSION in rows["JIT compilation"]["value"]

    eventually(lambda: ctl("market-check", worker_url=url).exit_code == 0, what="a clean market check")
    market = steps(ctl("market-check", "--json", worker_url=url))
    assert all(row["status"] == "ok" for row in market.values()), market

    report_dir = tmp_path / "reports"
    redis_client.save()  # the test server runs without AOF or save points: one RDB save, as a deployment has
    daily_backup(ctl, tmp_path)
    eod = ctl("eod", "--report-dir", str(report_dir), "--json", worker_url=url)
    assert eod.exit_code == 0, eod.stdout
    report = json.loads(next(report_dir.glob("tactical-report-*.json")).read_text())
    assert (report["decisions"], report["errors"]["dead_letters"]["count"]) == (20, 0)
    assert report["latency"]["p99_ms"] is not None
    assert report["duplicates"]["duplicate_events_total"] == 0


def test_a_stale_processing_key_makes_the_morning_check_a_warning(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    url, answers = worker_http
    healthy(answers)
    a_live_worker_named(redis_client, "host-a:101")
    redis_client.set(processing_key("evt-17"), "crashed-worker:42|1700000000000-0")
    result = ctl("morning-check", worker_url=url)
    assert result.exit_code == 1
    assert "1 stale processing key(s) owned by crashed-worker:42" in result.stdout
    assert "tacticalctl keys clean" in result.stdout
    rows = steps(ctl("morning-check", "--json", worker_url=url))
    assert {name for name, row in rows.items() if row["status"] != "ok"} == {"stale processing keys"}


def test_the_morning_check_without_a_worker_is_critical(ctl: Ctl) -> None:
    result = ctl("morning-check")
    assert result.exit_code == 2
    rows = steps(ctl("morning-check", "--json"))
    assert rows["worker running"]["status"] == "critical"
    assert rows["worker running"]["value"].startswith("no worker running")
    assert rows["/health"]["status"] == "critical"
    assert rows["Redis ping (db 2)"]["status"] == "ok"


def test_a_hung_worker_is_not_taken_for_a_missing_one(ctl: Ctl, hung_worker_url: str) -> None:
    # Starting another worker is the wrong fix for one that holds its port and does not answer: both the morning
    # check and worker-down triage say it is alive but hung, and how to see what it does.
    rows = steps(ctl("morning-check", "--json", worker_url=hung_worker_url))
    row = rows["worker running"]
    assert row["status"] == "critical" and row["value"].startswith("worker not responding"), row
    assert "hung, stopped or overloaded" in row["next_action"] and "py-spy dump" in row["next_action"], row
    # Every step that asks the worker says the same, in the market check too: none sends the operator to the URL.
    market = steps(ctl("market-check", "--json", worker_url=hung_worker_url))
    asked = [step for step in [*rows.values(), *market.values()] if "did not answer" in step["value"]]
    assert all("--worker-url" not in step["next_action"] for step in asked), asked
    assert sum("py-spy dump" in step["next_action"] for step in asked) >= 5, asked
    result = ctl("triage", "worker-down", "--json", worker_url=hung_worker_url)
    assert result.exit_code == 2
    findings = json.loads(result.stdout)["alerts"][0]["findings"]
    assert any("hung, stopped or overloaded" in f["summary"] for f in findings if f["status"] == "critical"), findings


def test_a_hung_worker_whose_heartbeat_still_lives_is_said_hung(ctl: Ctl, redis_client: redis.Redis,
                                                                 hung_worker_url: str) -> None:
    # Stopped (SIGSTOP) a moment ago, or its HTTP thread stuck while its loop still beats: the heartbeat lives.
    a_live_worker_named(redis_client, "host-a:101")
    row = steps(ctl("morning-check", "--json", worker_url=hung_worker_url))["worker running"]
    assert row["status"] == "critical" and "host-a:101" in row["value"], row
    assert "does not answer" in row["value"] and "py-spy dump" in row["next_action"], row
    assert "--worker-url" not in row["next_action"], "the URL is right: the port answers the connection"


def test_the_morning_check_without_redis_is_critical(ctl: Ctl, nobody_url: str) -> None:
    result = ctl("morning-check", "--json", redis_url=f"redis://127.0.0.1:{nobody_url.rsplit(':', 1)[1]}/2")
    assert result.exit_code == 2
    rows = steps(result)
    assert rows["Redis ping (db 2)"]["status"] == "critical"
    assert "Redis unreachable" in rows["Redis ping (db 2)"]["value"]


# ---- market-check ----------------------------------------------------------------------------------------------


def test_market_check_thresholds(ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]) -> None:
    url, answers = worker_http
    ensure_group(redis_client)
    healthy(answers)
    assert ctl("market-check", worker_url=url).exit_code == 0

    healthy(answers)
    answers.state["window"].update(p50_ms=61.0, p99_ms=90.0)
    result = ctl("market-check", worker_url=url)
    assert result.exit_code == 1
    assert "p50 > 50 ms" in result.stdout

    answers.state["window"].update(p99_ms=140.0)
    rows = steps(ctl("market-check", "--json", worker_url=url))
    assert rows["P99 latency"]["status"] == "critical"
    assert ctl("market-check", worker_url=url).exit_code == 2

    healthy(answers)
    answers.state["window"].update(mean_confidence=0.52, error_rate=0.08)
    rows = steps(ctl("market-check", "--json", worker_url=url))
    assert (rows["model confidence"]["status"], rows["error rate"]["status"]) == ("warn", "warn")


def test_market_check_warns_at_the_restart_limit_as_breaker_status_does(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    url, answers = worker_http
    ensure_group(redis_client)
    healthy(answers)
    a_live_worker_named(redis_client, "host-a:101")
    now = time.time()
    for n in range(5):  # the default limit: closed, but the next worker start opens it
        record_restart(redis_client, f"w-{n}", now - n, window_s=300.0)

    row = steps(ctl("market-check", "--json", worker_url=url))["circuit breaker"]
    assert row["status"] == "warn", row
    assert "at the restart limit (5 starts in 5 min, limit 5): the next worker start opens the breaker" in row["value"]
    assert ctl("breaker", "status", worker_url=url).exit_code == 1


ONE_ROUND_TRIP = (("healthy", "degraded"), ("degraded", "healthy"))
ESCALATED_AND_BACK = (("healthy", "degraded"), ("degraded", "critical"), ("critical", "degraded"),
                      ("degraded", "healthy"))


@pytest.mark.parametrize(("trips", "status"), [((ONE_ROUND_TRIP,), "ok"), ((ESCALATED_AND_BACK,), "ok"),
                                               ((ONE_ROUND_TRIP, ONE_ROUND_TRIP), "warn")])
def test_market_check_calls_a_healthy_state_that_keeps_leaving_and_coming_back_flapping(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers], trips: tuple, status: str
) -> None:
    """Away from healthy and back twice is flapping; once, however many steps it took, is a blip to review."""
    url, answers = worker_http
    ensure_group(redis_client)
    healthy(answers)
    now = time.time()
    moves = [move for trip in trips for move in trip]
    answers.state["recent_transitions"] = [{"at": now - 300 + 20 * i, "from": came_from, "to": to,
                                            "reason": "consumer_lag warn"} for i, (came_from, to) in enumerate(moves)]

    row = steps(ctl("market-check", "--json", worker_url=url))["health state transitions"]

    assert row["status"] == status, row
    assert ("flapping" in row["value"]) is (status == "warn")
    assert f"{len(moves)} transition(s) in 15 min" in row["value"]


def test_market_check_catches_a_second_command_for_one_event(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    url, answers = worker_http
    ensure_group(redis_client)
    healthy(answers)
    for _ in range(2):
        redis_client.xadd("execution_commands", {"correlation_id": "evt-3", "side": "BUY"})
    rows = steps(ctl("market-check", "--json", worker_url=url))
    assert rows["duplicate events"]["status"] == "critical"
    assert "1 repeated command(s)" in rows["duplicate events"]["value"]


def test_market_checks_duplicate_step_counts_every_live_worker(ctl: Ctl, redis_client: redis.Redis) -> None:
    # Scaled out, each worker counts only the copies it caught: the step read the worker at --worker-url alone.
    ensure_group(redis_client)
    here, other = counting_worker("host-a:101", 3), counting_worker("host-b:202", 4)
    try:
        for name, server in (("host-a:101", here), ("host-b:202", other)):
            write_heartbeat(redis_client, name, interval_s=30.0, info={"http": server.url.removeprefix("http://")})
        rows = steps(ctl("market-check", "--json", worker_url=here.url))
        step = rows["duplicate events"]
        assert "7 duplicate events caught by 2 worker(s) since each started (host-a:101 3, host-b:202 4)" in (
            step["value"]), step
        assert step["details"]["duplicate_events_total"] == 7
    finally:
        here.stop()
        other.stop()


def test_market_check_with_the_worker_unreachable_is_critical(ctl: Ctl, redis_client: redis.Redis) -> None:
    ensure_group(redis_client)
    result = ctl("market-check")
    assert result.exit_code == 2
    assert "worker unreachable" in result.stdout


# ---- eod -------------------------------------------------------------------------------------------------------


def test_eod_is_a_dry_run_until_yes_and_audits_what_it_does(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers], tmp_path: Path
) -> None:
    url, answers = worker_http
    healthy(answers)
    a_live_worker_named(redis_client, "host-a:101")
    now = time.time()
    for index in range(3):
        record_restart(redis_client, f"crash-loop:{index}", now - index)
    redis_client.set(processing_key("evt-9"), "crashed-worker:42|1700000000000-0")
    old_decision = f"{int((now - 3 * 86400) * 1000)}-0"
    redis_client.set(COMPLETED_PREFIX + "evt-1", old_decision, ex=3600)
    log_file = tmp_path / "worker.log"
    log_file.write_text("2025-06-15 INFO worker ready\n" * 100)
    report_dir = tmp_path / "reports"
    args = ("eod", "--report-dir", str(report_dir), "--log-file", str(log_file))
    redis_client.save()  # the test server runs without AOF or save points: one RDB save, as a deployment has
    daily_backup(ctl, tmp_path)

    dry = ctl(*args, "--json", worker_url=url)
    assert dry.exit_code == 1
    rows = steps(dry)
    assert rows["old idempotency keys"]["value"].startswith("would delete 1 stale processing, 1 completed")
    assert rows["breaker counters"]["value"] == "would reset 3 restart(s) (dry run)"
    assert redis_client.exists(processing_key("evt-9")) and restart_count(redis_client, 300, time.time()) == 3
    assert [a for a in recent_alerts(redis_client, count=20) if a.severity == "AUDIT" and a.kind != "backup"] == []
    assert (report_dir / "tactical-report-" f"{rows['daily performance report']['details']['report']['date']}.md"
            ).exists()
    [archive] = report_dir.glob("worker.log.*.gz")
    assert gzip.decompress(archive.read_bytes()) == log_file.read_bytes()

    done = ctl(*args, "--yes", worker_url=url)
    assert done.exit_code == 0, done.stdout
    assert not redis_client.exists(processing_key("evt-9"))
    assert not redis_client.exists(COMPLETED_PREFIX + "evt-1")
    assert restart_count(redis_client, 300, time.time()) == 0
    audited = {a.kind for a in recent_alerts(redis_client, count=20) if a.severity == "AUDIT"}
    assert audited == {"backup", "keys_clean", "breaker_reset"}  # the day's backup, then what eod did


@pytest.mark.parametrize(("checklist", "step"), [("morning-check", "/health/state"),
                                                 ("market-check", "health state transitions")])
def test_a_state_recovering_with_every_check_passing_is_not_sent_looking_for_a_failing_check(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers], checklist: str, step: str
) -> None:
    # Right after a restore the worker starts critical (the restored backlog is old), decides it in a second and
    # then steps back one recovery period at a time: no checklist may send the operator after a failing check.
    url, answers = worker_http
    healthy(answers)
    a_live_worker_named(redis_client, "host-a:101")
    now = time.time()
    answers.set_state(1, health_checks=[{"name": "redis", "status": "ok", "message": "PING 0.4 ms"}],
                      recovery={"to": "healthy", "better_since": now - 5, "next_step_at": now + 25})
    row = steps(ctl(checklist, "--json", worker_url=url))[step]
    assert row["status"] == "warn"
    assert "recovering: to healthy in" in row["value"], row
    assert "health state --watch" in row["next_action"] and "failing checks" not in row["next_action"], row

    answers.set_state(1, health_checks=[{"name": "consumer_lag", "status": "warn", "message": "lag 3 s"}])
    row = steps(ctl(checklist, "--json", worker_url=url))[step]
    assert "recovering" not in row["value"] and "failing checks" in row["next_action"], row


def test_eod_after_a_p0_with_only_the_running_workers_starts_counted_has_nothing_to_reset(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers], tmp_path: Path
) -> None:
    # The P0 hold is for a counter a reset would clear; one start per running worker is nothing to clear.
    url, answers = worker_http
    healthy(answers)
    a_live_worker_named(redis_client, "host-a:101")
    record_restart(redis_client, "host-a:101", time.time())
    publish_alert(redis_client, severity=Severity.P0, kind="breaker_open", message="restart limit reached",
                  source="host-a:101")
    row = steps(ctl("eod", "--report-dir", str(tmp_path), "--yes", "--json", worker_url=url))["breaker counters"]
    assert row["status"] == "ok", row
    assert row["value"].startswith("nothing to reset: 1 start(s) counted for 1 running worker(s)"), row
    assert restart_count(redis_client, 300, time.time()) == 1


def test_eod_does_not_reset_the_breaker_counter_after_a_p0(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers], tmp_path: Path
) -> None:
    url, answers = worker_http
    healthy(answers)
    a_live_worker_named(redis_client, "host-a:101")
    for index in range(3):
        record_restart(redis_client, f"crash-loop:{index}", time.time() - index)
    publish_alert(redis_client, severity=Severity.P0, kind="breaker_open", message="restart limit reached",
                  source="host-a:101")
    rows = steps(ctl("eod", "--report-dir", str(tmp_path), "--yes", "--json", worker_url=url))
    assert rows["breaker counters"]["status"] == "warn"
    assert "not reset: 1 P0 alert(s) today" in rows["breaker counters"]["value"]
    assert restart_count(redis_client, 300, time.time()) == 3
    report = rows["daily performance report"]["details"]["report"]
    assert report["alerts_by_severity"] == {"P0": 1}
    assert report["transitions"][0]["kind"] == "breaker_open"


def test_a_current_pointer_to_a_missing_bundle_fails_the_jit_step(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers], tmp_path: Path
) -> None:
    url, answers = worker_http
    healthy(answers)
    a_live_worker_named(redis_client, "host-a:101")
    (tmp_path / "CURRENT").write_text("20990101T000000Z-deadbeef\n")
    result = ctl("morning-check", "--models-dir", str(tmp_path), "--json", worker_url=url)
    assert result.exit_code == 2
    rows = steps(result)
    assert rows["JIT compilation"]["status"] == "critical"
    assert "20990101T000000Z-deadbeef" in rows["JIT compilation"]["value"]


def test_without_current_among_several_bundles_the_checks_name_no_bundle_as_current(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers], tmp_path: Path
) -> None:
    # A worker starting there refuses to guess which bundle trades (exit 3), and a running one keeps its own: the
    # checks must not take the newest bundle for CURRENT and say all is well, or that the worker will pick it up.
    url, answers = worker_http
    healthy(answers)
    a_live_worker_named(redis_client, "host-a:101")
    models_dir = tmp_path / "models"
    for bundle in default_models_dir().iterdir():
        if (bundle / "manifest.json").is_file():
            shutil.copytree(bundle, models_dir / bundle.name)
    assert len(list(models_dir.iterdir())) > 1 and not (models_dir / "CURRENT").exists()
    morning = ctl("morning-check", "--models-dir", str(models_dir), "--json", worker_url=url)
    jit = steps(morning)["JIT compilation"]
    assert jit["status"] == "critical", jit
    assert "no CURRENT file" in jit["value"] and "does not guess" in jit["value"]
    assert morning.exit_code == 2
    eod = ctl("eod", "--report-dir", str(tmp_path / "reports"), "--models-dir", str(models_dir), "--json",
              worker_url=url)
    model = steps(eod)["model update"]
    assert model["status"] == "critical", model
    assert "no CURRENT file" in model["value"] and not model["value"].startswith("CURRENT")


def test_eod_backups_step_warns_when_redis_has_never_persisted_anything(
    ctl: Ctl, worker_http: tuple[str, WorkerAnswers], tmp_path: Path
) -> None:
    # Redis reports its start time as rdb_last_save_time when it never saved: that is not a backup.
    url, answers = worker_http
    healthy(answers)
    with EmbeddedRedis(data_dir=tmp_path / "redis", appendonly=False) as server:  # no AOF, no save points
        def backups() -> dict:
            result = ctl("eod", "--report-dir", str(tmp_path / "reports"), "--json", redis_url=server.url(),
                         worker_url=url)
            return steps(result)["backups"]

        first = backups()
        assert first["status"] == "warn" and first["value"] == "AOF off; last RDB save never: nothing persisted"
        client = redis.Redis.from_url(server.url())
        client.set("x", "1")
        client.save()
        client.close()
        saved = backups()
        assert "last RDB save never" not in saved["value"]
        # Persisted, but the runbook's daily archive never ran.
        assert saved["status"] == "warn" and "no `tacticalctl backup` in 26 h (none recorded)" in saved["value"]
        archive = daily_backup(ctl, tmp_path, redis_url=server.url())
        archived = backups()
        assert archived["status"] == "ok", archived
        assert f"last archive {archive}" in archived["value"]
        assert archived["details"]["last_archive"]["archive"] == str(archive)
        client = redis.Redis.from_url(server.url())
        client.save()  # the key and the backup's audit entry (tactical_alerts)
        client.close()
    # Restarted from its dump.rdb: no save since the start, but one before it (rdb_saves counts since the start).
    with EmbeddedRedis(data_dir=tmp_path / "redis", appendonly=False) as server:
        restarted = backups()
        assert restarted["status"] == "ok", restarted
        assert restarted["value"].startswith(
            "AOF off; last RDB save none since Redis started (it loaded 2 keys from disk); last archive")


def test_eod_model_step_is_critical_when_the_worker_cannot_say_what_it_loaded(
    ctl: Ctl, redis_client: redis.Redis, nobody_url: str, tmp_path: Path
) -> None:
    result = ctl("eod", "--report-dir", str(tmp_path / "reports"), "--json", worker_url=nobody_url)
    model = steps(result)["model update"]
    assert model["status"] == "critical" and "loaded bundle unknown" in model["value"]
    assert result.exit_code == 2


def test_eod_model_step_checks_that_current_verifies_and_is_what_the_worker_runs(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers], tmp_path: Path
) -> None:
    # A worker keeps serving what it loaded when CURRENT changes under it: its staleness stays under 15 minutes
    # for a while, but a restarted worker would refuse CURRENT, or it is not running CURRENT at all.
    url, answers = worker_http
    healthy(answers)
    models_dir = tmp_path / "models"
    shutil.copytree(current_bundle_dir(default_models_dir()), models_dir / SHIPPED_VERSION)
    (models_dir / "CURRENT").write_text(SHIPPED_VERSION + "\n")

    def model_step() -> tuple[int, dict]:
        result = ctl("eod", "--report-dir", str(tmp_path / "reports"), "--models-dir", str(models_dir), "--json",
                     worker_url=url)
        return result.exit_code, steps(result)["model update"]

    assert model_step()[1]["status"] == "ok"
    answers.state["model"] = {"version": "20250101T000000Z-0badc0de", "staleness_s": 40.0,
                              "problem": "model bundle not confirmed, keeping 20250101T000000Z-0badc0de: signature"}
    _code, row = model_step()
    assert row["status"] == "warn", row
    assert "but the worker runs 20250101T000000Z-0badc0de: model bundle not confirmed" in row["value"]
    healthy(answers)
    agent_file = next((models_dir / SHIPPED_VERSION).glob("*.pt"))
    agent_file.write_bytes(agent_file.read_bytes() + b"x")
    code, row = model_step()
    assert row["status"] == "critical", row
    assert f"CURRENT {SHIPPED_VERSION}" in row["value"] and "SHA-256 mismatch" in row["value"]
    assert "a restarted worker refuses it" in row["value"]
    assert code == 2


def test_eod_report_step_is_critical_when_the_day_has_two_commands_for_one_event(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers], tmp_path: Path
) -> None:
    from worker.names import COMMANDS_STREAM

    url, answers = worker_http
    healthy(answers)
    for cid in ("twice", "once", "twice"):
        redis_client.xadd(COMMANDS_STREAM, {"correlation_id": cid, "side": "BUY", "quantity": "1"})
    result = ctl("eod", "--report-dir", str(tmp_path / "reports"), "--json", worker_url=url)
    report = steps(result)["daily performance report"]
    assert report["status"] == "critical" and "with more than one execution command: twice" in report["value"]
    assert result.exit_code == 2


def test_the_daily_report_sums_the_counters_of_every_live_worker_and_names_those_not_read(
    ctl: Ctl, redis_client: redis.Redis, nobody_url: str, tmp_path: Path
) -> None:
    """Scaled out, each worker counts only the duplicates it caught and the errors it met: the report read the worker
    at --worker-url alone, and the others' counts were left out without a word."""
    ensure_group(redis_client)
    here = counting_worker("host-a:101", 3, errors={"validate": 2, "commit": 1})
    other = counting_worker("host-b:202", 4, errors={"validate": 5})
    try:
        write_heartbeat(redis_client, "host-a:101", interval_s=30.0, info={"http": here.url.removeprefix("http://")})
        write_heartbeat(redis_client, "host-b:202", interval_s=30.0, info={"http": f"0.0.0.0:{other.port}"})
        write_heartbeat(redis_client, "host-c:303", interval_s=30.0, info={"http": nobody_url.removeprefix("http://")})
        report_dir = tmp_path / "reports"
        step = steps(ctl("eod", "--report-dir", str(report_dir), "--json", worker_url=here.url))[
            "daily performance report"]
        # A worker not read is a warning: the sums are a floor, not the stack's figures.
        assert step["status"] == "warn", step
        assert "host-c:303" in step["value"], step

        report = json.loads(next(report_dir.glob("tactical-report-*.json")).read_text())
        duplicates = report["duplicates"]
        assert duplicates["duplicate_events_total"] == 7
        assert [(w["consumer"], w["duplicate_events_total"]) for w in duplicates["workers"]] == [
            ("host-a:101", 3), ("host-b:202", 4), ("host-c:303", None)]
        errors = report["errors"]

        def counted(by_operation: dict[str, float] | None) -> dict[str, float] | None:
            return None if by_operation is None else {op: n for op, n in by_operation.items() if n}  # 0 for the rest

        assert counted(errors["worker_errors_total"]) == {"validate": 7, "commit": 1}
        assert [(w["consumer"], counted(w["worker_errors_total"])) for w in errors["workers"]] == [
            ("host-a:101", {"validate": 2, "commit": 1}), ("host-b:202", {"validate": 5}), ("host-c:303", None)]
        [unread] = [w for w in errors["workers"] if w["consumer"] == "host-c:303"]
        assert unread["error"].startswith(f"worker unreachable at {nobody_url}/metrics"), unread

        markdown = next(report_dir.glob("tactical-report-*.md")).read_text()
        assert ("| duplicate events counted by the workers | 7 duplicate events caught by 2 worker(s) since each "
                "started (host-a:101 3, host-b:202 4); not read, so their duplicates are missing from that total: "
                f"host-c:303 (worker unreachable at {nobody_url}/metrics") in markdown, markdown
        assert "## Worker errors by operation (summed over 2 worker(s), each since its start)" in markdown, markdown
        assert "- commit: 1\n- validate: 7\n" in markdown, markdown
        assert ("Not read, so their errors are missing from these sums: host-c:303 (worker unreachable at "
                f"{nobody_url}/metrics") in markdown, markdown
    finally:
        here.stop()
        other.stop()
