"""One event the agents cannot decide, in a batch of good ones: the good ones are decided (exactly as in a batch)
and committed at once; only the poison event stays pending, is retried, and is dead-lettered after max_deliveries.
Before, the whole batch was retried with it and went to the dead letters together."""

from __future__ import annotations

import dataclasses
from collections.abc import Set as AbstractSet

import numpy as np
import pytest
import redis

from tests.faults import FaultyModel
from tests.integration.streams import decided_ids, pending_count, read_group, wait_for, wait_settled
from worker import stream_entries
from worker.aggregator import AggregatorConfig
from worker.breaker import BreakerState
from worker.delivery import DeliveryScripts, ensure_group
from worker.inference import AgentEnsemble
from worker.names import DEAD_LETTER_STREAM, DECISIONS_STREAM, processing_key
from worker.ops.dead_letters import replay_dead_letters, select_dead_letters
from worker.pipeline import EventPipeline, PipelineConfig, StageError, StreamEntry
from worker.producer import make_event, publish_events
from worker.records import SynergyEvent
from worker.telemetry import Telemetry

POISON = 1.875  # the first feature of the poison event's first bar: FaultyModel.poison
CONFIG = PipelineConfig(consumer="poison", processing_lease_ms=30_000, completed_ttl_s=3600, max_deliveries=5,
                        max_event_bytes=65_536)


def events(n: int, prefix: str, poisoned: AbstractSet[int] = frozenset()) -> list[SynergyEvent]:
    rng = np.random.default_rng(5)
    made = []
    for i in range(n):
        event = make_event(correlation_id=f"{prefix}-{i}", rng=rng)
        if i in poisoned:
            matrix = event.matrix.copy()
            matrix[0, 0] = POISON
            event = dataclasses.replace(event, matrix=matrix)
        made.append(event)
    return made


def read_all(client: redis.Redis, count: int) -> list[StreamEntry]:
    messages = read_group(client, CONFIG.consumer, count)
    return [StreamEntry(entry_id, fields) for entry_id, fields in messages]


@pytest.fixture
def poisoned_pipeline(redis_client: redis.Redis, ensemble: AgentEnsemble) -> tuple[FaultyModel, EventPipeline]:
    ensure_group(redis_client)
    model = FaultyModel(ensemble)
    model.poison = POISON
    return model, EventPipeline(DeliveryScripts(redis_client), model, AggregatorConfig(), CONFIG)  # type: ignore[arg-type]


def test_the_good_events_of_a_batch_are_committed_and_only_the_poison_one_stays_pending(
    redis_client: redis.Redis, ensemble: AgentEnsemble, poisoned_pipeline: tuple[FaultyModel, EventPipeline]
) -> None:
    _, pipeline = poisoned_pipeline
    batch = events(10, "p", poisoned={3})
    publish_events(redis_client, batch)

    result = pipeline.process(read_all(redis_client, 10))

    assert [d.correlation_id for d in result.decisions] == [f"p-{i}" for i in range(10) if i != 3]
    [failed] = result.failed
    assert (failed.correlation_id, failed.stage) == ("p-3", "inference")
    assert "injected poison event" in failed.reason
    assert pending_count(redis_client) == 1 and b"p-3" not in decided_ids(redis_client)
    # Decided alone, each good event got the decision it gets in a batch of its own kind.
    good = [e for e in batch if e.correlation_id != "p-3"]
    probabilities, confidence = ensemble.infer(np.stack([e.matrix for e in good]))
    from worker.aggregator import aggregate_batch

    batched = aggregate_batch(good, probabilities, confidence, AggregatorConfig(), ensemble.version)
    assert [(d.action, d.scores, d.execute) for d in result.decisions] == [
        (d.action, d.scores, d.execute) for d in batched]


def test_a_failure_of_the_whole_batch_that_no_event_repeats_alone_commits_them_all(
    redis_client: redis.Redis, poisoned_pipeline: tuple[FaultyModel, EventPipeline]
) -> None:
    model, pipeline = poisoned_pipeline
    publish_events(redis_client, events(10, "t"))
    model.fail_next = True  # one failed forward pass, then the model works
    result = pipeline.process(read_all(redis_client, 10))
    assert len(result.decisions) == 10 and result.failed == []
    assert pending_count(redis_client) == 0
    # Nothing was lost, but the failed pass over the batch is on record: one error of its own operation.
    assert result.batch_error == "inference failed: RuntimeError: injected model failure"
    telemetry = Telemetry()
    telemetry.record_batch(result)
    assert telemetry.window.snapshot().errors == {"batch": 1}
    assert telemetry.metrics.registry.get_sample_value("tactical_errors_total", {"operation": "batch"}) == 1


def test_a_model_that_fails_every_event_fails_the_batch_as_before(
    redis_client: redis.Redis, poisoned_pipeline: tuple[FaultyModel, EventPipeline]
) -> None:
    model, pipeline = poisoned_pipeline
    publish_events(redis_client, events(10, "f"))
    model.fail = True
    with pytest.raises(StageError, match="inference failed: RuntimeError: injected model failure") as raised:
        pipeline.process(read_all(redis_client, 10))
    assert raised.value.events == 10
    assert pending_count(redis_client) == 10


def test_a_lone_poison_event_fails_as_a_model_failure_even_after_the_agents_decided_others(
    redis_client: redis.Redis, poisoned_pipeline: tuple[FaultyModel, EventPipeline]
) -> None:
    """Alone, an event the agents cannot decide twice is not told from a broken model (another event they still
    decide proves nothing: a model may be broken on part of its inputs): the batch fails, a breaker failure, and the
    event waits in the stream rather than being dead-lettered as the event's fault."""
    _, pipeline = poisoned_pipeline
    publish_events(redis_client, events(1, "good"))
    assert len(pipeline.process(read_all(redis_client, 1)).decisions) == 1
    publish_events(redis_client, events(1, "lone", poisoned={0}))

    with pytest.raises(StageError, match="inference failed: RuntimeError: injected poison event"):
        pipeline.process(read_all(redis_client, 1))
    assert pending_count(redis_client) == 1


def test_a_lone_event_whose_failure_does_not_repeat_is_decided_at_once(
    redis_client: redis.Redis, poisoned_pipeline: tuple[FaultyModel, EventPipeline]
) -> None:
    """Alone in its batch, an event is tried once more at once, as each event of a failed batch is: a failure that
    does not repeat is on record (operation `batch`) and costs nothing else — no breaker failure, no wait."""
    model, pipeline = poisoned_pipeline
    publish_events(redis_client, events(1, "once"))
    model.fail_next = True

    result = pipeline.process(read_all(redis_client, 1))

    assert [d.correlation_id for d in result.decisions] == ["once-0"] and result.failed == []
    assert result.batch_error == "inference failed: RuntimeError: injected model failure"
    assert pending_count(redis_client) == 0


def test_a_worker_dead_letters_only_the_poison_event_and_its_breaker_stays_closed(
    private_redis, in_process_worker
) -> None:
    client = redis.Redis.from_url(private_redis.url())
    worker, model = in_process_worker(private_redis.url(), "poison-worker", batch_size=10, max_deliveries=3,
                                      breaker_failure_threshold=5, claim_min_idle_ms=300)
    model.poison = POISON
    publish_events(client, events(30, "w", poisoned={4}))

    wait_settled(client, 29, dead=1, timeout_s=60)

    assert decided_ids(client) == {f"w-{i}".encode(): 1 for i in range(30) if i != 4}
    [(_, dead)] = stream_entries.entries(client, DEAD_LETTER_STREAM)
    assert dead[b"correlation_id"] == b"w-4" and dead[b"dead_reason"].startswith(b"max_deliveries")
    assert pending_count(client) == 0
    assert worker.breaker.state is BreakerState.CLOSED
    assert worker.telemetry.window.snapshot().errors.get("inference", 0) >= 3, "each failed try is an error"
    client.close()


def test_a_poison_event_dead_lettered_at_max_deliveries_can_be_replayed_and_decided_at_once(
    redis_client: redis.Redis, poisoned_pipeline: tuple[FaultyModel, EventPipeline]
) -> None:
    """Its failed tries left a lease on its correlation id; dead-lettering releases it, or the replay (within the
    lease) would be acked as a duplicate in flight and the event lost."""
    model, pipeline = poisoned_pipeline
    publish_events(redis_client, events(2, "r", poisoned={1}))
    entries = read_all(redis_client, 2)
    assert [f.correlation_id for f in pipeline.process(entries).failed] == ["r-1"]
    assert redis_client.exists(processing_key("r-1")), "the failed try holds the lease"

    [entry] = [e for e in entries if e.fields[b"correlation_id"] == b"r-1"]
    result = pipeline.process([dataclasses.replace(entry, delivery_count=CONFIG.max_deliveries + 1)])
    assert [r.split(":")[0] for r in result.dead_reasons] == ["max_deliveries"]
    assert not redis_client.exists(processing_key("r-1")), "dead-lettering releases the lease"

    model.poison = None  # fixed: the replay is decided
    replay_dead_letters(redis_client, select_dead_letters(redis_client), actor="test@ci", apply=True)
    replayed = pipeline.process(read_all(redis_client, 10))
    assert [d.correlation_id for d in replayed.decisions] == ["r-1"] and replayed.duplicates == 0


def test_dead_lettering_leaves_another_entrys_lease_alone(
    redis_client: redis.Redis, poisoned_pipeline: tuple[FaultyModel, EventPipeline]
) -> None:
    """A copy of an event being decided elsewhere is dead-lettered: the lease is the other entry's, and stays."""
    _, pipeline = poisoned_pipeline
    publish_events(redis_client, events(1, "l"))
    redis_client.set(processing_key("l-0"), "other-worker|9-9", px=30_000)
    [entry] = read_all(redis_client, 1)
    result = pipeline.process([dataclasses.replace(entry, delivery_count=CONFIG.max_deliveries + 1)])
    assert len(result.dead_letters) == 1
    assert redis_client.get(processing_key("l-0")) == b"other-worker|9-9"


def test_a_poison_event_pending_across_a_redis_outage_does_not_stall_the_worker(
    private_redis, in_process_worker
) -> None:
    """After an outage the worker re-reads what it holds, and that re-read is not counted as a delivery. The poison
    event held across the outage is tried once in that pass, then left to the reclaim, where each try counts: new
    events are decided meanwhile, and it is dead-lettered at max_deliveries. Before, the worker re-read it for ever
    (never counted, never dead-lettered) and decided nothing else."""
    client = redis.Redis.from_url(private_redis.url())
    # The reclaim's min-idle is above the retry backoff's cap (5 s): only the reclaim may count a try of it.
    _, model = in_process_worker(private_redis.url(), "outage-worker", batch_size=10, max_deliveries=1,
                                 claim_min_idle_ms=7000, claim_interval_ms=200)
    model.poison = POISON
    publish_events(client, events(10, "o", poisoned={4}))
    wait_for(lambda: client.xlen(DECISIONS_STREAM) == 9, timeout_s=30, what="the 9 good events decided")

    client.client_kill_filter(_type="normal", skipme=True)  # the worker's connections drop: an outage
    publish_events(client, events(5, "after"))

    wait_for(lambda: client.xlen(DECISIONS_STREAM) == 14, timeout_s=5, what="the new events decided at once")
    wait_settled(client, 14, dead=1, timeout_s=60)
    [(_, dead)] = stream_entries.entries(client, DEAD_LETTER_STREAM)
    assert dead[b"correlation_id"] == b"o-4" and dead[b"dead_reason"].startswith(b"max_deliveries")
    client.close()


def test_a_lone_poison_event_on_a_quiet_stream_may_open_the_breaker_once_and_its_trial_closes_it(
    private_redis, in_process_worker
) -> None:
    """Alone, the worker cannot tell an event the agents cannot decide from a broken model: each try counts, and
    with max_deliveries equal to the threshold the breaker opens. The half-open trial takes the event again,
    dead-letters it, and the breaker closes by itself; the next event is decided (the runbook's account)."""
    client = redis.Redis.from_url(private_redis.url())
    worker, model = in_process_worker(private_redis.url(), "quiet-worker", batch_size=10, max_deliveries=2,
                                      breaker_failure_threshold=2, breaker_reset_timeout_s=1.0,
                                      claim_min_idle_ms=200, claim_interval_ms=100)
    model.poison = POISON
    publish_events(client, events(1, "q", poisoned={0}))

    wait_settled(client, 0, dead=1, timeout_s=30)
    publish_events(client, events(1, "next"))
    wait_for(lambda: decided_ids(client) == {b"next-0": 1}, timeout_s=30, what="the next event decided")
    moves = [t.to_state for t in worker.breaker.recent_transitions]
    assert moves == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]
    client.close()
