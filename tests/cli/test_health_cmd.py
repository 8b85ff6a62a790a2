"""`tacticalctl health` and `health state` against the worker's real HTTP server: exit codes a monitor reads."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from importlib.metadata import version

import pytest
import redis
from typer.testing import CliRunner, Result

from tacticalctl.app import app
from tacticalctl.health_fleet import NO_LIVE_WORKER
from tests.cli.conftest import Ctl, WorkerAnswers, beat
from worker.http_server import HealthServer
from worker.version import build_commit

ServeWorker = Callable[..., tuple[HealthServer, WorkerAnswers]]


@pytest.mark.parametrize(("state_code", "exit_code", "word"), [(0, 0, "healthy"), (1, 1, "degraded"),
                                                                 (2, 2, "critical"), (3, 2, "failed")])
def test_health_exits_by_state(ctl: Ctl, worker_http: tuple[str, WorkerAnswers], state_code: int, exit_code: int,
                               word: str) -> None:
    url, answers = worker_http
    answers.set_state(state_code)
    result = ctl("health", worker_url=url)
    assert result.exit_code == exit_code
    assert word in result.stdout
    assert "host-a:101" in result.stdout and "v7" in result.stdout


@pytest.mark.parametrize("state_code", [1, 2, 3])
def test_health_that_is_not_healthy_says_where_to_look_next(
    ctl: Ctl, worker_http: tuple[str, WorkerAnswers], state_code: int
) -> None:
    # /health carries no reason: the one line alone leaves the operator (right after a restore, say: critical with
    # every check passing, on its way back) with a state and no idea why or what to run.
    url, answers = worker_http
    answers.set_state(state_code)
    result = ctl("health", worker_url=url)
    assert "`tacticalctl health state`" in result.stdout, result.stdout
    answers.set_state(0)
    assert "health state" not in ctl("health", worker_url=url).stdout


def test_health_of_a_worker_nobody_runs_names_the_triage(ctl: Ctl, nobody_url: str) -> None:
    result = ctl("health", worker_url=nobody_url)
    assert result.exit_code == 2
    assert "`tacticalctl triage worker-down`" in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_health_of_a_worker_nobody_runs_is_critical_in_one_line(ctl: Ctl, nobody_url: str) -> None:
    result = ctl("health", worker_url=nobody_url)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("tacticalctl: worker unreachable at " + nobody_url)
    assert result.stderr.count("\n") == 1


def test_health_json_has_the_documented_keys(ctl: Ctl, worker_http: tuple[str, WorkerAnswers]) -> None:
    url, answers = worker_http
    answers.set_state(1)
    result = ctl("health", "--json", worker_url=url)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert set(doc) == {"url", "http_status", "status", "state", "state_code", "consumer", "version", "commit",
                        "model_version", "uptime_s", "check"}
    assert (doc["http_status"], doc["status"], doc["check"]) == (200, "warn", "warn")
    assert doc["version"] == version("tactical-marl")  # the serving process's release, as it served it
    assert doc["commit"] == build_commit()  # the serving process is this one here


def test_a_worker_whose_snapshot_failed_is_critical(ctl: Ctl, worker_http: tuple[str, WorkerAnswers]) -> None:
    url, answers = worker_http
    answers.health = {"state_code": "broken"}  # the server answers 503 {"status": "fail", "error": ...}
    result = ctl("health", "--json", worker_url=url)
    assert result.exit_code == 2
    assert json.loads(result.stdout)["http_status"] == 503


def test_health_state_shows_checks_transitions_and_breaker(ctl: Ctl, worker_http: tuple[str, WorkerAnswers]) -> None:
    url, answers = worker_http
    answers.set_state(
        2,
        health_checks=[
            {"name": "consumer_lag", "status": "critical", "value": 6.5, "threshold": 5.0,
             "message": "consumer lag 6.5 s > 5 s"},
            {"name": "redis", "status": "ok", "value": 0.4, "threshold": 10.0, "message": "Redis round trip 0.4 ms"},
        ],
        recent_transitions=[{"at": 1_700_000_000.0, "from": "healthy", "to": "critical",
                             "reason": "consumer_lag critical", "actions": ["open_breaker"]}],
        circuit_breaker={"state": "open", "state_code": 1, "consecutive_failures": 5, "restart_count": 2,
                         "restart_limit": 5, "opened_at": 1_700_000_001.0, "last_reason": "5 consecutive failures"},
    )
    result = ctl("health", "state", worker_url=url)
    assert result.exit_code == 2
    out = result.stdout
    assert "consumer_lag" in out and "consumer lag 6.5 s > 5 s" in out
    assert "healthy → critical" in out and "open_breaker" in out
    assert "circuit breaker open" in out and "restarts 2/5" in out and "5 consecutive failures" in out


def test_health_state_json_is_the_worker_document(ctl: Ctl, worker_http: tuple[str, WorkerAnswers]) -> None:
    url, answers = worker_http
    answers.set_state(0)
    result = ctl("health", "state", "--json", worker_url=url)
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert {"state", "state_code", "health_checks", "recent_transitions", "circuit_breaker", "model",
            "lag"} <= set(doc)


def test_health_state_watch_refreshes_and_survives_an_unreachable_worker(ctl: Ctl, nobody_url: str) -> None:
    result = ctl("health", "state", "--watch", "--interval", "0.2", "--duration", "0.5", worker_url=nobody_url)
    assert result.exit_code == 0
    assert "worker unreachable" in result.stdout and "retrying" in result.stdout
    assert result.stdout.endswith("s)\n")  # its last line ends


def test_health_state_of_a_worker_nobody_runs_is_critical(ctl: Ctl, nobody_url: str) -> None:
    result = ctl("health", "state", worker_url=nobody_url)
    assert result.exit_code == 2
    assert "worker unreachable" in result.stderr


@pytest.mark.parametrize("odd", [{"window": "x"}, {"model": ["v7"]}, {"circuit_breaker": {"state_code": "0"}},
                                 {"health_checks": ["ok"]}, {"window": {"p99_ms": "fast"}}])
@pytest.mark.parametrize("command", [("health", "state"), ("market-check",), ("morning-check",),
                                     ("breaker", "status")])
def test_an_answer_that_is_not_the_workers_is_said_in_one_line_not_a_traceback(
    ctl: Ctl, worker_http: tuple[str, WorkerAnswers], odd: dict, command: tuple[str, ...]
) -> None:
    # Something else listening on the worker's port, answering JSON of its own.
    url, answers = worker_http
    answers.state = {**answers.state, **odd}
    result = ctl(*command, "--json", worker_url=url)  # JSON: a table would wrap the message
    assert result.exit_code in (1, 2), result.output
    assert "is not a tactical worker's answer" in result.output, result.output
    assert "is something else listening there?" in result.output


def test_a_number_the_worker_served_as_null_is_still_the_workers_answer(
    ctl: Ctl, worker_http: tuple[str, WorkerAnswers]
) -> None:
    # The worker serves a non-finite float as null (json_safe): a realised PnL gone to inf must not make every
    # check say the worker is unreachable.
    url, answers = worker_http
    answers.state = {**answers.state, "positions": {"active": 2, "realised_pnl": None},
                     "window": {"events": 10, "p99_ms": None}}
    result = ctl("health", "state", "--json", worker_url=url)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["positions"]["realised_pnl"] is None


def said(result: Result) -> str:
    return " ".join(result.stdout.split())


def row(result: Result, consumer: str) -> str:
    """The table's row of `consumer` (its first line)."""
    return next(line for line in result.stdout.splitlines() if line.split()[:1] == [consumer])


def test_health_all_shows_a_row_for_every_live_worker_read_at_its_heartbeats_endpoint(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker, nobody_url: str
) -> None:
    # --worker-url names nobody: --all reads every worker where its own heartbeat says it serves.
    first, _ = serve_worker("host-a:101")
    second, answers = serve_worker("host-b:202")
    answers.health["model_version"] = "v8"
    beat(redis_client, "host-a:101", first.url)
    here = socket.gethostname()
    beat(redis_client, "host-b:202", f"0.0.0.0:{second.port}", host=here)  # bound to every address, here
    result = ctl("health", "--all", worker_url=nobody_url)
    assert result.exit_code == 0, result.output
    a, b = row(result, "host-a:101"), row(result, "host-b:202")
    assert "host-a pid 101" in a and first.url in a and "healthy" in a and "v7" in a, result.stdout
    assert f"{here} pid 202" in b and f"http://127.0.0.1:{second.port}" in b and "healthy" in b and "v8" in b
    assert "2 live workers: 2 healthy" in said(result), result.stdout


def test_health_all_exits_with_the_worst_worker_and_says_where_to_look(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker
) -> None:
    healthy, _ = serve_worker("host-a:101")
    degraded, _ = serve_worker("host-b:202", 1)
    beat(redis_client, "host-a:101", healthy.url)
    beat(redis_client, "host-b:202", degraded.url)
    result = ctl("health", "--all")
    assert result.exit_code == 1, result.output
    assert "degraded" in result.stdout
    assert f"`tacticalctl --worker-url {degraded.url} health state`" in said(result), result.stdout
    assert f"--worker-url {healthy.url} health state" not in said(result)

    critical, _ = serve_worker("host-c:303", 3)
    beat(redis_client, "host-c:303", critical.url)
    assert ctl("health", "--all").exit_code == 2


def test_health_all_names_a_worker_live_by_heartbeat_that_does_not_answer_as_critical(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker, nobody_url: str
) -> None:
    healthy, _ = serve_worker("host-a:101")
    beat(redis_client, "host-a:101", healthy.url)
    beat(redis_client, "host-c:303", nobody_url)
    result = ctl("health", "--all")
    assert result.exit_code == 2, result.output
    unread = row(result, "host-c:303")
    assert "not read" in unread and "worker unreachable" in unread, result.stdout
    assert ("host-c:303 is live by its heartbeat but was not read" in said(result)), result.stdout

    doc = json.loads(ctl("health", "--all", "--json").stdout)
    [unread] = [worker for worker in doc["workers"] if worker["consumer"] == "host-c:303"]
    assert unread["check"] == "critical" and unread["state"] is None
    assert unread["error"].startswith(f"worker unreachable at {nobody_url}/health"), unread


def test_health_all_does_not_take_another_workers_answer_for_this_ones(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker
) -> None:
    # A worker on another host bound to 127.0.0.1: from here its address is this host's worker, which answers with
    # its own name. That worker's health is not the other one's.
    here, _ = serve_worker("host-a:101")
    beat(redis_client, "host-a:101", here.url)
    beat(redis_client, "host-z:909", here.url)
    result = ctl("health", "--all", "--json")
    assert result.exit_code == 2, result.output
    [elsewhere] = [worker for worker in json.loads(result.stdout)["workers"] if worker["consumer"] == "host-z:909"]
    assert elsewhere["check"] == "critical" and elsewhere["state"] is None
    assert "answered as host-a:101" in elsewhere["error"], elsewhere


def test_health_all_shows_a_starting_worker_without_counting_it_as_a_failure(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker
) -> None:
    healthy, _ = serve_worker("host-a:101")
    beat(redis_client, "host-a:101", healthy.url)
    beat(redis_client, "host-d:404", None)  # its first beats come before it serves HTTP
    result = ctl("health", "--all")
    assert result.exit_code == 0, result.output
    assert "starting" in row(result, "host-d:404"), result.stdout


def test_health_all_with_no_live_worker_is_critical_and_names_the_triage(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    url, _ = worker_http  # answers at --worker-url, but beats in no heartbeat
    result = ctl("health", "--all", worker_url=url)
    assert result.exit_code == 2, result.output
    assert "no live worker" in result.stderr and "`tacticalctl triage worker-down`" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    doc = json.loads(ctl("health", "--all", "--json", worker_url=url).stdout)
    assert doc["status"] == "critical" and "tacticalctl triage worker-down" in doc["error"]


def test_health_all_json_has_the_documented_shape(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker, nobody_url: str
) -> None:
    degraded, _ = serve_worker("host-b:202", 1)
    beat(redis_client, "host-b:202", degraded.url)
    beat(redis_client, "host-d:404", None)
    result = ctl("health", "--all", "--json")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"workers", "status"}
    assert doc["status"] == "warn"
    read, starting = doc["workers"]  # by consumer name
    assert read == {"consumer": "host-b:202", "host": "host-b", "pid": 202, "url": degraded.url, "http_status": 200,
                    "state": "degraded", "state_code": 1, "model_version": "v7", "check": "warn", "error": None}
    assert starting == {"consumer": "host-d:404", "host": "host-d", "pid": 404, "url": None, "http_status": None,
                        "state": None, "state_code": None, "model_version": None, "check": None,
                        "error": starting["error"]}
    assert "names no HTTP endpoint yet" in starting["error"]


def headings(result: Result) -> list[str]:
    """The heading of every worker `health state --all` shows, in order."""
    return [line.removeprefix("── ") for line in result.stdout.splitlines() if line.startswith("── ")]


def test_health_state_all_shows_every_live_workers_state_and_exits_with_the_worst(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker, nobody_url: str
) -> None:
    # --worker-url names nobody: --all reads every worker where its own heartbeat says it serves.
    healthy, _ = serve_worker("host-a:101")
    degraded, answers = serve_worker("host-b:202", 1)
    answers.state["health_checks"] = [{"name": "consumer_lag", "status": "warn", "value": 2.5, "threshold": 2.0,
                                       "message": "consumer lag 2.5 s > 2 s"}]
    beat(redis_client, "host-a:101", healthy.url)
    beat(redis_client, "host-b:202", degraded.url)
    result = ctl("health", "state", "--all", worker_url=nobody_url)
    assert result.exit_code == 1, result.output
    assert headings(result) == [f"host-a:101 · host-a pid 101 · {healthy.url}",
                                f"host-b:202 · host-b pid 202 · {degraded.url}"], result.stdout
    out = said(result)
    assert "healthy (state 0)" in out and "degraded (state 1)" in out, result.stdout
    assert "consumer lag 2.5 s > 2 s" in out and out.count("circuit breaker closed") == 2
    assert "2 live workers: 1 healthy, 1 degraded — warn" in out

    critical, _ = serve_worker("host-c:303", 3)
    beat(redis_client, "host-c:303", critical.url)
    assert ctl("health", "state", "--all").exit_code == 2


def test_health_state_all_names_a_live_worker_it_cannot_read_as_critical_with_why(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker, nobody_url: str
) -> None:
    healthy, _ = serve_worker("host-a:101")
    beat(redis_client, "host-a:101", healthy.url)
    beat(redis_client, "host-c:303", nobody_url)  # live by its heartbeat, nothing answers there
    beat(redis_client, "host-d:404", None)  # starting: shown, not judged
    beat(redis_client, "host-z:909", healthy.url)  # elsewhere, bound to 127.0.0.1: from here, host-a answers there
    result = ctl("health", "state", "--all")
    assert result.exit_code == 2, result.output
    assert [heading.split()[0] for heading in headings(result)] == ["host-a:101", "host-c:303", "host-d:404",
                                                                   "host-z:909"], result.stdout
    out = said(result)
    assert (f"not read: live by its heartbeat, but worker unreachable at {nobody_url}/health/state" in out
            and "`tacticalctl triage worker-down`" in out), result.stdout
    assert "starting: its heartbeat names no HTTP endpoint yet" in out and "no endpoint yet" in headings(result)[2]
    assert f"{healthy.url}/health/state answered as host-a:101" in out, "host-a's state is not host-z's"
    assert "4 live workers: 1 healthy, 2 not read, 1 starting — critical" in out

    redis_client.delete("tactical:heartbeat:host-a:101", "tactical:heartbeat:host-c:303",
                        "tactical:heartbeat:host-z:909")
    assert ctl("health", "state", "--all").exit_code == 1, "only starting ones: as `health --all`"


def test_health_state_all_with_no_live_worker_is_critical_and_names_the_triage(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    url, _ = worker_http  # answers at --worker-url, but beats in no heartbeat
    result = ctl("health", "state", "--all", worker_url=url)
    assert result.exit_code == 2, result.output
    assert result.stderr == f"tacticalctl: {NO_LIVE_WORKER}\n", result.stderr
    doc = json.loads(ctl("health", "state", "--all", "--json", worker_url=url).stdout)
    assert doc["status"] == "critical" and "tacticalctl triage worker-down" in doc["error"]


def test_health_state_all_json_has_the_documented_shape(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker, nobody_url: str
) -> None:
    degraded, _ = serve_worker("host-b:202", 1)
    beat(redis_client, "host-b:202", degraded.url)
    beat(redis_client, "host-c:303", nobody_url)
    beat(redis_client, "host-d:404", None)
    result = ctl("health", "state", "--all", "--json")
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"workers", "status"} and doc["status"] == "critical"
    read, unread, starting = doc["workers"]  # by consumer name
    served = json.loads(ctl("health", "state", "--json", worker_url=degraded.url).stdout)
    assert read == {"consumer": "host-b:202", "host": "host-b", "pid": 202, "url": degraded.url, "state": served,
                    "check": "warn", "error": None}
    assert unread == {"consumer": "host-c:303", "host": "host-c", "pid": 303, "url": nobody_url, "state": None,
                      "check": "critical", "error": unread["error"]}
    assert unread["error"].startswith(f"worker unreachable at {nobody_url}/health/state")
    assert starting == {"consumer": "host-d:404", "host": "host-d", "pid": 404, "url": None, "state": None,
                        "check": None, "error": starting["error"]}
    assert "names no HTTP endpoint yet" in starting["error"]


def test_health_state_all_watch_renders_every_worker_and_stops(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker
) -> None:
    a, _ = serve_worker("host-a:101")
    b, _ = serve_worker("host-b:202", 2)
    beat(redis_client, "host-a:101", a.url)
    beat(redis_client, "host-b:202", b.url)
    result = ctl("health", "state", "--all", "--watch", "--interval", "0.2", "--duration", "0.5")
    assert result.exit_code == 0, result.output  # a view: it exits 0, `health state --all` is the check
    assert f"host-a:101 · host-a pid 101 · {a.url}" in result.stdout
    assert f"host-b:202 · host-b pid 202 · {b.url}" in result.stdout and "critical (state 2)" in result.stdout
    assert result.stdout.startswith("2 live workers: 1 healthy, 1 critical — critical\n"), "the verdict first"
    assert result.stdout.endswith("┘\n"), "its last line ends"

    refused = ctl("health", "state", "--all", "--watch", "--json")
    assert refused.exit_code == 3 and "`health state --all --json`" in refused.stderr, refused.stderr


def test_health_state_all_watch_waits_for_a_live_worker(ctl: Ctl, redis_client: redis.Redis) -> None:
    result = ctl("health", "state", "--all", "--watch", "--interval", "0.2", "--duration", "0.3")
    assert result.exit_code == 0, result.output
    assert "no live worker" in result.stdout and "retrying every 0.2s" in result.stdout


def test_health_all_state_is_health_state_all(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker
) -> None:
    degraded, _ = serve_worker("host-b:202", 1)
    beat(redis_client, "host-b:202", degraded.url)
    before, after = ctl("health", "--all", "state"), ctl("health", "state", "--all")
    assert before.exit_code == after.exit_code == 1, before.output
    assert before.stdout == after.stdout
    assert json.loads(ctl("health", "--all", "--json", "state").stdout)["workers"][0]["state"]["state_code"] == 1


@pytest.mark.parametrize("args", [("health", "--json", "state"), ("health", "--all", "--json", "state"),
                                  ("health", "--json", "state", "--watch")])
def test_health_json_state_fails_in_json_too(ctl: Ctl, redis_client: redis.Redis, args: tuple[str, ...]) -> None:
    # `health --json state` is `health state --json`: a script reading stdout gets why it failed (nobody at
    # --worker-url; no live worker; --watch with --json), not nothing.
    result = ctl(*args)
    assert result.exit_code in (2, 3), result.output
    doc = json.loads(result.stdout)
    assert doc["status"] in ("critical", "unknown") and doc["error"] in result.stderr, result.stdout


def test_health_state_all_watch_on_a_terminal_shows_the_verdict_above_what_it_cuts(
    ctl: Ctl, redis_client: redis.Redis, serve_worker: ServeWorker, nobody_url: str
) -> None:
    # A live view taller than the terminal is cut at the bottom ("..."): the fleet's verdict and the worker that is
    # not healthy must stand above the workers' documents, not under them.
    for consumer in ("host-a:101", "host-b:202"):
        beat(redis_client, consumer, serve_worker(consumer)[0].url)
    beat(redis_client, "host-c:303", nobody_url)
    result = CliRunner().invoke(
        app, ["--redis-url", ctl.redis_url, "health", "state", "--all", "--watch", "--interval", "0.2", "--duration",
              "0.3"], env={"COLUMNS": "80", "LINES": "30", "NO_COLOR": "1", "TTY_COMPATIBLE": "1"},
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    first_view = result.stdout.split("\x1b[1A")[0]  # what stood on the screen until the first refresh
    assert "..." in first_view, "the view is taller than the terminal"
    assert "3 live workers: 2 healthy, 1 not read" in first_view, first_view
    assert "host-c:303 is live by its heartbeat but was not read" in first_view, first_view
