"""`tacticalctl lag` and `lag watch` against real Redis: exit codes at the runbook thresholds, unknown counts,
unreachable Redis, JSON keys, and a watch that ends cleanly on SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import redis

from tests.cli.conftest import Ctl
from worker.delivery import ensure_group
from worker.embedded_redis import free_port
from worker.lag import EXACT_COUNT_LIMIT
from worker.names import CONSUMER_GROUP, INPUT_STREAM

LAG_KEYS = {"count", "count_exact", "count_min", "count_max", "redis_lag", "pending", "seconds", "oldest_id",
            "last_delivered_id", "entries_read", "stream_length", "entries_added", "delivered", "undelivered_removed",
            "trend", "rate_in_per_s", "rate_out_per_s", "rate_out_source", "status", "threshold_warn_s",
            "threshold_critical_s", "message", "at"}


def server_now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def backlog(client: redis.Redis, *, age_s: float, count: int = 3) -> list[bytes]:
    """`count` undelivered entries, the oldest `age_s` seconds old, and the group created at 0."""
    first_ms = server_now_ms(client) - int(age_s * 1000)
    ids = [cast(bytes, client.xadd(INPUT_STREAM, {"n": str(i)}, id=f"{first_ms + i}-0")) for i in range(count)]
    ensure_group(client)
    return ids


def test_caught_up_is_ok(ctl: Ctl, redis_client: redis.Redis) -> None:
    ensure_group(redis_client)
    result = ctl("lag")
    assert result.exit_code == 0
    assert "0.00 s" in result.stdout and "consumer lag — ok" in result.stdout


def test_lag_over_two_seconds_is_a_warning(ctl: Ctl, redis_client: redis.Redis) -> None:
    backlog(redis_client, age_s=3.0)
    result = ctl("lag")
    assert result.exit_code == 1
    assert "> 2 s" in result.stdout


def test_lag_over_five_seconds_is_critical(ctl: Ctl, redis_client: redis.Redis) -> None:
    backlog(redis_client, age_s=10.0)
    result = ctl("lag", "--json")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert set(doc) == LAG_KEYS
    assert doc["status"] == "critical" and doc["count"] == 3 and doc["seconds"] >= 10.0


def test_a_count_past_what_is_read_is_a_bound_that_says_so_never_zero(ctl: Ctl, redis_client: redis.Redis) -> None:
    # More entries on each side of the group's last-delivered id than the check reads, and an XDEL of an unread one
    # that leaves Redis unable to tell: what is known is a bound, said as one, and why.
    ids = backlog(redis_client, age_s=0.5, count=2 * EXACT_COUNT_LIMIT + 100)
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=EXACT_COUNT_LIMIT + 50)
    redis_client.xdel(INPUT_STREAM, ids[-2])
    text = ctl("lag").stdout
    low, high = EXACT_COUNT_LIMIT, len(ids) - 1 - EXACT_COUNT_LIMIT
    assert f"{low}–{high}" in text and "a bound, not a count" in text and "Redis cannot tell either" in text
    doc = json.loads(ctl("lag", "--json").stdout)
    assert (doc["count"], doc["count_exact"], doc["count_min"], doc["count_max"]) == (None, False, low, high)
    # Nor is what follows from a count: nothing was counted as delivered; the trend (one sample: too short) says what
    # it is called from.
    assert (doc["trend"], doc["delivered"], doc["rate_out_source"]) == ("too_short", None, "unknown")
    assert "stall and stop are called from the group's last-delivered id" in text


def test_undelivered_entries_trimmed_away_are_said_lost_not_counted_as_delivered(ctl: Ctl,
                                                                                  redis_client: redis.Redis) -> None:
    redis_client.xgroup_create(INPUT_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    redis_client.xadd(INPUT_STREAM, {"n": "0"})
    redis_client.xreadgroup(CONSUMER_GROUP, "dead", {INPUT_STREAM: ">"}, count=1)
    for n in range(300):
        redis_client.xadd(INPUT_STREAM, {"n": str(n)}, maxlen=100, approximate=True)
    result = ctl("lag")
    assert "were removed from the stream" in result.stdout and "never reach the worker" in result.stdout
    doc = json.loads(ctl("lag", "--json").stdout)
    assert (doc["undelivered_removed"], doc["delivered"]) == (True, None)


def test_exactly_256_waiting_behind_256_delivered_is_a_bound_as_help_and_runbook_say(ctl: Ctl,
                                                                                     redis_client: redis.Redis) -> None:
    # The text said "more than 256 wait and more than 256 delivered"; the check, having read 256 on each side,
    # cannot tell 256 from more: exactly 256 and 256 is already the bound.
    ids = backlog(redis_client, age_s=0.5, count=2 * EXACT_COUNT_LIMIT)
    redis_client.xgroup_setid(INPUT_STREAM, CONSUMER_GROUP, ids[EXACT_COUNT_LIMIT - 1])
    doc = json.loads(ctl("lag", "--json").stdout)
    assert (doc["count_exact"], doc["count_min"], doc["count_max"]) == (False, 256, 256)
    help_text = " ".join(ctl("lag", "--help").stdout.split())
    assert "exact unless 256 or more entries wait with 256 or more delivered" in help_text
    runbook = " ".join((Path(__file__).parents[2] / "runbook" / "RUNBOOK.md").read_text().split())
    assert "exact unless 256 or more entries wait *and* 256 or more delivered ones" in runbook


def test_a_large_backlog_with_little_delivered_before_it_is_counted_exactly(ctl: Ctl,
                                                                           redis_client: redis.Redis) -> None:
    # Redis's own figure says nothing here (the XDEL): it used to read `unknown`, then `≥256 (Redis: …)` when it did.
    ids = backlog(redis_client, age_s=0.5, count=EXACT_COUNT_LIMIT + 10)
    redis_client.xdel(INPUT_STREAM, ids[2])
    doc = json.loads(ctl("lag", "--json").stdout)
    assert (doc["count"], doc["count_exact"], doc["redis_lag"]) == (EXACT_COUNT_LIMIT + 9, True, None)
    assert "a bound" not in ctl("lag").stdout


def test_a_small_backlog_is_counted_even_where_redis_cannot_tell(ctl: Ctl, redis_client: redis.Redis) -> None:
    ids = backlog(redis_client, age_s=0.5, count=5)
    redis_client.xdel(INPUT_STREAM, ids[2])
    assert json.loads(ctl("lag", "--json").stdout)["count"] == 4


def test_a_missing_group_cannot_be_checked(ctl: Ctl, redis_client: redis.Redis) -> None:
    redis_client.xadd(INPUT_STREAM, {"n": "1"})
    result = ctl("lag")
    assert result.exit_code == 3
    assert CONSUMER_GROUP in result.stderr


def test_redis_on_a_closed_port_is_critical(ctl: Ctl) -> None:
    result = ctl("lag", redis_url=f"redis://127.0.0.1:{free_port()}/2")
    assert result.exit_code == 2
    assert result.stderr.startswith("tacticalctl: Redis unreachable at redis://127.0.0.1:")


def test_watch_shows_rates_and_a_sparkline(ctl: Ctl, redis_client: redis.Redis) -> None:
    backlog(redis_client, age_s=1.0)
    result = ctl("lag", "watch", "--interval", "0.2", "--duration", "0.7")
    assert result.exit_code == 0
    assert "/s" in result.stdout
    assert "lag, last" in result.stdout and "samples:" in result.stdout
    assert result.stdout.endswith("critical > 5 s\n")  # the last line ends: a prompt or log line does not run on


def test_watch_json_prints_one_sample_per_line(ctl: Ctl, redis_client: redis.Redis) -> None:
    ensure_group(redis_client)
    result = ctl("lag", "watch", "--json", "--interval", "0.2", "--duration", "0.7")
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) >= 2
    assert all(set(line) == LAG_KEYS for line in lines)
    assert lines[-1]["rate_in_per_s"] == 0.0


def test_watch_json_says_why_a_sample_could_not_be_taken(ctl: Ctl) -> None:
    """No stream yet: each line says so, under `error` as a failed command's document does, and goes on."""
    result = ctl("lag", "watch", "--json", "--interval", "0.2", "--duration", "0.5")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) >= 2
    assert all(set(line) == {"status", "error", "message", "at"} for line in lines)
    assert all(line["status"] == "unknown" and "does not exist" in line["error"] for line in lines)


def test_watch_ends_cleanly_on_sigint(redis_url: str, redis_client: redis.Redis) -> None:
    ensure_group(redis_client)
    env = {**os.environ, "NO_COLOR": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", "from tacticalctl.app import main; main()", "--redis-url", redis_url,
         "lag", "watch", "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=os.getcwd(),
    )
    try:
        deadline = time.monotonic() + 30
        while not any(c.get("name") == "tacticalctl" for c in redis_client.client_list()):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "lag watch never connected to Redis"
            time.sleep(0.05)
        time.sleep(0.5)  # let it take a few samples
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr
    assert b"consumer lag" in stdout and stdout.endswith(b"s\n")


def test_lag_of_a_key_of_another_type_names_its_type(ctl: Ctl, redis_client: redis.Redis) -> None:
    redis_client.set(INPUT_STREAM, "x")
    result = ctl("lag")
    assert result.exit_code == 3
    assert f"'{INPUT_STREAM}' is a string, not a stream" in result.stderr


def _tacticalctl(redis_url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from tacticalctl.app import main; main()", "--redis-url",
                             redis_url, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NO_COLOR": "1"})


def test_a_watch_started_while_redis_is_down_waits_it_out(private_redis) -> None:
    # Started during an outage (the on-call engineer's first move), a watch samples the outage instead of quitting.
    private_redis.stop()
    watch = _tacticalctl(private_redis.url(), "lag", "watch", "--json", "--interval", "0.2", "--duration", "6")
    try:
        first = json.loads(watch.stdout.readline())  # type: ignore[union-attr]  # a sample of the outage
        private_redis.start()
        ensure_group(redis.Redis.from_url(private_redis.url()))
        stdout, stderr = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, stderr
    assert first["status"] == "critical" and "unreachable" in first["error"].lower(), first
    assert json.loads(stdout.splitlines()[-1])["status"] == "ok", stdout
