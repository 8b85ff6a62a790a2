"""Triage's pure parts: alert names, what a health document calls for, JIT logs, and check results."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import yaml

from worker.ops.checks import Status, Verdict, check, jit_log_status, worst
from worker.ops.sources import RedisUnavailable
from worker.ops.triage import PLAYBOOKS, UnknownAlert, alert_names, alerts_from_state, resolve_alert
from worker.ops.worker_client import WorkerUnreachable

ALERT_RULES = Path(__file__).resolve().parents[2] / "runbook" / "prometheus" / "alerts.yml"
RUNBOOK_ALERTS = ("p99-latency", "p50-latency", "consumer-lag", "model-staleness", "error-rate", "low-confidence",
                  "breaker-open", "duplicate-processing", "health-stuck", "model-compilation")


def test_every_runbook_alert_has_a_playbook() -> None:
    assert set(RUNBOOK_ALERTS) <= set(alert_names())
    for name in RUNBOOK_ALERTS:
        assert resolve_alert(name).name == name


def test_every_prometheus_alert_resolves() -> None:
    rules = [rule["alert"] for group in yaml.safe_load(ALERT_RULES.read_text())["groups"] for rule in group["rules"]]
    assert len(rules) == 13
    for alert in rules:
        playbook = resolve_alert(alert)
        assert alert in playbook.aliases
        assert resolve_alert(alert.lower()) is playbook


def test_each_prometheus_alert_triages_to_its_own_severity_and_runbook_section() -> None:
    for group in yaml.safe_load(ALERT_RULES.read_text())["groups"]:
        for rule in group["rules"]:
            playbook = resolve_alert(rule["alert"])
            assert playbook.severity == rule["labels"]["severity"], rule["alert"]
            assert playbook.runbook == rule["annotations"]["runbook_url"], rule["alert"]


def test_names_are_forgiving_about_case_and_separators() -> None:
    assert resolve_alert("P99_LATENCY").name == "p99-latency"
    assert resolve_alert(" Breaker-Open ").name == "breaker-open"


def test_an_unknown_alert_lists_the_known_ones() -> None:
    with pytest.raises(UnknownAlert, match=r"p99-latency.*model-compilation"):
        resolve_alert("disk-full")


def test_playbooks_have_diagnosis_and_actions() -> None:
    for playbook in PLAYBOOKS:
        assert playbook.probes and playbook.actions, playbook.name
        assert playbook.severity in ("P0", "P1", "P2")


def healthy_state(**changes: object) -> dict:
    state = {"state": "healthy", "state_code": 0,
             "window": {"p50_ms": 2.0, "p99_ms": 5.0, "error_rate": 0.0, "mean_confidence": 0.8},
             "model": {"staleness_s": 3.0, "problem": None}, "circuit_breaker": {"state": "closed"}}
    state.update(changes)
    return state


def test_a_healthy_document_calls_for_nothing() -> None:
    assert alerts_from_state(healthy_state()) == []


def test_each_threshold_crossed_calls_for_its_alert() -> None:
    def called(**changes: object) -> list[str]:
        return [name for name, _ in alerts_from_state(healthy_state(**changes))]

    assert called(window={"p50_ms": 20.0, "p99_ms": 150.0}) == ["p99-latency"]
    assert called(window={"p50_ms": 60.0, "p99_ms": 90.0}) == ["p50-latency"]
    assert called(window={"p50_ms": 1.0, "p99_ms": 100.0}) == []  # at the threshold is still fine
    assert called(model={"staleness_s": 901.0}) == ["model-staleness"]
    assert called(model={"staleness_s": 4.0, "problem": "CURRENT names 'v9', which has no manifest"}) == [
        "model-staleness"]
    assert called(window={"error_rate": 0.06}) == ["error-rate"]
    assert called(window={"mean_confidence": 0.55}) == ["low-confidence"]
    assert called(circuit_breaker={"state": "open"}) == ["breaker-open"]
    assert called(state="failed", state_code=3) == ["health-stuck"]


def test_a_degraded_worker_names_the_alert_of_each_failing_check() -> None:
    # What the worker judged is what triage picks: also checks the window's figures do not show.
    def check(name: str, status: str, message: str = "m") -> dict:
        return {"name": name, "status": status, "value": None, "threshold": None, "message": message}

    def called(state_code: int, *checks: dict) -> list[tuple[str, str]]:
        return alerts_from_state(healthy_state(state="degraded", state_code=state_code,
                                               health_checks=[check("latency", "ok"), *checks]))

    rate = check("event_rate", "warn", "processing 1.0 events/s < 50/s with 73 entries waiting")
    assert called(1, rate) == [("event-rate", "event_rate: processing 1.0 events/s < 50/s with 73 entries waiting")]
    assert [name for name, _ in called(1, check("consumer_lag", "warn"))] == ["consumer-lag-warning"]
    assert [name for name, _ in called(2, check("consumer_lag", "critical"))] == ["health-stuck", "consumer-lag"]
    assert [name for name, _ in called(1, check("redis", "warn"))] == ["health-transitions"]
    assert [name for name, _ in called(1)] == ["health-transitions"]  # degraded, whatever the reason: never "nothing"
    assert alerts_from_state(healthy_state(health_checks=[check("latency", "ok")])) == []


def test_jit_log_status(tmp_path: Path) -> None:
    assert not jit_log_status(tmp_path).exists
    (tmp_path / "jit_compilation.log").write_text("compiling fvg\nJIT compilation successful\n")
    assert jit_log_status(tmp_path).successful
    (tmp_path / "jit_compilation.log").write_text("compiling fvg\nJIT compilation FAILED: RuntimeError: boom\n")
    status = jit_log_status(tmp_path)
    assert status.exists and not status.successful
    assert status.failure is not None and "boom" in status.failure


def test_a_check_turns_unreachable_services_and_broken_answers_into_results() -> None:
    @check("example", "threshold text")
    def decide(kind: str) -> Verdict:
        if kind == "redis":
            raise RedisUnavailable("Redis unreachable at redis://x:1/2: refused")
        if kind == "worker":
            raise WorkerUnreachable("worker unreachable at http://x:1/health: refused")
        if kind == "broken":
            raise KeyError("window")
        return Verdict(Status.OK, "fine")

    assert decide("ok").as_dict() == {"step": "example", "status": "ok", "value": "fine",
                                      "threshold": "threshold text", "next_action": "", "details": {}}
    assert decide("redis").status is Status.CRITICAL
    assert "refused" in decide("redis").value
    assert decide("worker").status is Status.CRITICAL
    assert decide("broken").status is Status.UNKNOWN


def test_worst_orders_like_the_exit_codes() -> None:
    assert worst([Status.OK, Status.UNKNOWN]) is Status.UNKNOWN
    assert worst([Status.UNKNOWN, Status.WARN]) is Status.WARN
    assert worst([Status.WARN, Status.CRITICAL, Status.OK]) is Status.CRITICAL
    assert worst([]) is Status.OK


def test_a_worker_that_answers_critical_is_said_to_be_running_not_down() -> None:
    from worker.ops.probes import probe_worker_http

    class AnsweringCritical:
        def health(self) -> tuple[int, dict]:
            return 503, {"state": "critical", "state_code": 2, "consumer": "vm:21996", "model_version": "v1"}

    [finding] = probe_worker_http(AnsweringCritical())  # type: ignore[arg-type]
    assert finding.status is Status.CRITICAL
    assert "it runs and judges itself unhealthy" in finding.summary and "tacticalctl health state" in finding.summary


def transitions_of(*steps: list) -> list[dict]:
    """The transitions a real state machine records for these checks, one evaluation a minute."""
    from worker.health import HealthPolicy, HealthStateMachine

    machine = HealthStateMachine(HealthPolicy(recovery_s=30.0), clock=lambda: 1_000_000.0)
    for minute, checks in enumerate(steps):
        machine.evaluate(checks, now=1_000_000.0 - 600 + 60 * minute)
        machine.evaluate(checks, now=1_000_000.0 - 600 + 60 * minute + 31)  # held: one step better, if better
        machine.evaluate(checks, now=1_000_000.0 - 600 + 60 * minute + 62)
    return machine.snapshot()["recent_transitions"]


def flapping_summary(transitions: list[dict]) -> str:
    from worker.ops.probes import probe_health_state

    class Answering:
        def state(self) -> dict:
            return {"state": "healthy", "state_code": 0, "since": 999_000.0, "health_checks": [],
                    "recent_transitions": transitions}

        def now(self) -> float:
            return 1_000_000.0

    return next(f.summary for f in probe_health_state(Answering()) if "transitions in" in f.summary)  # type: ignore[arg-type]


def test_transitions_are_called_flapping_only_when_one_check_keeps_moving_the_state() -> None:
    from worker.health import check_confidence, check_consumer_lag, check_redis

    ok_but = lambda *failing: [*(c for c in [check_redis(1.0), check_consumer_lag(0.1)]  # noqa: E731
                                 if c.name not in {f.name for f in failing}), *failing]
    low = check_confidence(0.5)  # at warn the whole time: in every reason, moving nothing
    different = transitions_of(ok_but(low, check_consumer_lag(6.0)), ok_but(low), ok_but(low, check_redis(None)),
                               ok_but(low))
    assert "for different causes (consumer_lag, redis), none flapping" in flapping_summary(different)
    same = transitions_of(ok_but(low, check_consumer_lag(6.0)), ok_but(low), ok_but(low, check_consumer_lag(7.0)),
                          ok_but(low))
    assert "consumer_lag flapping around its threshold" in flapping_summary(same)


def test_each_failing_check_names_its_triage() -> None:
    from worker.ops.probes import probe_health_state

    class Answering:
        def state(self) -> dict:
            return {"state": "critical", "state_code": 2, "since": 999_990.0, "recent_transitions": [],
                    "health_checks": [{"name": "consumer_lag", "status": "critical", "message": "lag 6 s > 5 s"},
                                      {"name": "latency", "status": "warn", "message": "P50 60 ms > 50 ms"}]}

        def now(self) -> float:
            return 1_000_000.0

    summaries = [f.summary for f in probe_health_state(Answering())]  # type: ignore[arg-type]
    assert "check consumer_lag: lag 6 s > 5 s — `tacticalctl triage consumer-lag`" in summaries
    assert "check latency: P50 60 ms > 50 ms — `tacticalctl triage p50-latency`" in summaries


@pytest.mark.parametrize(("error", "advice"), [
    (redis.exceptions.NoPermissionError("this user has no permissions to run the 'scan' command"), "runbook/acl"),
    # Redis 7.0's words for a command a script may not run: no NOPERM code
    (redis.ResponseError("The user executing the script can't run this command or subcommand script: "
                         "abc123, on @user_script:12."), "runbook/acl"),
    (redis.ResponseError("DB index is out of range"), "the URL's database does not exist"),
    (redis.ResponseError("Command # 1 (XLEN synergy_events) of pipeline caused error: WRONGTYPE Operation against a "
                         "key holding the wrong kind of value"), "move the key aside"),
    (redis.ReadOnlyError("You can't write against a read only replica."), "takes no writes now"),
    # `backup` "on a replica", as the runbook once said: refused, and the advice was to triage a worker down
    (redis.ReadOnlyError("You can't write against a read only replica."), "run it against the primary"),
    (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "out of memory"),
    (redis.ResponseError("unknown command 'SLOWLOG', with args beginning with: 'GET'"), None),
])
def test_a_refusal_is_told_by_why_and_an_error_of_the_checks_own_is_not_one(error, advice) -> None:
    from worker.connection import refusal_advice

    said = refusal_advice(error)
    assert said is None if advice is None else advice in (said or "")


def test_a_step_that_redis_cannot_run_is_unknown_and_one_it_refuses_is_critical() -> None:
    @check("slowlog")
    def renamed_away() -> Verdict:
        raise redis.ResponseError("unknown command 'SLOWLOG'")

    @check("keys")
    def not_permitted() -> Verdict:
        raise redis.exceptions.NoPermissionError("this user has no permissions to run the 'scan' command")

    assert renamed_away().status is Status.UNKNOWN
    assert not_permitted().status is Status.CRITICAL and "runbook/acl" in not_permitted().next_action


def test_the_slowest_stage_is_one_of_the_hot_path_not_an_agent_probe() -> None:
    from worker.metrics import TacticalMetrics
    from worker.ops.probes import probe_latency
    from worker.ops.worker_client import parse_metrics

    metrics = TacticalMetrics()
    metrics.observe_stages({"validate": 0.0002, "claim": 0.0001, "inference": 0.002, "aggregate": 0.0003,
                            "commit": 0.008}, decided=50)
    for _ in range(3):  # the monitor times the momentum agent alone, slower than any stage an event waits in
        metrics.observe_stage("inference", 0.03, agent_type="momentum")

    class Answering:
        def state(self) -> dict:
            return {"window": {"p50_ms": 5.0, "p99_ms": 6.0}}

        def metrics(self) -> dict:
            return parse_metrics(metrics.render()[0].decode())

    findings = probe_latency(Answering())  # type: ignore[arg-type]
    slowest = next(f for f in findings if "slowest stage" in f.summary)
    assert slowest.summary.startswith("since start, slowest stage: commit p99")
    assert {row["operation"] for row in slowest.evidence["stages"]} == {"validate", "claim", "inference", "aggregate",
                                                                     "commit"}


def test_the_error_rate_step_says_what_failed_from_the_workers_state() -> None:
    from worker.ops.checks import check_error_rate

    class Answering:
        def state(self) -> dict:  # a Redis outage on a quiet stream: every attempt a failed read
            return {"window": {"events": 0, "error_rate": 1.0}, "window_errors": {"read": 12}}

    result = check_error_rate(Answering())  # type: ignore[arg-type]
    assert result.status is Status.WARN
    assert "read 12" in result.value and "Redis failed or refused" in result.value
    assert "data quality" not in result.value
