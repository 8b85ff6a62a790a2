"""`tacticalctl alerts`: tail tactical_alerts, filtered by severity, and follow new ones."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import redis

from tests.cli.conftest import Ctl
from worker.alerts import Severity, audit, publish_alert


def test_tail_shows_the_latest_count_oldest_first(ctl: Ctl, redis_client: redis.Redis) -> None:
    for n in range(5):
        publish_alert(redis_client, severity=Severity.P1, kind="lag", message=f"alert {n}", source="w")
    doc = json.loads(ctl("alerts", "--count", "2", "--json").stdout)
    assert [e["message"] for e in doc["entries"]] == ["alert 3", "alert 4"]
    assert {"id", "severity", "kind", "message", "source", "ts"} <= set(doc["entries"][0])
    text = ctl("alerts", "--count", "2").stdout
    assert "alert 4" in text and "alert 2" not in text


def test_an_80_column_terminal_still_shows_each_message_whole(redis_client: redis.Redis, redis_url: str) -> None:
    from typer.testing import CliRunner

    from tacticalctl.app import app

    publish_alert(redis_client, severity=Severity.P1, kind="health_transition", source="root@worker-host-1",
                  message="health state healthy → degraded: error rate 7.0% > 5%")
    result = CliRunner().invoke(app, ["--redis-url", redis_url, "alerts"], env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "health state healthy → degraded: error rate 7.0% > 5%" in result.stdout


def test_severity_filter(ctl: Ctl, redis_client: redis.Redis) -> None:
    publish_alert(redis_client, severity=Severity.P0, kind="breaker_open", message="open", source="w")
    audit(redis_client, actor="ops@host", action="keys_clean", detail="deleted 1 key")
    publish_alert(redis_client, severity=Severity.P2, kind="info", message="fyi", source="w")
    doc = json.loads(ctl("alerts", "--severity", "P0", "--severity", "AUDIT", "--json").stdout)
    assert [e["severity"] for e in doc["entries"]] == ["P0", "AUDIT"]
    assert doc["entries"][1]["actor"] == "ops@host"


def test_follow_prints_alerts_published_while_it_runs(ctl: Ctl, redis_client: redis.Redis) -> None:
    publish_alert(redis_client, severity=Severity.P1, kind="lag", message="before", source="w")

    def later() -> None:
        time.sleep(0.3)
        publish_alert(redis_client, severity=Severity.P0, kind="breaker_open", message="during", source="w")

    thread = threading.Thread(target=later)
    thread.start()
    result = ctl("alerts", "--follow", "--duration", "1.2", "--json")
    thread.join()
    assert result.exit_code == 0
    messages = [json.loads(line)["message"] for line in result.stdout.splitlines()]
    assert messages == ["before", "during"]


def test_no_alerts(ctl: Ctl) -> None:
    result = ctl("alerts")
    assert result.exit_code == 0 and "no alerts" in result.stdout


def test_follow_started_while_redis_is_down_prints_what_comes_once_it_is_back(private_redis) -> None:
    private_redis.stop()
    follow = subprocess.Popen([sys.executable, "-c", "from tacticalctl.app import main; main()", "--redis-url",
                               private_redis.url(), "alerts", "--follow", "--duration", "8", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said = follow.stderr.readline()  # type: ignore[union-attr]  # the outage, said before Redis is back
        private_redis.start()
        publish_alert(redis.Redis.from_url(private_redis.url()), severity=Severity.P0, kind="breaker_open",
                      message="after the outage", source="w")
        stdout, stderr = follow.communicate(timeout=30)
    finally:
        if follow.poll() is None:
            follow.kill()
    assert follow.returncode == 0, stderr
    assert "unreachable" in said.lower(), said
    assert [json.loads(line)["message"] for line in stdout.splitlines()] == ["after the outage"]
