"""After a short batch the worker parks its next blocking read in Redis before waiting on the commit. Whatever that
read is delivered is decided once: on the next turn, on the way out, or — after a Redis error or while the breaker
is open — read again from this consumer's pending entries. Driven turn by turn (`Worker.step`), in this process."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import redis

from tests.integration.streams import decided_ids, pending_count, wait_for
from worker.delivery import ensure_group
from worker.names import CONSUMER_GROUP, INPUT_STREAM
from worker.producer import make_event, publish_events
from worker.service import Worker
from worker.settings import WorkerSettings

CONSUMER = "parking"


@pytest.fixture
def worker(redis_url: str, redis_client: redis.Redis) -> Iterator[Worker]:
    ensure_group(redis_client)
    settings = WorkerSettings.from_env({}, redis_url=redis_url, consumer=CONSUMER, http_addr="127.0.0.1:0")
    in_process = Worker(settings)
    in_process.startup()
    yield in_process
    in_process.finish_in_flight()
    in_process.shutdown()


def publish(client: redis.Redis, *ids: str) -> None:
    rng = np.random.default_rng(5)
    publish_events(client, [make_event(correlation_id=cid, rng=rng) for cid in ids])


def delivered_to_worker(client: redis.Redis) -> int:
    """Entries Redis has handed to the worker's consumer and that are not acked yet."""
    summary = client.xpending(INPUT_STREAM, CONSUMER_GROUP)
    return {c["name"]: c["pending"] for c in summary["consumers"]}.get(CONSUMER.encode(), 0)


def test_after_a_short_batch_the_next_event_comes_back_on_the_parked_read(
    worker: Worker, redis_client: redis.Redis
) -> None:
    assert worker.reader is not None
    publish(redis_client, "p-1")
    worker.step()
    assert decided_ids(redis_client) == {b"p-1": 1}
    assert worker.reader.outstanding, "a read is parked while the commit is waited for and recorded"

    sends: list[str] = []
    send = worker.reader.send
    worker.reader.send = lambda start, count, block_ms=None: (sends.append(start), send(start, count, block_ms))[1]
    publish(redis_client, "p-2")
    worker.step()

    assert decided_ids(redis_client) == {b"p-1": 1, b"p-2": 1}
    assert sends == [">"], "the turn took its event from the parked read and parked the next one only"
    assert pending_count(redis_client) == 0


def test_an_idle_turn_parks_nothing(worker: Worker, redis_client: redis.Redis) -> None:
    assert worker.reader is not None
    worker.step()  # nothing queued: the read times out empty
    assert not worker.reader.outstanding, "nothing was decided, so the next turn reads afresh"


def test_on_the_way_out_what_the_parked_read_brings_is_decided_and_committed(
    worker: Worker, redis_client: redis.Redis
) -> None:
    assert worker.reader is not None
    publish(redis_client, "out-1")
    worker.step()
    publish(redis_client, "out-2")  # delivered to the parked read
    wait_for(lambda: delivered_to_worker(redis_client) == 1, what="the parked read to be delivered out-2")
    worker.state.should_exit = True

    worker.finish_in_flight()

    assert not worker.reader.outstanding
    assert decided_ids(redis_client) == {b"out-1": 1, b"out-2": 1}
    assert pending_count(redis_client) == 0


def test_a_parked_read_given_up_after_a_redis_error_loses_nothing(worker: Worker, redis_client: redis.Redis) -> None:
    assert worker.reader is not None
    publish(redis_client, "err-0")
    worker.step()
    publish(redis_client, "err-1", "err-2", "err-3")
    wait_for(lambda: delivered_to_worker(redis_client) >= 1, what="the parked read to be delivered events")

    worker.reread_own_pending()  # what the loop does on a Redis error: the parked read's connection is closed
    assert not worker.reader.outstanding
    for _ in range(3):
        worker.step()

    assert decided_ids(redis_client) == {f"err-{i}".encode(): 1 for i in range(4)}
    assert pending_count(redis_client) == 0


def test_a_read_parked_before_the_breaker_opened_takes_nothing_and_loses_nothing(
    worker: Worker, redis_client: redis.Redis
) -> None:
    assert worker.reader is not None
    publish(redis_client, "brk-0")
    worker.step()
    publish(redis_client, "brk-1", "brk-2")
    wait_for(lambda: delivered_to_worker(redis_client) >= 1, what="the parked read to be delivered events")
    worker.breaker.force_open("test: opened between two turns")

    worker.step()
    assert not worker.reader.outstanding, "the open breaker gave up the parked read"
    assert decided_ids(redis_client) == {b"brk-0": 1}, "nothing is decided while the breaker is open"

    worker.breaker.reset("test@ci")
    for _ in range(3):
        worker.step()
    assert decided_ids(redis_client) == {b"brk-0": 1, b"brk-1": 1, b"brk-2": 1}
    assert pending_count(redis_client) == 0


def test_with_parking_off_a_short_batch_leaves_no_read_parked(redis_url: str, redis_client: redis.Redis) -> None:
    ensure_group(redis_client)
    settings = WorkerSettings.from_env({"TACTICAL_PARK_NEXT_READ": "false"}, redis_url=redis_url, consumer=CONSUMER,
                                       http_addr="127.0.0.1:0")
    unparked = Worker(settings)
    unparked.startup()
    try:
        publish(redis_client, "off-1")
        unparked.step()
        assert unparked.reader is not None and not unparked.reader.outstanding
        assert decided_ids(redis_client) == {b"off-1": 1}
    finally:
        unparked.shutdown()
