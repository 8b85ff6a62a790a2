"""The claim and the commit share one connection (`ScriptConnection`), their replies read in the order sent: whatever
happens to that connection underneath (the client's pool disconnected on a reconnect, redis-py's health check, a
flushed script cache), no reply is read as another's, no batch result is lost, and Redis still runs each claim
before its commit."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import deque

import numpy as np
import pytest
import redis

from tests.faults import FaultyModel
from tests.integration.streams import decided_ids, pending_count
from tests.integration.test_overlapped_commit import CONFIG, decided, publish, read
from worker.aggregator import AggregatorConfig
from worker.connection import connect
from worker.delivery import _CLAIM_LUA, _COMMIT_LUA, DeliveryScripts, ensure_group
from worker.names import CONSUMER_GROUP, INPUT_STREAM, processing_key
from worker.pipeline import EventPipeline, StageError
from worker.producer import make_event, publish_events


def test_a_reconnect_after_a_claim_was_given_up_on_keeps_the_replies_in_step(redis_client: redis.Redis,
                                                                               ensemble) -> None:
    """A batch fails in inference while the commit before it is in flight: its claim's reply is left to be dropped
    in turn. Then the worker reconnects (`Worker.reconnect`: the client's pool is disconnected). The claim's reply
    went with the old socket; the next batch's replies must not be read one behind."""
    ids = publish(redis_client, 30, "rc")
    model = FaultyModel(ensemble)
    pipeline = EventPipeline(DeliveryScripts(redis_client), model, AggregatorConfig(), CONFIG)  # type: ignore[arg-type]
    first, second, third = read(redis_client, 10), read(redis_client, 10), read(redis_client, 10)

    pipeline.submit(first)
    model.fail = True
    with pytest.raises(StageError, match="inference"):
        pipeline.submit(second)
    model.fail = False
    assert decided(pipeline.drain()) == [f"rc-{i}" for i in range(10)]
    redis_client.connection_pool.disconnect()  # Worker.reconnect, after finish_in_flight

    assert pipeline.submit(third) == []
    assert decided(pipeline.drain()) == [f"rc-{i}" for i in range(20, 30)]
    assert decided([pipeline.process(second)]) == [f"rc-{i}" for i in range(10, 20)]
    assert decided_ids(redis_client) == dict.fromkeys(ids, 1)
    assert pending_count(redis_client) == 0


@pytest.fixture
def client_checking_health_every_second(redis_url: str):
    """The worker's own client (`connect`), its connections PINGed before a command after 1 s unused, not 30."""
    client = connect(redis_url, read_timeout_s=0.1)
    client.connection_pool.connection_kwargs["health_check_interval"] = 1
    yield client
    client.close()


def test_a_stall_with_a_commit_in_flight_loses_no_batch_result(client_checking_health_every_second,
                                                                redis_client: redis.Redis, ensemble) -> None:
    """The worker stalls past the health-check interval (30 s in the worker) with a commit in flight; the next claim
    goes out on the same connection. redis-py PINGs the connection first: that PING must not read the commit's
    reply as its PONG."""
    client = client_checking_health_every_second
    ids = publish(redis_client, 30, "hc")
    pipeline = EventPipeline(DeliveryScripts(client), ensemble, AggregatorConfig(), CONFIG)
    batches = [read(redis_client, 10) for _ in range(3)]
    pipeline.process(batches[0])

    assert pipeline.submit(batches[1]) == []
    time.sleep(1.2)  # stalled (SIGSTOP, a paused VM) with the commit in flight
    finished = pipeline.submit(batches[2])
    assert decided(finished) == [f"hc-{i}" for i in range(10, 20)], "the batch in flight's result is recorded"
    assert decided(pipeline.drain()) == [f"hc-{i}" for i in range(20, 30)]
    assert decided_ids(redis_client) == dict.fromkeys(ids, 1)


def test_inference_outlasting_the_health_check_interval_keeps_the_claims_reply(client_checking_health_every_second,
                                                                               redis_client: redis.Redis,
                                                                               ensemble) -> None:
    """Idle for nearly the interval, then a batch whose inference takes the rest: its commit goes out after the
    interval, with the claim's reply unread on the connection."""
    client = client_checking_health_every_second
    ids = publish(redis_client, 20, "slowhc")
    model = FaultyModel(ensemble)
    pipeline = EventPipeline(DeliveryScripts(client), model, AggregatorConfig(), CONFIG)  # type: ignore[arg-type]
    pipeline.process(read(redis_client, 10))

    model.delay_s = 1.2
    assert pipeline.submit(read(redis_client, 10)) == []
    assert decided(pipeline.drain()) == [f"slowhc-{i}" for i in range(10, 20)]
    assert decided_ids(redis_client) == dict.fromkeys(ids, 1)


def test_a_claim_rerun_after_noscript_does_not_land_after_its_commit(redis_client: redis.Redis, ensemble) -> None:
    """Redis lost its script cache, and another worker has loaded the commit script again (its own NOSCRIPT) but not
    yet the claim: this worker's claim gets NOSCRIPT, its commit runs. Run again after that commit (which found the
    entry settled: dead-lettered by an operator while this worker stalled), the claim would leave a lease behind —
    what running both on one connection was to prevent."""
    ensure_group(redis_client)
    publish_events(redis_client, [make_event(correlation_id="warm", rng=np.random.default_rng(1)),
                                  make_event(correlation_id="settled-1", rng=np.random.default_rng(2))])
    pipeline = EventPipeline(DeliveryScripts(redis_client), ensemble, AggregatorConfig(), CONFIG)
    pipeline.process(read(redis_client, 1))
    entries = read(redis_client, 1)
    redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, entries[0].entry_id)  # settled elsewhere meanwhile

    redis_client.script_flush()
    redis_client.script_load(_COMMIT_LUA)  # another worker's NOSCRIPT recovery, between our claim and our commit
    pipeline.submit(entries)
    result = pipeline.drain()[0]
    assert result.decisions == [] and result.duplicates == 1
    assert redis_client.get(processing_key("settled-1")) is None, "no lease left behind by a claim run late"
    [claim_loaded] = redis_client.script_exists(hashlib.sha1(_CLAIM_LUA.encode()).hexdigest())
    assert claim_loaded, "not run again, but loaded: else no later claim runs either (every one refused NOSCRIPT)"


def test_the_first_batch_on_a_redis_that_never_saw_the_scripts_sets_its_leases(private_redis, ensemble) -> None:
    """A claim Redis does not know is loaded, not run again (above): the scripts are loaded when they are built, so
    a worker's first batch after a start shows its events in flight like every later one. Seen by an event that
    stays pending: its lease outlives the batch."""
    client = redis.Redis.from_url(private_redis.url())
    ensure_group(client)
    scripts = DeliveryScripts(client)
    shas = [hashlib.sha1(script.encode()).hexdigest() for script in (_CLAIM_LUA, _COMMIT_LUA)]
    assert client.script_exists(*shas) == [True, True]

    model = FaultyModel(ensemble)
    model.poison = 1.875
    first, poisoned = make_event(correlation_id="first", rng=np.random.default_rng(1)), make_event(
        matrix=np.full((60, 7), 1.875, dtype=np.float32), correlation_id="poisoned")
    publish_events(client, [first, poisoned])
    result = EventPipeline(scripts, model, AggregatorConfig(), CONFIG).process(read(client, 2))  # type: ignore[arg-type]

    assert [f.correlation_id for f in result.failed] == ["poisoned"]
    assert client.get(processing_key("poisoned")) is not None, "the first batch's claim ran"
    client.close()


def test_a_worker_reconnecting_after_a_batch_failed_with_a_commit_in_flight_records_every_batch(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The worker's own loop, one step at a time: a full batch's commit is in flight when the next batch fails in
    inference (its claim's reply left to be dropped in turn); then a reconnect is requested (the health monitor's
    recovery action, a failover refusal). Every later batch is decided and recorded once, none fails."""
    from tests.integration.test_overlapped_commit import started_worker

    ids = publish(redis_client, 40, "wrc")
    worker, results = started_worker(redis_url, "reconnecting", batch_size=10)
    try:
        assert worker.ensemble is not None and worker.pipeline is not None
        model = FaultyModel(worker.ensemble)
        worker.pipeline.ensemble = model  # type: ignore[assignment]  # a stand-in with the ensemble's infer
        worker.step()  # a full batch: its commit in flight, the next batch read ahead
        assert worker.pipeline.commit_in_flight  # type: ignore[union-attr]
        model.fail = True
        with pytest.raises(StageError, match="inference"):
            worker.step()
        worker.settle_before_failure()  # as main_loop does
        model.fail = False
        worker.request_reconnect()
        for _ in range(20):
            worker.step()
            if sum(len(r.decisions) for r in results) == 40:
                break
        worker.drain()
        assert sorted(d.correlation_id.encode() for r in results for d in r.decisions) == sorted(ids)
        assert decided_ids(redis_client) == dict.fromkeys(ids, 1)
        assert pending_count(redis_client) == 0
    finally:
        worker.shutdown()



class Interrupted(BaseException):
    """What a signal handler raises in the middle of the worker's work (its ForcedExit)."""


@pytest.mark.timeout(60)
def test_a_signal_landing_as_a_reply_is_handed_over_leaves_no_reply_read_as_another(
    redis_client: redis.Redis, ensemble
) -> None:
    """A forced exit's exception can land right after a reply was read off the socket, before it was handed over —
    here the claim's, read with the commit just sent. The worker then reads that commit's reply on its way out: it
    must get it or be told it is lost, never another's reply, nor wait for one that is not coming."""
    ids = publish(redis_client, 30, "sig")
    scripts = DeliveryScripts(redis_client)
    pipeline = EventPipeline(scripts, ensemble, AggregatorConfig(), CONFIG)
    pipeline.process(read(redis_client, 10))  # Redis has both scripts: the commit below runs, whatever is read
    first, second = read(redis_client, 10), read(redis_client, 10)

    class SignalAtHandOver(deque):  # type: ignore[type-arg]
        def popleft(self):  # type: ignore[no-untyped-def]
            scripts._connection._waiting = deque(self)  # once
            raise Interrupted

    scripts._connection._waiting = SignalAtHandOver(scripts._connection._waiting)
    with pytest.raises(Interrupted):
        pipeline.submit(first)  # its claim's reply read as the signal lands; its commit has gone out
    with contextlib.suppress(redis.ConnectionError):  # told it is lost: the batch is committed all the same
        assert decided(pipeline.drain()) == [f"sig-{i}" for i in range(10, 20)]
    assert decided([pipeline.process(second)]) == [f"sig-{i}" for i in range(20, 30)]
    assert decided_ids(redis_client) == dict.fromkeys(ids, 1)
    assert pending_count(redis_client) == 0


def test_refused_scripts_leave_no_garbage_cycles_behind(redis_client: redis.Redis) -> None:
    """Redis refusing every claim (out of memory: a commit whose XACK comes first still runs) must not leave a cycle
    per batch — an exception holding the frames that hold it — for the collector to find: with the worker's rare
    young-generation collections, those piled up and a full collection paused the worker ~100 ms at 1,000 events/s."""
    import gc
    import weakref

    ensure_group(redis_client)
    scripts = DeliveryScripts(redis_client)
    scripts.claim("w", 30_000, [("warm", b"1-0")])  # loaded: the refusal below is Redis's, not NOSCRIPT
    redis_client.config_set("maxmemory", 1)
    gc.disable()  # only reference counting frees what follows
    try:
        pending = scripts.send_claim("w", 30_000, [("refused", b"2-0")])
        with pytest.raises(redis.ResponseError, match="maxmemory") as refused:
            pending.settle()
        refusal = weakref.ref(refused.value)
        del refused, pending
        assert refusal() is None, "the refusal outlived its handling: a cycle holds it and its frames for the collector"
    finally:
        gc.enable()
        redis_client.config_set("maxmemory", 0)
        scripts.close()
