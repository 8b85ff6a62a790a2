"""A worker starting while Redis goes away waits for it again, never exits. Found by the chaos soak: Redis restarted
between the worker's first PING and its first writes (its name, its start counted), and the worker ended with exit 1
on "Connection reset by peer"."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import worker.service as service
from tests.events import many_events
from tests.integration.streams import decided_ids, wait_for
from worker.embedded_redis import EmbeddedRedis
from worker.heartbeat import Heartbeat, heartbeat_key
from worker.producer import publish_events
from worker.service import Worker
from worker.settings import WorkerSettings

CONSUMER = "starting"


@pytest.fixture
def starting_worker(private_redis: EmbeddedRedis) -> Iterator[Worker]:
    settings = WorkerSettings.from_env({}, redis_url=private_redis.url(), consumer=CONSUMER, http_addr="127.0.0.1:0",
                                       batch_size=10, health_interval_s=0.1)
    worker = Worker(settings)
    yield worker
    worker.state.should_exit = True
    worker.shutdown()


def redis_gone_for_a_while(server: EmbeddedRedis, call: Callable[..., Any]) -> Callable[..., Any]:
    """`call`, the first time after Redis was killed (it comes back half a second later): its commands meet a dead
    connection, then a refused one, as during a restart."""
    calls: list[int] = []

    def after_an_outage(*args: Any, **kwargs: Any) -> Any:
        if not calls:
            server.stop(kill=True)
            threading.Timer(0.5, server.start).start()
        calls.append(1)
        return call(*args, **kwargs)

    return after_an_outage


def test_redis_gone_while_the_worker_takes_its_name_is_waited_for(starting_worker: Worker, private_redis,
                                                                  monkeypatch, caplog) -> None:
    real_claim = Heartbeat.claim_name
    claims: list[int] = []

    def claim(self: Heartbeat, *args: Any, **kwargs: Any) -> bool:
        claims.append(1)
        return real_claim(self, *args, **kwargs)

    monkeypatch.setattr(Heartbeat, "claim_name", redis_gone_for_a_while(private_redis, claim))
    with caplog.at_level(logging.WARNING, logger="tactical.worker"):
        starting_worker.startup()

    assert len(claims) == 2, "the name is taken once Redis is back"
    assert starting_worker.heartbeat is not None
    assert redis.Redis.from_url(private_redis.url()).exists(heartbeat_key(CONSUMER))
    assert "Redis went away while this worker took its name" in caplog.text


def test_redis_gone_while_the_start_is_counted_does_not_end_the_worker(starting_worker: Worker, private_redis,
                                                                       monkeypatch, caplog) -> None:
    monkeypatch.setattr(service, "record_restart", redis_gone_for_a_while(private_redis, service.record_restart))
    with caplog.at_level(logging.WARNING, logger="tactical.worker"):
        starting_worker.startup()
    assert "this start may not have been counted (Redis went away" in caplog.text
    assert not starting_worker.state.redis_up, "the loop is told to wait for Redis"

    crashed: list[BaseException] = []

    def loop() -> None:
        try:
            starting_worker.main_loop()
        except BaseException as exc:  # asserted below: there is none
            crashed.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    client = redis.Redis.from_url(private_redis.url())

    def redis_back() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_for(redis_back, timeout_s=30)
    publish_events(client, many_events(5, prefix="after-start"))
    wait_for(lambda: sum(decided_ids(client).values()) == 5, timeout_s=60)
    starting_worker.state.should_exit = True
    thread.join(timeout=30)
    assert not crashed, f"the worker's loop died: {crashed[0]!r}"


@pytest.mark.parametrize(("db", "warned"), [(0, True), (2, False)])
def test_a_worker_on_another_database_than_the_runbooks_says_so(
    private_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture, db: int, warned: bool
) -> None:
    """A URL without its /2 reads database 0: the worker runs and never sees an event the producers send to 2."""
    settings = WorkerSettings.from_env({}, redis_url=private_redis.url(db=db), consumer=f"db{db}",
                                       http_addr="127.0.0.1:0", health_interval_s=0.1)
    worker = Worker(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="tactical.worker"):
            worker.startup()
    finally:
        worker.state.should_exit = True
        worker.shutdown()
    said = [r.getMessage() for r in caplog.records if "reads Redis database" in r.getMessage()]
    assert said == ([f"worker db{db} reads Redis database {db}, not 2 where the runbook's producers and tools are: "
                     "check TACTICAL_REDIS_URL ends in /2"] if warned else [])
