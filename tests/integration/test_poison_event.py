"""One event the agents cannot decide, in a batch of good ones: the good ones are decided (exactly as in a batch)
and committed at once; only the poison event stays pending, is retried, and is dead-lettered after max_deliveries.
Before, the whole batch was retried with it and went to the dead letters together."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import redis

from tests.faults import FaultyModel
from tests.integration.streams import decided_ids, pending_count, wait_settled
from worker.aggregator import AggregatorConfig
from worker.breaker import BreakerState
from worker.delivery import DeliveryScripts, ensure_group
from worker.inference import AgentEnsemble
from worker.names import CONSUMER_GROUP, DEAD_LETTER_STREAM, INPUT_STREAM
from worker.pipeline import EventPipeline, PipelineConfig, StageError, StreamEntry
from worker.producer import make_event, publish_events
from worker.records import SynergyEvent

POISON = 1.875  # the first feature of the poison event's first bar: FaultyModel.poison
CONFIG = PipelineConfig(consumer="poison", processing_lease_ms=30_000, completed_ttl_s=3600, max_deliveries=5,
                        max_event_bytes=65_536)


def events(n: int, prefix: str, poisoned: set[int] = frozenset()) -> list[SynergyEvent]:
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
    [(_, messages)] = client.xreadgroup(CONSUMER_GROUP, CONFIG.consumer, {INPUT_STREAM: ">"}, count=count)
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
    [(_, dead)] = client.xrange(DEAD_LETTER_STREAM)
    assert dead[b"correlation_id"] == b"w-4" and dead[b"dead_reason"].startswith(b"max_deliveries")
    assert pending_count(client) == 0
    assert worker.breaker.state is BreakerState.CLOSED
    assert worker.telemetry.window.snapshot().errors.get("inference", 0) >= 3, "each failed try is an error"
    client.close()
