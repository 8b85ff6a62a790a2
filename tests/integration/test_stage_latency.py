"""The stage latencies a real batch leaves in the histogram: each stage's time once per decided event of the batch,
like end_to_end, so `tacticalctl latency` and the dashboard compare like with like."""

from __future__ import annotations

import pytest
import redis

from tests.events import many_events
from tests.integration.streams import read_group
from worker.aggregator import AggregatorConfig
from worker.delivery import DeliveryScripts, ensure_group
from worker.inference import AgentEnsemble
from worker.metrics import SYNERGY_LABELS
from worker.names import INPUT_STREAM
from worker.pipeline import EventPipeline, PipelineConfig, StreamEntry
from worker.producer import publish_events
from worker.telemetry import Telemetry

CONFIG = PipelineConfig(consumer="stages", processing_lease_ms=30_000, completed_ttl_s=3600, max_deliveries=5,
                        max_event_bytes=65_536)
STAGES = ("validate", "claim", "inference", "aggregate", "commit")


def read(client: redis.Redis, count: int) -> list[StreamEntry]:
    messages = read_group(client, CONFIG.consumer, count)
    return [StreamEntry(entry_id, fields) for entry_id, fields in messages]


def duration(telemetry: Telemetry, series: str, operation: str, synergy_type: str = "all") -> float:
    value = telemetry.metrics.registry.get_sample_value(
        f"tactical_request_duration_seconds_{series}",
        {"operation": operation, "agent_type": "all", "synergy_type": synergy_type})
    assert value is not None
    return value


def test_a_batch_of_n_decided_events_adds_n_observations_of_each_stage(
    redis_client: redis.Redis, ensemble: AgentEnsemble
) -> None:
    ensure_group(redis_client)
    pipeline = EventPipeline(DeliveryScripts(redis_client), ensemble, AggregatorConfig(), CONFIG)
    telemetry = Telemetry()

    publish_events(redis_client, many_events(40, prefix="st", seed=3))
    first = pipeline.process(read(redis_client, 40))
    # Ten already decided (duplicates), five new ones and an entry that is no event: five decided.
    publish_events(redis_client, [*many_events(10, prefix="st", seed=3), *many_events(5, prefix="new", seed=4)])
    redis_client.xadd(INPUT_STREAM, {"event_type": "SYNERGY_DETECTED"})
    second = pipeline.process(read(redis_client, 16))
    assert (len(first.decisions), len(second.decisions), second.duplicates, len(second.dead_letters)) == (40, 5, 10, 1)

    telemetry.record_batch(first)
    telemetry.record_batch(second)

    end_to_end = sum(duration(telemetry, "count", "end_to_end", synergy) for synergy in SYNERGY_LABELS)
    assert end_to_end == 45
    for stage in STAGES:
        assert duration(telemetry, "count", stage) == 45, f"{stage}: one observation per decided event"
        assert duration(telemetry, "sum", stage) == pytest.approx(
            40 * first.stage_seconds[stage] + 5 * second.stage_seconds[stage]), stage
