"""Triage's Redis probe judges memory by what Redis does at maxmemory: refuse writes, or evict our keys."""

from __future__ import annotations

import redis

from worker.ops.checks import Status
from worker.ops.probes import probe_redis
from worker.ops.sources import Sources
from worker.settings import default_models_dir


def memory_finding(url: str) -> tuple[Status, str]:
    findings = probe_redis(Sources(url, "http://127.0.0.1:1", default_models_dir()))
    [finding] = [f for f in findings if f.summary.startswith("Redis memory") or f.summary.startswith("Redis 7")
                 or "clients" in f.summary]
    return finding.status, finding.summary


def test_memory_over_maxmemory_is_critical_writes_refused(private_redis) -> None:
    """Over maxmemory, noeviction refuses every write: the worker's commits and heartbeats fail and its breaker
    opens. The probe said "near maxmemory", a warning, with used memory already past the limit."""
    url = private_redis.url()
    client = redis.Redis.from_url(url)
    try:
        client.config_set("maxmemory", 1)
        status, summary = memory_finding(url)
        assert status is Status.CRITICAL, summary
        assert "maxmemory reached, writes refused (OOM)" in summary and "stream trim" in summary
        assert "near" not in summary
    finally:
        client.config_set("maxmemory", 0)


def test_near_maxmemory_warns_and_an_evicting_policy_is_named(private_redis) -> None:
    url = private_redis.url()
    client = redis.Redis.from_url(url)
    client.set("ballast", b"x" * 8_000_000)  # the probe's own connection and reads move used_memory by far less
    memory_finding(url)
    used = int(client.info("memory")["used_memory"])
    try:
        client.config_set("maxmemory", int(used / 0.95))
        status, summary = memory_finding(url)
        assert status is Status.WARN and "near maxmemory" in summary and "writes refused" in summary, summary

        client.config_set("maxmemory", used * 100)
        client.config_set("maxmemory-policy", "volatile-lru")  # evicts exactly the keys with a TTL: completed keys
        status, summary = memory_finding(url)
        assert status is Status.WARN and "volatile-lru" in summary and "completed keys" in summary, summary
        assert "decided, and traded, twice" in summary and "streams" not in summary

        client.config_set("maxmemory-policy", "allkeys-lru")  # any key: the streams too
        status, summary = memory_finding(url)
        assert status is Status.WARN and "whole streams" in summary and "lost" in summary, summary

        client.config_set("maxmemory-policy", "noeviction")
        assert memory_finding(url)[0] is Status.OK
    finally:
        client.config_set("maxmemory", 0)
        client.config_set("maxmemory-policy", "noeviction")
