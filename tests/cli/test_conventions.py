"""CLI conventions every command shares: NO_COLOR, shell completion, no tracebacks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from importlib.metadata import version

import pytest
import redis
from typer.testing import CliRunner

from tacticalctl.app import app
from tests.cli.conftest import Ctl
from worker.delivery import ensure_group
from worker.version import find_build_commit

COLOUR = re.compile(r"\x1b\[(3[0-7]|9[0-7]|38;)")  # a foreground colour escape
CTL = [sys.executable, "-c", "from tacticalctl.app import main; main()"]
CUT_CELL = re.compile(r"…\s*[│┃]")  # a table cell Rich cut short


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CTL, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "150", **env})


def test_no_color_removes_colour_even_when_colour_is_forced(redis_url: str, nobody_url: str) -> None:
    args = ["--redis-url", redis_url, "--worker-url", nobody_url, "morning-check"]
    coloured = run(args, FORCE_COLOR="1")
    assert COLOUR.search(coloured.stdout), "FORCE_COLOR alone colours the status column"
    plain = run(args, FORCE_COLOR="1", NO_COLOR="1")
    assert plain.returncode == coloured.returncode == 2
    assert not COLOUR.search(plain.stdout)


def test_shell_completion_completes_nouns_verbs_and_alert_names() -> None:
    def complete(words: str) -> str:
        env = {"_TACTICALCTL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
        return subprocess.run(["tacticalctl"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, **env}).stdout

    assert "reset" in complete("tacticalctl breaker re").split()
    assert "morning-check" in complete("tacticalctl morn").split()
    assert "TacticalP99LatencyHigh" in complete("tacticalctl triage TacticalP99").split()


def test_an_unreachable_redis_is_one_line_on_stderr_and_critical(ctl: Ctl) -> None:
    result = ctl("keys", "list", redis_url="redis://127.0.0.1:1/2")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "Redis unreachable" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_redis_url_whose_options_redis_py_refuses_is_one_line_without_the_password(ctl: Ctl) -> None:
    result = ctl("lag", redis_url="redis://u:S3CRET@127.0.0.1:7831/2?socket_timeout=abc")
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Invalid value for 'socket_timeout'" in result.stderr
    assert "S3CRET" not in result.output


def test_a_redis_url_with_an_unescaped_password_is_one_line_without_the_password(ctl: Ctl) -> None:
    # openssl rand -base64 passwords hold '/': unescaped, redis-py cannot parse the URL and its error quotes a piece.
    result = ctl("keys", "list", redis_url="redis://:Ab/S3CRET+x=@127.0.0.1:7831/2")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "must be percent-encoded" in result.stderr
    assert "S3CRET" not in result.output and "Ab/" not in result.output


def test_a_command_line_that_does_not_parse_is_unknown_not_critical() -> None:
    # A monitor's check with a typo did not run: it must not page as CRITICAL (click's own code for it is 2).
    for args in (["market-check", "--jsn"], ["lag", "--interval", "1"], ["alerts", "--severity", "P5"],
                 ["no-such-command"], ["--no-such-option", "health"]):
        result = run(args)
        assert result.returncode == 3, (args, result.returncode, result.stderr)
        assert "Traceback" not in result.stderr
    assert run(["--help"]).returncode == 0


def test_redis_going_away_during_a_follow_or_a_watch_is_ridden_out_not_a_traceback(tmp_path) -> None:
    from worker.alerts import Severity, publish_alert
    from worker.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(data_dir=tmp_path / "redis", appendonly=False).start()
    url = server.url()
    try:
        client = redis.Redis.from_url(url)
        publish_alert(client, severity=Severity.P2, kind="test", message="before the outage", source="test")
        client.close()
        follow = subprocess.Popen([*CTL, "--redis-url", url, "alerts", "--follow", "--json", "--duration", "4"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watch = subprocess.Popen([*CTL, "--redis-url", url, "lag", "watch", "--json", "--interval", "0.5",
                                  "--duration", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Each has connected and said something before Redis goes away.
        assert follow.stdout is not None and watch.stdout is not None  # stdout=PIPE
        first_alert = json.loads(follow.stdout.readline())
        first_status = json.loads(watch.stdout.readline())["status"]
        server.close()
        follow_out, follow_err = follow.communicate(timeout=60)
        watch_out, watch_err = watch.communicate(timeout=60)
    finally:
        server.close()
    assert first_alert["message"] == "before the outage"
    assert follow.returncode == 0 and "Traceback" not in follow_err, follow_err[-2000:]
    assert "Redis unreachable" in follow_err and follow_out == "", "stdout stays one alert per line"
    assert watch.returncode == 0 and "Traceback" not in watch_err, watch_err[-2000:]
    statuses = [first_status] + [json.loads(line)["status"] for line in watch_out.splitlines()]
    assert "critical" in statuses, statuses


@pytest.mark.parametrize("command", [["alerts", "--follow", "--json"], ["lag", "watch", "--json"], ["lag", "watch"]],
                         ids=["alerts-follow", "lag-watch-json", "lag-watch-table"])
def test_refused_credentials_during_a_follow_end_it_critical_not_retried_as_an_outage(
    tmp_path, command: list[str]
) -> None:
    from worker.embedded_redis import EmbeddedRedis

    with EmbeddedRedis(data_dir=tmp_path / "redis", appendonly=False) as server:
        admin = redis.Redis.from_url(server.url())
        ensure_group(admin)  # lag has a group to measure
        follow = subprocess.Popen([*CTL, "--redis-url", server.url(), *command, "--duration", "20"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while len(admin.client_list()) < 2:  # it has connected
            assert time.monotonic() < deadline and follow.poll() is None, follow.stderr.read() if follow.stderr else ""
            time.sleep(0.1)
        time.sleep(1.0)  # and is following or watching
        admin.config_set("requirepass", "now-required")
        admin.client_kill_filter(_type="normal", skipme=True)
        admin.close()
        _, err = follow.communicate(timeout=60)
    assert follow.returncode == 2, err
    assert err.count("\n") == 1 and "retrying" not in err and "Traceback" not in err, err


def test_another_database_than_the_workers_is_said_on_stderr(ctl: Ctl, redis_url: str) -> None:
    # Without the /2 a URL selects database 0, where nothing the worker writes lives: its all-clear means nothing.
    assert redis_url.endswith("/2")
    result = ctl("dead-letter", "list", "--json", redis_url=redis_url[: -len("/2")])
    assert result.exit_code == 0
    json.loads(result.stdout)  # stdout stays the JSON alone
    assert "connected to database 0, the runbook's is 2" in result.stderr

    assert "database" not in ctl("dead-letter", "list", "--json").stderr


@pytest.mark.parametrize("args", [["lag", "watch", "--duration", "nan"], ["health", "state", "--watch", "--duration",
                                  "nan"], ["alerts", "--follow", "--duration", "nan"], ["up", "--rate", "inf"],
                                  ["latency", "--window", "inf"], ["eod", "--since", "100000d"]])
def test_a_duration_or_rate_that_is_not_a_number_is_refused_not_a_hang(args: list[str]) -> None:
    # `lag watch --duration nan` watched for ever; `up --rate inf` killed its feed with a traceback.
    result = CliRunner().invoke(app, ["--redis-url", "redis://127.0.0.1:1/2", *args])
    assert result.exit_code == 3, (args, result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_bundle_version_is_a_name_never_a_path_out_of_the_models_directory(tmp_path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    (tmp_path / "m").mkdir()
    result = CliRunner().invoke(app, ["models", "sign", "../m", "--key-file", str(key), "--models-dir",
                                      str(tmp_path / "m")])
    assert result.exit_code == 3 and "not a bundle version" in result.output, result.output
    assert not list(tmp_path.rglob("manifest.sig"))


def test_tables_written_to_a_file_fold_their_text_never_cut_it(redis_url: str, redis_client: redis.Redis,
                                                                 nobody_url: str, tmp_path) -> None:
    # Not a terminal and no COLUMNS: Rich renders 80 columns wide, what a cron job's log file gets.
    ensure_group(redis_client)
    redis_client.xadd("synergy_events", {"correlation_id": "c-1"})
    redis_client.xreadgroup("tactical_group", "a-consumer-with-a-rather-long-name-on-host-42", {"synergy_events": ">"})
    for _ in range(2):  # a correlation id sent twice: the duplicates table has a row
        redis_client.xadd("synergy_events", {"correlation_id": "a-rather-long-correlation-id-0123456789"})
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    common = ["--redis-url", redis_url, "--worker-url", nobody_url]
    for args in (["morning-check"], ["market-check"], ["stream", "info"], ["pending"], ["lag"], ["models", "list"],
                 ["backup", str(tmp_path / "b.tar.gz"), "--no-models"], ["keys", "list"], ["duplicates"]):
        result = subprocess.run([*CTL, *common, *args], capture_output=True, text=True, timeout=120, env=env)
        assert not CUT_CELL.search(result.stdout), (args, result.stdout)
        assert "Traceback" not in result.stderr, (args, result.stderr)


@pytest.mark.parametrize("args", [["lag"], ["health"], ["health", "state"], ["latency"], ["pending"],
                                  ["stream", "info"], ["keys", "list"], ["alerts"], ["dead-letter", "list"],
                                  ["breaker", "status"], ["duplicates"], ["triage", "worker-down"]])
def test_with_json_a_failure_is_still_one_document_on_stdout(ctl: Ctl, args: list[str]) -> None:
    result = ctl(*args, "--json", redis_url="redis://127.0.0.1:1/2")
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)  # exactly one document: what failed, or the command's own
    assert doc["status"] == "critical"
    assert "Traceback" not in result.stderr


def test_redis_refusing_commands_is_critical_with_what_to_do_in_checklists_and_triage(ctl: Ctl, redis_url: str) -> None:
    missing_database = redis_url.rsplit("/", 1)[0] + "/99"  # the server has 16
    checklist = ctl("morning-check", "--json", redis_url=missing_database)
    assert checklist.exit_code == 2, checklist.output  # was 3 (unknown): "check could not run: ResponseError"
    redis_step = next(step for step in json.loads(checklist.stdout)["steps"] if step["status"] == "critical")
    assert redis_step["value"] == "Redis refused a command: DB index is out of range"
    assert "the URL's database does not exist on this server" in redis_step["next_action"]
    triage = ctl("triage", "consumer-lag", "--json", redis_url=missing_database)
    assert triage.exit_code == 2
    assert "the URL's database does not exist" in triage.stdout


def test_with_json_a_command_line_that_does_not_parse_is_one_document_too(ctl: Ctl) -> None:
    result = ctl("alerts", "--json", "--count", "0")
    assert result.exit_code == 3
    doc = json.loads(result.stdout)
    assert doc["status"] == "unknown" and "--count" in doc["error"]


def test_a_json_word_that_is_another_options_value_does_not_ask_for_json(ctl: Ctl) -> None:
    """`--reason --json` filters on the text "--json": a failure is the stderr line alone, as without --json."""
    as_value = ctl("dead-letter", "list", "--reason", "--json", redis_url="redis://127.0.0.1:1/2")
    assert as_value.exit_code == 2 and as_value.stdout == ""
    assert as_value.stderr.startswith("tacticalctl: Redis unreachable")
    asked = ctl("dead-letter", "list", "--reason", "x", "--json", redis_url="redis://127.0.0.1:1/2")
    assert asked.exit_code == 2 and json.loads(asked.stdout)["status"] == "critical"


def test_version_prints_the_installed_release_without_touching_redis() -> None:
    result = run(["--redis-url", "redis://127.0.0.1:1/2", "--version"])
    assert result.returncode == 0, result.stderr
    commit = find_build_commit() or "unknown"
    assert result.stdout.strip() == f"tacticalctl {version('tactical-marl')} (commit {commit})"
