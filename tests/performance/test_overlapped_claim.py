"""The claim overlaps inference (its reply is read after the agents ran). A batch failing in between must leave the
Redis connection clean and the entries retryable; a flushed script cache must not fail the batch."""

from __future__ import annotations

import pytest
import redis

from bench.workload import Workload
from tests.faults import FaultyModel
from tests.integration.streams import read_group
from worker.aggregator import AggregatorConfig
from worker.delivery import DeliveryScripts, ensure_group
from worker.inference import AgentEnsemble
from worker.names import CONSUMER_GROUP, DECISIONS_STREAM, INPUT_STREAM, processing_key
from worker.pipeline import EventPipeline, PipelineConfig, StageError, StreamEntry

CONFIG = PipelineConfig(consumer="overlap", processing_lease_ms=30_000, completed_ttl_s=3600, max_deliveries=5,
                        max_event_bytes=65_536)


def _read(client: redis.Redis, workload: Workload, count: int) -> list[StreamEntry]:
    ensure_group(client)
    for i in range(count):
        client.xadd(INPUT_STREAM, workload.fields(i, f"overlap-{i}"))  # type: ignore[arg-type]  # dict is invariant
    return [StreamEntry(entry_id, fields) for entry_id, fields in read_group(client, CONFIG.consumer, count)]


def test_a_batch_failing_while_its_claim_is_in_flight_is_retried_and_decided_once(
    redis_client: redis.Redis, ensemble: AgentEnsemble, workload: Workload
) -> None:
    entries = _read(redis_client, workload, 5)
    scripts = DeliveryScripts(redis_client)
    scripts.claim("someone-else", 1000, [("unrelated", b"0-1")])  # the script is cached: EVALSHA runs at once
    model = FaultyModel(ensemble)  # duck-typed: the pipeline is typed to take the AgentEnsemble itself
    model.fail = True
    pipeline = EventPipeline(scripts, model, AggregatorConfig(), CONFIG)  # type: ignore[arg-type]  # see model
    with pytest.raises(StageError, match="inference failed: RuntimeError: injected model failure"):
        pipeline.process(entries)
    model.fail = False
    assert redis_client.ping() is True, "the unread claim reply was not left on a pooled connection"
    assert len(redis_client.keys(processing_key("overlap-*"))) == 5, "the claim did run while the agents failed"
    assert redis_client.xlen(DECISIONS_STREAM) == 0
    assert redis_client.xpending(INPUT_STREAM, CONSUMER_GROUP)["pending"] == 5, "nothing acked that was not decided"

    result = pipeline.process(entries)  # the same entries, as the worker retries them: its own leases are taken over
    assert len(result.decisions) == 5 and result.duplicates == 0
    assert redis_client.xlen(DECISIONS_STREAM) == 5
    assert redis_client.xpending(INPUT_STREAM, CONSUMER_GROUP)["pending"] == 0


def test_a_flushed_script_cache_is_reloaded_without_failing_the_batch(
    redis_client: redis.Redis, ensemble: AgentEnsemble, workload: Workload
) -> None:
    entries = _read(redis_client, workload, 3)
    pipeline = EventPipeline(DeliveryScripts(redis_client), ensemble, AggregatorConfig(), CONFIG)
    redis_client.script_flush()
    result = pipeline.process(entries)
    assert len(result.decisions) == 3
    assert redis_client.xlen(DECISIONS_STREAM) == 3
