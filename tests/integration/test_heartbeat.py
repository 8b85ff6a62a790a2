"""Liveness keys in a real Redis: written with a TTL, gone when a worker stops beating or shuts down."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

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
from worker.process import WorkerProcess, WorkerStartError

INFO: dict[str, object] = {"started_at": "2024-06-03T13:30:00+00:00", "model_version": "v7", "state": "healthy"}


def stored_heartbeat(client: redis.Redis, consumer: str) -> dict[str, Any]:
    stored = client.get(heartbeat_key(consumer))
    assert stored is not None, f"no heartbeat of {consumer}"
    return cast(dict[str, Any], json.loads(stored))


def test_ttl_is_two_and_a_half_intervals_to_the_millisecond() -> None:
    assert heartbeat_ttl_ms(2.0) == 5000
    assert heartbeat_ttl_ms(0.0123) == 31
    with pytest.raises(ValueError, match="positive"):
        heartbeat_ttl_ms(0)


def test_heartbeat_is_written_with_its_ttl(redis_client: redis.Redis) -> None:
    written = write_heartbeat(redis_client, "host-a:101", interval_s=2.0, info=INFO, now=lambda: 1717421400.25)

    ttl = redis_client.pttl(heartbeat_key("host-a:101"))
    stored = stored_heartbeat(redis_client, "host-a:101")
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


def _another_worker(redis_url: str, consumer: str, log_path: Path, **settings: object) -> WorkerProcess:
    """A worker under a name the fixture already started one with, logging to a file of its own (the fixture names
    logs by consumer, and a shared log would show the first worker's "ready" line for the second)."""
    return WorkerProcess(redis_url=redis_url, consumer=consumer, log_path=log_path,
                         settings={name: str(value) for name, value in settings.items()})


def test_a_second_worker_under_a_live_workers_name_exits_and_leaves_it_beating(
    redis_url: str, start_worker, tmp_path: Path
) -> None:
    first = start_worker(redis_url, consumer="shared-name")  # beats every 2 s, its heartbeat lives 5 s
    second = _another_worker(redis_url, "shared-name", tmp_path / "second.log")
    try:
        with pytest.raises(WorkerStartError) as refused:
            second.start(wait_ready_s=60)
    finally:
        second.stop(timeout_s=30)
    assert "exited with 2" in str(refused.value)
    assert "'shared-name' is in use by a live worker" in str(refused.value)
    assert f"pid {first.pid}" in str(refused.value)
    said = (tmp_path / "second.log").read_text()
    assert "worker shared-name stopped" not in said, "the live worker of that name did not stop: this one never ran"
    assert "worker shared-name did not start" in said, said[-2000:]
    client = redis.Redis.from_url(redis_url)
    assert stored_heartbeat(client, "shared-name")["pid"] == first.pid  # the refused one left it
    assert first.poll() is None


def test_a_worker_takes_over_the_name_of_one_killed_a_moment_ago(
    redis_url: str, start_worker, tmp_path: Path
) -> None:
    # Its heartbeat lives 15 s: still there when the next worker, a few seconds to load its models, looks for it.
    killed = start_worker(redis_url, consumer="restarted", heartbeat_interval_s=6.0)
    killed.kill()  # SIGKILL: its heartbeat stays until its TTL runs out
    client = redis.Redis.from_url(redis_url)
    assert stored_heartbeat(client, "restarted")["pid"] == killed.pid

    again = _another_worker(redis_url, "restarted", tmp_path / "again.log", heartbeat_interval_s=6.0)
    try:
        again.start(wait_ready_s=60)
        assert "waiting up to" in again.log_text()
        assert stored_heartbeat(client, "restarted")["pid"] == again.pid
    finally:
        again.stop(timeout_s=30)


def test_a_key_under_the_heartbeats_name_without_an_expiry_is_refused_not_waited_on(redis_client: redis.Redis) -> None:
    from worker.heartbeat import ConsumerNameInUse, claim_consumer_name

    redis_client.set(heartbeat_key("hand-made"), json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(ConsumerNameInUse, match="without an expiry"):
        claim_consumer_name(redis_client, "hand-made", interval_s=1.0, info=dict)


def test_a_name_another_process_held_is_taken_once_its_heartbeat_lapses(redis_client: redis.Redis) -> None:
    from worker.heartbeat import claim_consumer_name

    assert claim_consumer_name(redis_client, "racing", interval_s=5.0, info=lambda: {"run": "first"})
    stored = redis_client.get(heartbeat_key("racing"))
    assert stored is not None
    # The same process (as an in-process test worker is) takes its own name over; a name held by another process is
    # only taken once its heartbeat lapses.
    record = json.loads(stored)
    record["pid"] = record["pid"] + 1
    redis_client.set(heartbeat_key("racing"), json.dumps(record), px=300)
    assert claim_consumer_name(redis_client, "racing", interval_s=5.0, info=lambda: {"run": "second"})
    assert stored_heartbeat(redis_client, "racing")["run"] == "second"


@pytest.fixture
def refusing_client(private_redis) -> Iterator[redis.Redis]:
    """A client of a server of the test's own, refusing every write (out of memory) once the test says so."""
    with redis.Redis.from_url(private_redis.url()) as client:
        yield client
        client.config_set("maxmemory", 0)


def _refuse_writes(client: redis.Redis) -> None:
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)
    with pytest.raises(redis.OutOfMemoryError):
        client.set("probe", "1")
    client.config_resetstat()  # the GETs counted from here are the claim's


def _gets(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


def test_under_refused_writes_a_free_name_is_taken_without_a_write(refusing_client: redis.Redis) -> None:
    from worker.heartbeat import claim_consumer_name

    _refuse_writes(refusing_client)
    assert claim_consumer_name(refusing_client, "oom-free", interval_s=1.0, info=dict)
    assert _gets(refusing_client) == 1
    assert not refusing_client.exists(heartbeat_key("oom-free"))  # the loop beats once writes are taken


def test_under_refused_writes_a_held_name_is_read_once_per_turn(refusing_client: redis.Redis) -> None:
    from worker.heartbeat import ConsumerNameInUse, claim_consumer_name

    refusing_client.set(heartbeat_key("oom-held"), json.dumps({"pid": 1, "host": "elsewhere"}))
    _refuse_writes(refusing_client)
    with pytest.raises(ConsumerNameInUse, match="without an expiry"):
        claim_consumer_name(refusing_client, "oom-held", interval_s=1.0, info=dict)
    assert _gets(refusing_client) == 1


def test_under_refused_writes_a_lapsing_heartbeat_of_another_process_is_waited_out(
    refusing_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    from worker.heartbeat import claim_consumer_name

    refusing_client.set(heartbeat_key("oom-lapsing"), json.dumps({"pid": os.getpid() + 1, "host": "elsewhere"}),
                        px=300)
    _refuse_writes(refusing_client)
    assert claim_consumer_name(refusing_client, "oom-lapsing", interval_s=1.0, info=dict)
    assert "waiting up to" in caplog.text
    assert refusing_client.get(heartbeat_key("oom-lapsing")) is None


@pytest.mark.parametrize("crash", [False, True], ids=["clean stop", "crash"])
def test_a_worker_that_crashes_leaves_its_last_beat_for_triage_a_clean_stop_does_not(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, crash: bool
) -> None:
    """`triage worker-down` names a worker that stopped beating without a clean stop by the last beat it left. A worker
    whose loop dies of an exception gives back its heartbeat in `run`'s finally like any other: it deleted its last
    beat too, so scaled out the triage said OK without a word of the one that had crashed."""
    from worker.names import last_beat_key
    from worker.service import Worker
    from worker.settings import WorkerSettings

    worker = Worker(WorkerSettings.from_env({}, redis_url=redis_url, consumer="crashing", http_addr="127.0.0.1:0"))
    monkeypatch.setattr(worker, "install_signal_handlers", lambda: None)

    def loop() -> None:
        assert is_alive(redis_client, "crashing")
        if crash:
            raise RuntimeError("a bug in the loop")

    monkeypatch.setattr(worker, "main_loop", loop)
    if crash:
        with pytest.raises(RuntimeError, match="a bug"):
            worker.run()
    else:
        assert worker.run() == 0
    assert not is_alive(redis_client, "crashing"), "the process is gone: its heartbeat goes with it"
    assert (redis_client.exists(last_beat_key("crashing")) == 1) is crash
