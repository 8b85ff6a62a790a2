"""Triage's Redis probe reads the slow log: what slowed Redis lately, not what the operator's own checks did."""

from __future__ import annotations

import re
import time

import pytest
import redis

from worker.ops import probes
from worker.ops.checks import Status
from worker.ops.probes import probe_redis
from worker.ops.sources import Sources
from worker.settings import default_models_dir

# Holds Redis for `ARGV[1]` µs: a command as slow as a big scan or DUMP, in a test's time.
BUSY_LUA = """
local start = redis.call('TIME')
repeat local now = redis.call('TIME')
until (now[1] - start[1]) * 1000000 + (now[2] - start[2]) >= tonumber(ARGV[1])
return 1
"""


def slow_command_from(url: str, client_name: str, busy_us: int = 60_000) -> None:
    client = redis.Redis.from_url(url, client_name=client_name)
    client.eval(BUSY_LUA, 0, busy_us)
    client.close()


def slow_findings(url: str) -> list[tuple[Status, str]]:
    findings = probe_redis(Sources(url, "http://127.0.0.1:1", default_models_dir()))
    return [(finding.status, finding.summary) for finding in findings if "slow-log" in finding.summary]


def test_slow_commands_of_tacticalctl_are_said_apart_and_not_warned_of(private_redis) -> None:
    url = private_redis.url()
    redis.Redis.from_url(url).slowlog_reset()
    slow_command_from(url, "tacticalctl-ops")
    [(status, summary)] = slow_findings(url)
    assert status is Status.OK and "sent by tacticalctl itself" in summary and "EVAL ×1" in summary

    slow_command_from(url, "tactical-worker:host-a:1", busy_us=20_000)  # a full batch's commit on a slow machine
    assert len(slow_findings(url)) == 1, "batching at work is not a cause"
    slow_command_from(url, "tactical-worker:host-a:1")
    findings = slow_findings(url)
    assert (Status.WARN, "1 of the last 10 slow-log entries took over 50 ms in the last 15 min (EVAL ×1)") in findings
    assert len(findings) == 2


def test_old_slow_commands_are_history(private_redis, monkeypatch: pytest.MonkeyPatch) -> None:
    url = private_redis.url()
    slow_command_from(url, "tactical-worker:host-a:1")
    assert slow_findings(url)
    monkeypatch.setattr(probes, "SLOWLOG_RECENT_S", 1)  # "recent" shrunk to a second, instead of waiting 15 min
    time.sleep(2.1)
    assert slow_findings(url) == []


def latency_findings(url: str) -> list[tuple[Status, str]]:
    findings = probe_redis(Sources(url, "http://127.0.0.1:1", default_models_dir()))
    return [(finding.status, finding.summary) for finding in findings if "latency monitor" in finding.summary]


def test_the_shipped_redis_records_latency_spikes_and_triage_says_whose(private_redis,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Redis's latency monitor is off by default, which leaves LATENCY LATEST empty whatever happened; the embedded
    # Redis (and the compose file's) turn it on.
    url = private_redis.url()
    assert latency_findings(url) == []
    slow_command_from(url, "tacticalctl-ops")
    [(status, summary)] = latency_findings(url)
    assert status is Status.OK and "tacticalctl sent itself" in summary and summary.startswith(
        "Redis latency monitor: command "), summary

    slow_command_from(url, "tactical-worker:host-a:1")
    [(status, summary)] = latency_findings(url)
    assert status is Status.WARN and "LATENCY HISTORY" in summary, summary

    monkeypatch.setattr(probes, "SLOWLOG_RECENT_S", 1)
    time.sleep(2.1)
    assert latency_findings(url) == [], "an old spike is history"


def test_a_big_spike_is_not_hidden_by_a_smaller_one_after_it(private_redis) -> None:
    # LATENCY LATEST keeps an event's latest sample only: a routine 15 ms commit a second after a 200 ms stall.
    url = private_redis.url()
    slow_command_from(url, "tactical-worker:host-a:1", busy_us=200_000)
    time.sleep(1.1)  # the monitor keeps one sample per second
    slow_command_from(url, "tactical-worker:host-a:1", busy_us=15_000)
    [(status, summary)] = latency_findings(url)
    assert status is Status.WARN and "command 2" in summary and "peak" not in summary, summary


def test_a_spike_the_slow_log_cannot_attribute_is_warned_of(private_redis) -> None:
    # The slow log was reset (or a worker's entry has scrolled out of it): nothing says the spike was tacticalctl's.
    url = private_redis.url()
    slow_command_from(url, "tactical-worker:host-a:1")
    redis.Redis.from_url(url).slowlog_reset()
    [(status, summary)] = latency_findings(url)
    assert status is Status.WARN, summary


def test_a_transaction_of_tacticalctl_is_its_own_and_never_the_warnings_headline(private_redis) -> None:
    # A backup's snapshot is one MULTI/EXEC: the latency monitor stamps the whole EXEC, the slow log each command
    # inside it (EXEC itself is not logged), none of them as long as the spike.
    url = private_redis.url()
    operator = redis.Redis.from_url(url, client_name="tacticalctl-ops")
    with operator.pipeline(transaction=True) as pipe:
        for _ in range(3):
            pipe.eval(BUSY_LUA, 0, 60_000)
        pipe.execute()
    [(status, summary)] = latency_findings(url)
    assert status is Status.OK and "tacticalctl sent itself" in summary, summary

    time.sleep(1.1)  # the worker's spike in a second of its own
    slow_command_from(url, "tactical-worker:host-a:1", busy_us=70_000)
    [(status, summary)] = latency_findings(url)
    assert status is Status.WARN, summary
    warned, own = (int(re.search(r"command (\d+) ms", part).group(1))  # type: ignore[union-attr]
                   for part in summary.split("; tacticalctl's own: "))
    assert 70 <= warned < 180 <= own, summary  # the worker's ~70 ms is warned of, tacticalctl's ~180 said apart
