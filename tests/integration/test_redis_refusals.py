"""Redis answering but refusing: read-only after a failover, out of memory, a key of ours holding someone else's
type. The worker must not crash or lose anything: what it holds stays pending, the refusals count as errors and
breaker failures, and once Redis takes writes again every event is decided exactly once. A server of each test's
own (`private_redis`): these tests make it refuse."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from tests.events import many_events
from tests.faults import FaultyModel
from tests.integration.streams import decided_ids, pending_count, wait_for, wait_settled
from worker.breaker import BreakerState, request_reset
from worker.delivery import ensure_group
from worker.embedded_redis import EmbeddedRedis, free_port
from worker.names import (
    CONSUMER_GROUP,
    DEAD_LETTER_STREAM,
    DECISIONS_STREAM,
    INPUT_STREAM,
    completed_key,
    processing_key,
)
from worker.producer import publish_events
from worker.service import Worker


def events(n: int, prefix: str):
    return many_events(n, prefix=prefix, seed=11)


@pytest.fixture
def client(private_redis: EmbeddedRedis) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(private_redis.url()) as client:
        yield client
        client.config_set("maxmemory", 0)
        client.replicaof("NO", "ONE")


@pytest.fixture
def start_worker(private_redis: EmbeddedRedis, in_process_worker) -> Callable[..., tuple[Worker, FaultyModel]]:
    """An in-process worker on the private server (`in_process_worker`)."""
    return functools.partial(in_process_worker, private_redis.url(), "refusals")


def test_a_failover_to_read_only_is_waited_out_and_nothing_is_lost(client, start_worker) -> None:
    worker, _ = start_worker()
    publish_events(client, events(5, "before"))
    wait_settled(client, 5)

    client.replicaof("127.0.0.1", free_port())  # this server becomes a replica of nobody: it refuses writes
    wait_for(lambda: worker.telemetry.window.snapshot().errors, what="the refused reads counted as errors")
    wait_for(lambda: worker.breaker.consecutive_failures >= 2, what="refusals counted as breaker failures")

    client.replicaof("NO", "ONE")  # the failover is over: writes are taken again
    publish_events(client, events(5, "after"))
    wait_settled(client, 10)
    assert decided_ids(client) == {f"{p}-{i}".encode(): 1 for p in ("before", "after") for i in range(5)}


def test_out_of_memory_at_startup_and_in_the_loop_is_waited_out(client, start_worker) -> None:
    ensure_group(client)  # a deployment's group exists already
    publish_events(client, events(5, "oom"))
    client.config_set("maxmemory", 1)  # every write refused: the restart count, the heartbeat, the reads
    worker, _ = start_worker()  # its start cannot be counted; it starts anyway
    wait_for(lambda: sum(worker.telemetry.window.snapshot().errors.values()) >= 2, what="refusals counted")
    assert client.xlen(DECISIONS_STREAM) == 0

    client.config_set("maxmemory", 0)
    wait_settled(client, 5)
    assert decided_ids(client) == {f"oom-{i}".encode(): 1 for i in range(5)}


def test_a_processing_key_of_another_type_is_taken_over(client, start_worker) -> None:
    sample = events(3, "lease")
    client.hset(processing_key(sample[1].correlation_id), "not", "a lease")
    worker, _ = start_worker()
    publish_events(client, sample)

    wait_settled(client, 3)
    assert decided_ids(client) == {f"lease-{i}".encode(): 1 for i in range(3)}
    assert not client.exists(processing_key(sample[1].correlation_id))
    assert client.exists(completed_key(sample[1].correlation_id))
    assert worker.telemetry.window.snapshot().errors == {}


def test_an_output_stream_of_another_type_holds_the_batch_back_until_it_is_fixed(client, start_worker) -> None:
    client.set(DECISIONS_STREAM, "someone else's string")
    worker, _ = start_worker()
    publish_events(client, events(4, "typed"))

    wait_for(lambda: worker.telemetry.window.snapshot().errors.get("commit", 0) >= 2, what="the commit refused")
    (group,) = client.xinfo_groups(INPUT_STREAM)
    assert pending_count(client) + group["lag"] == 4, "nothing acked: every event pending or still queued"
    assert client.get(DECISIONS_STREAM) == b"someone else's string"

    client.delete(DECISIONS_STREAM)
    wait_settled(client, 4)
    assert decided_ids(client) == {f"typed-{i}".encode(): 1 for i in range(4)}


def test_failures_between_idle_reads_still_open_the_breaker(client, start_worker) -> None:
    # Sparse traffic that fails every time: the empty reads in between must not clear the count.
    worker, model = start_worker(batch_size=1, breaker_failure_threshold=3, claim_min_idle_ms=60_000)
    model.fail = True
    for i in range(3):
        publish_events(client, events(1, f"sparse{i}"))

        def counted(n: int = i) -> bool:
            return worker.breaker.consecutive_failures > n or worker.breaker.state is BreakerState.OPEN

        wait_for(counted, what=f"failure {i + 1} counted")
        threading.Event().wait(0.3)  # empty reads (blocking 100 ms each) before the next event
    assert worker.breaker.state is BreakerState.OPEN
    assert pending_count(client) == 3


def test_a_half_open_breaker_closes_only_on_an_event_decided(client, start_worker) -> None:
    worker, model = start_worker(batch_size=1, breaker_failure_threshold=1, breaker_reset_timeout_s=0.5,
                                 claim_min_idle_ms=60_000)
    model.fail = True
    publish_events(client, events(1, "trip"))
    wait_for(lambda: worker.breaker.state is not BreakerState.CLOSED, what="the breaker opened")
    model.fail = False
    # The failed entry stays pending on this consumer (reclaimed only after a minute): the stream has nothing new.
    wait_for(lambda: worker.breaker.state is BreakerState.HALF_OPEN, what="half-open after the timeout")
    threading.Event().wait(1.0)  # empty trial reads: ten of them
    assert worker.breaker.state is BreakerState.HALF_OPEN, "an empty read is no trial"

    publish_events(client, events(1, "trial"))
    wait_for(lambda: worker.breaker.state is BreakerState.CLOSED, what="closed by the trial event")
    assert decided_ids(client)[b"trial-0"] == 1


def test_retries_of_a_refused_commit_do_not_count_against_max_deliveries(client, start_worker) -> None:
    # Every retry re-reads the batch (Redis counts a delivery each time, taken back); the events are not at fault.
    client.set(DECISIONS_STREAM, "someone else's string")
    ensure_group(client)
    publish_events(client, events(4, "retried"))  # queued first: two full batches of 2, the second read ahead
    # The breaker is kept closed (threshold 1000) and the backoff soon outlasts the min-idle (300 ms): the worker's
    # own entries look stale, but it re-reads them itself rather than reclaim them (a reclaim counts a delivery).
    worker, _ = start_worker(max_deliveries=2, batch_size=2)
    wait_for(lambda: worker.telemetry.window.snapshot().errors.get("commit", 0) >= 6, timeout_s=90,
             what="refused tries backing off past the min-idle")
    errors = worker.telemetry.window.snapshot().errors
    # The first refusal is read while the second batch is decided: still the commit's, not the read's.
    assert "read" not in errors
    assert "reclaim" not in errors, "the worker reclaimed its own entries while retrying them"
    delivered = max(e["times_delivered"] for e in client.xpending_range(INPUT_STREAM, CONSUMER_GROUP, "-", "+", 10))
    # Redis counts each re-read, and the worker takes it back at once (XCLAIM RETRYCOUNT): 2 only in between.
    assert delivered <= 2, "each retry's re-read is taken back in Redis's count, for any consumer to read"

    client.delete(DECISIONS_STREAM)
    wait_settled(client, 4)
    assert decided_ids(client) == {f"retried-{i}".encode(): 1 for i in range(4)}
    assert client.xlen(DEAD_LETTER_STREAM) == 0


def test_refused_commits_under_a_backlog_open_the_breaker(client, start_worker) -> None:
    # Full batches leave each commit in flight while the next batch is decided: the refusal surfaces a turn later,
    # and must still add up (and back off), not alternate with a success that was never confirmed.
    client.set(DECISIONS_STREAM, "someone else's string")
    ensure_group(client)
    publish_events(client, events(200, "backlog"))
    worker, _ = start_worker(breaker_failure_threshold=3)
    wait_for(lambda: worker.breaker.state is BreakerState.OPEN, timeout_s=30, what="the breaker open")
    assert client.xlen(DEAD_LETTER_STREAM) == 0

    client.delete(DECISIONS_STREAM)
    request_reset(client, "test@ci")
    wait_settled(client, 200, timeout_s=120)
    assert decided_ids(client) == {f"backlog-{i}".encode(): 1 for i in range(200)}
    assert client.xlen(DEAD_LETTER_STREAM) == 0


def test_a_lone_half_open_worker_tries_its_own_failed_event(client, start_worker) -> None:
    # No new traffic: the trial is the stale entry whose batch failed, not an empty read forever.
    worker, model = start_worker(batch_size=1, breaker_failure_threshold=1, breaker_reset_timeout_s=0.5,
                                 claim_min_idle_ms=300)
    model.fail = True
    publish_events(client, events(1, "alone"))
    wait_for(lambda: worker.breaker.state is not BreakerState.CLOSED, what="the breaker opened")
    model.fail = False
    wait_settled(client, 1, timeout_s=30)
    assert decided_ids(client) == {b"alone-0": 1}
    # The decision is readable as soon as Redis ran the commit; the worker closes the breaker once it has read the
    # commit's reply, a moment later.
    wait_for(lambda: worker.breaker.state is BreakerState.CLOSED, what="the trial's success closing the breaker")


def test_the_triage_says_when_redis_refuses_writes_as_redis_itself_judges(client, private_redis) -> None:
    """The alert history's caveat follows what a write would meet now: refused on a read-only replica and at
    maxmemory with nothing to evict; taken again when Redis can evict (a volatile-* policy with keys that expire)."""
    from worker.ops.probes import probe_alert_history
    from worker.ops.sources import Sources
    from worker.settings import default_models_dir

    sources = Sources(private_redis.url(), "http://127.0.0.1:1", default_models_dir())

    def caveat() -> str:
        [finding] = probe_alert_history(sources)
        return finding.summary

    assert "refuses writes" not in caveat()
    client.replicaof("127.0.0.1", free_port())
    assert "Redis refuses writes now (a read-only replica)" in caveat()
    client.replicaof("NO", "ONE")
    client.set("tactical:completed:old", "x" * 1_000_000, ex=3600)  # a key it may evict, big enough to free room
    client.config_set("maxmemory-policy", "volatile-lru")
    try:
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 200_000)
        assert "refuses writes" not in caveat()  # it evicted the key that expires to take the write
        assert not client.exists("tactical:completed:old")
        client.config_set("maxmemory", 1)
        assert "Redis refuses writes now (maxmemory reached, nothing it may evict)" in caveat()
    finally:
        client.config_set("maxmemory", 0)
        client.config_set("maxmemory-policy", "noeviction")


def test_the_triage_names_a_refusal_without_a_class_and_paused_writes(client, private_redis) -> None:
    """Refusals redis-py has no class for (NOREPLICAS, MISCONF) are refusals all the same; and while writes are paused
    (CLIENT PAUSE WRITE, a FAILOVER) Redis holds a write without answering: said after a second, not waited out."""
    from worker.ops.probes import probe_alert_history
    from worker.ops.sources import Sources
    from worker.settings import default_models_dir

    sources = Sources(private_redis.url(), "http://127.0.0.1:1", default_models_dir())
    client.config_set("min-replicas-to-write", 1)
    try:
        with pytest.raises(redis.ResponseError, match=r"^NOREPLICAS"):  # what the workers meet
            client.set("tactical:probe", "1")
        [finding] = probe_alert_history(sources)
        assert "Redis refuses writes now (fewer good replicas than min-replicas-to-write)" in finding.summary
    finally:
        client.config_set("min-replicas-to-write", 0)
    client.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")
    try:
        started = time.monotonic()
        [finding] = probe_alert_history(sources)
        assert "Redis refuses writes now (writes paused" in finding.summary
        assert time.monotonic() - started < 10
    finally:
        client.execute_command("CLIENT", "UNPAUSE")
