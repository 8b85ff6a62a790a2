"""The worker's pass over the entries it holds (after a reconnect or a refusal): each is read once, entries deleted
from the stream meanwhile are acked and passed over without ending the pass, and retries it forgave are forgotten
once their entries are settled."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import redis

from tests.events import many_events
from tests.integration.streams import pending_count
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
    [(_, messages)] = client.xreadgroup(CONSUMER_GROUP, "holder", {INPUT_STREAM: ">"}, count=n)
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

    # The three stay pending; only their forgiven retries are remembered, and only while they are pending.
    assert set(idle_worker._own_retries) == set(held)
    redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, held[0])
    idle_worker.reread_own_pending()
    while idle_worker.state.read_own_pending:
        idle_worker.read_batch(count=10, block=False)
    assert set(idle_worker._own_retries) == set(held[1:])
