"""The worker's pass over the entries it holds (after a reconnect or a refusal): each is read once, entries deleted
from the stream meanwhile are acked and passed over without ending the pass, and retries it forgave are forgotten
once their entries are settled."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import cast

import numpy as np
import pytest
import redis

from tests.events import many_events
from tests.integration.streams import pending_count, read_group
from worker.embedded_redis import EmbeddedRedis
from worker.names import CONSUMER_GROUP, INPUT_STREAM
from worker.producer import make_event, publish_events
from worker.service import Worker
from worker.settings import WorkerSettings


@pytest.fixture
def idle_worker(redis_url: str, redis_client: redis.Redis) -> Iterator[Worker]:
    """A started worker whose loop does not run: the test drives its reads."""
    settings = WorkerSettings.from_env({}, redis_url=redis_url, consumer="holder", http_addr="127.0.0.1:0")
    worker = Worker(settings)
    worker.startup()
    yield worker
    worker.shutdown()


def hold(client: redis.Redis, n: int) -> list[bytes]:
    """n events, delivered to the worker's consumer and not acked: what it held when Redis went away."""
    publish_events(client, many_events(n, prefix="h", seed=8))
    messages = read_group(client, "holder", n)
    return [entry_id for entry_id, _ in messages]


def test_entries_deleted_from_the_stream_do_not_end_the_pass(idle_worker: Worker, redis_client: redis.Redis) -> None:
    first, second, third = hold(redis_client, 3)
    redis_client.xdel(INPUT_STREAM, first, second)  # trimmed while held: they come back without fields
    idle_worker.reread_own_pending(retry=True)

    [entry] = idle_worker.read_batch(count=1, block=False)

    assert entry.entry_id == third and entry.delivery_count == 1  # the re-read was forgiven
    assert pending_count(redis_client) == 1, "the deleted ones were acked"


def test_each_held_entry_is_read_once_per_pass_then_new_ones(idle_worker: Worker, redis_client: redis.Redis) -> None:
    held = hold(redis_client, 3)
    idle_worker.reread_own_pending(retry=True)
    seen = [e.entry_id for _ in range(3) for e in idle_worker.read_batch(count=1, block=False)]
    assert seen == held  # none acked (as if each failed): still one read each, in order
    publish_events(redis_client, [make_event(correlation_id="new", rng=np.random.default_rng(9))])
    [new] = idle_worker.read_batch(count=1, block=False)
    assert new.fields[b"correlation_id"] == b"new" and not idle_worker.state.read_own_pending

    # The three stay pending; their forgiven retries are taken back in Redis's count, nothing kept in memory.
    assert pending_counts(redis_client, held) == [1, 1, 1] and not idle_worker._own_retries


def pending_counts(client: redis.Redis, entry_ids: list[bytes]) -> list[int]:
    return [cast(int, client.xpending_range(INPUT_STREAM, CONSUMER_GROUP, min=e, max=e, count=1)[0]["times_delivered"])
            for e in entry_ids]


def test_without_xclaim_retries_are_forgiven_in_memory_while_their_entries_are_pending(
    redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    """Under an ACL user from before retries were forgiven in Redis (no XCLAIM), the worker still forgives its own,
    in its memory, and forgets them once their entries are settled."""
    redis_client.acl_setuser("no-xclaim", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-xclaim"])
    try:
        url = redis_server.url().replace("redis://", "redis://no-xclaim:pw@", 1)
        settings = WorkerSettings.from_env({}, redis_url=url, consumer="holder", http_addr="127.0.0.1:0")
        worker = Worker(settings)
        worker.startup()
        try:
            held = hold(redis_client, 3)
            worker.reread_own_pending(retry=True)
            seen = [e for _ in range(3) for e in worker.read_batch(count=1, block=False)]
            assert [e.entry_id for e in seen] == held and {e.delivery_count for e in seen} == {1}
            assert set(worker._own_retries) == set(held)
            redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, held[0])
            worker.reread_own_pending()
            while worker.state.read_own_pending:
                worker.read_batch(count=10, block=False)
            assert set(worker._own_retries) == set(held[1:])
        finally:
            worker.shutdown()
    finally:
        redis_client.acl_deluser("no-xclaim")


def test_retries_forgiven_stay_forgiven_for_the_consumer_that_takes_the_entry_over(
    idle_worker: Worker, redis_client: redis.Redis, redis_url: str
) -> None:
    """A refusal that lasts (a key of the wrong type, OOM, READONLY): the holder reads its entry again at each retry,
    and Redis counts every such read as a delivery. Those retries are forgiven in Redis's count itself, not only in
    the holder's memory: the worker that takes the entry over (the holder restarted under a new consumer name, or
    its breaker still open when another's closed) would otherwise find it delivered past max_deliveries and
    dead-letter a sound event."""
    [held] = hold(redis_client, 1)
    for _ in range(2 * idle_worker.settings.max_deliveries):  # each refused commit: one more pass over what it holds
        idle_worker.reread_own_pending(retry=True)
        [entry] = idle_worker.read_batch(count=1, block=False)
        assert entry.entry_id == held and entry.delivery_count == 1
        assert idle_worker.read_batch(count=1, block=False) == []  # the pass is over; nothing new
    [row] = redis_client.xpending_range(INPUT_STREAM, CONSUMER_GROUP, min=held, max=held, count=1)
    assert row["times_delivered"] == 1, "`tacticalctl pending` shows the deliveries that counted"

    settings = WorkerSettings.from_env({}, redis_url=redis_url, consumer="taker", http_addr="127.0.0.1:0",
                                       claim_min_idle_ms=1)
    taker = Worker(settings)
    taker.startup()
    try:
        time.sleep(0.05)
        _, [claimed] = taker.claim_stale("0-0", count=10)
    finally:
        taker.shutdown()
    assert claimed.entry_id == held and claimed.delivery_count == 2  # its first read, and this claim
