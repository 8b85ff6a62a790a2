"""Liveness keys in a real Redis: written with a TTL, gone when a worker stops beating or shuts down."""

from __future__ import annotations

import json
import os
import time

import pytest
import redis

from worker.heartbeat import (
    Heartbeat,
    delete_heartbeat,
    heartbeat_ttl_ms,
    is_alive,
    live_consumers,
    write_heartbeat,
)
from worker.names import heartbeat_key

INFO = {"started_at": "2024-06-03T13:30:00+00:00", "model_version": "v7", "state": "healthy"}


def test_ttl_is_two_and_a_half_intervals_to_the_millisecond() -> None:
    assert heartbeat_ttl_ms(2.0) == 5000
    assert heartbeat_ttl_ms(0.0123) == 31
    with pytest.raises(ValueError, match="positive"):
        heartbeat_ttl_ms(0)


def test_heartbeat_is_written_with_its_ttl(redis_client: redis.Redis) -> None:
    written = write_heartbeat(redis_client, "host-a:101", interval_s=2.0, info=INFO, now=lambda: 1717421400.25)

    ttl = redis_client.pttl(heartbeat_key("host-a:101"))
    stored = json.loads(redis_client.get(heartbeat_key("host-a:101")))
    assert 4900 < ttl <= 5000
    assert stored == written
    assert stored["pid"] == os.getpid()
    assert stored["model_version"] == "v7"
    assert stored["state"] == "healthy"
    assert stored["started_at"] == INFO["started_at"]
    assert stored["last_beat"] == "2024-06-03T13:30:00.250+00:00"
    assert is_alive(redis_client, "host-a:101")


def test_a_consumer_that_stops_beating_is_no_longer_alive(redis_client: redis.Redis) -> None:
    write_heartbeat(redis_client, "host-a:102", interval_s=0.04, info=INFO)  # TTL 100 ms
    assert is_alive(redis_client, "host-a:102")

    deadline = time.monotonic() + 2.0
    while is_alive(redis_client, "host-a:102") and time.monotonic() < deadline:
        time.sleep(0.02)

    assert not is_alive(redis_client, "host-a:102")
    assert live_consumers(redis_client) == {}


def test_refreshing_keeps_a_consumer_alive_past_its_first_ttl(redis_client: redis.Redis) -> None:
    heartbeat = Heartbeat(redis_client, "host-a:103", interval_s=0.1)  # TTL 250 ms
    started = time.monotonic()
    while time.monotonic() - started < 0.6:
        heartbeat.beat_if_due(lambda: INFO)
        assert is_alive(redis_client, "host-a:103")
        time.sleep(0.01)


def test_beat_if_due_writes_once_per_interval_and_builds_its_info_only_then(redis_client: redis.Redis) -> None:
    now = [50.0]
    heartbeat = Heartbeat(redis_client, "host-a:104", interval_s=2.0, clock=lambda: now[0])
    built: list[float] = []

    def info() -> dict[str, object]:
        built.append(now[0])
        return INFO

    assert heartbeat.beat_if_due(info) is True
    now[0] += 1.0
    assert heartbeat.beat_if_due(info) is False
    now[0] += 1.0
    assert heartbeat.beat_if_due(info) is True
    assert built == [50.0, 52.0]  # the loop asks every batch; the info is built only for a beat


def test_delete_on_clean_shutdown(redis_client: redis.Redis) -> None:
    heartbeat = Heartbeat(redis_client, "host-a:105", interval_s=2.0)
    heartbeat.beat_if_due(lambda: INFO)

    assert heartbeat.stop() is True
    assert not is_alive(redis_client, "host-a:105")
    assert heartbeat.beat_if_due(lambda: INFO) is False  # no beat after shutdown brings it back
    assert delete_heartbeat(redis_client, "host-a:105") is False


def test_live_consumers_lists_every_beating_consumer(redis_client: redis.Redis) -> None:
    for pid in range(300, 760):  # more than one SCAN page and one MGET chunk
        write_heartbeat(redis_client, f"host-b:{pid}", interval_s=5.0, info={**INFO, "pid": pid})
    redis_client.set("tactical:completed:abc", "1")
    redis_client.set(heartbeat_key("host-c:1"), "not json", px=5000)

    consumers = live_consumers(redis_client)

    assert len(consumers) == 461
    assert consumers["host-b:300"]["pid"] == 300
    assert consumers["host-b:759"]["model_version"] == "v7"
    assert consumers["host-c:1"]["error"] == "unreadable heartbeat"


def test_live_consumers_with_a_decoding_client(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        write_heartbeat(client, "host-d:1", interval_s=1.0, info=INFO)
        assert list(live_consumers(client)) == ["host-d:1"]
    finally:
        client.close()
