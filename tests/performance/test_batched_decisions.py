"""Batching is a speed-up only: an event gets the very same decision (bit for bit: probabilities, scores, reason,
command) whether the worker reads it alone or among a hundred others."""

from __future__ import annotations

from typing import cast

import numpy as np
import redis

from bench.workload import Workload
from worker.aggregator import AggregatorConfig
from worker.delivery import DeliveryScripts, ensure_group
from worker.events import matrix_from_bytes
from worker.inference import AgentEnsemble
from worker.names import COMMANDS_STREAM, CONSUMER_GROUP, DECISIONS_STREAM, INPUT_STREAM
from worker.pipeline import EventPipeline, PipelineConfig, StreamEntry
from worker.stream_entries import Entry, entries

EVENTS = 240

Record = dict[bytes, bytes]


def test_inference_of_a_row_does_not_depend_on_its_batch(ensemble: AgentEnsemble) -> None:
    assert ensemble.rows_are_batch_invariant(), "the check the worker runs at load"
    matrices = np.random.default_rng(7).normal(0.0, 1.0, size=(160, 60, 7)).astype(np.float32)
    alone = [ensemble.infer(matrices[i : i + 1]) for i in range(len(matrices))]
    for size in (*range(1, 18), 31, 64, 99, 100, 160):
        for start in range(0, len(matrices) - size + 1, max(size, 23)):
            probabilities, confidence = ensemble.infer(matrices[start : start + size])
            for row in range(size):
                single_p, single_c = alone[start + row]
                assert np.array_equal(probabilities[row], single_p[0]), f"batch {size}, row {row}"
                assert np.array_equal(confidence[row], single_c[0]), f"batch {size}, row {row}"


def _read_new(client: redis.Redis, consumer: str, count: int) -> list[Entry]:
    """XREADGROUP of up to `count` new input entries; [] once all are read. redis-py types the reply as any reply;
    this bytes client's is RESP2's [[stream, entries]], or empty."""
    reply = cast(list[tuple[bytes, list[Entry]]],
                 client.xreadgroup(CONSUMER_GROUP, consumer, {INPUT_STREAM: ">"}, count=count))
    return reply[0][1] if reply else []


def _decide_all(client: redis.Redis, ensemble: AgentEnsemble, workload: Workload, batch_size: int,
                ) -> tuple[dict[bytes, Record], dict[bytes, Record]]:
    """Publish the same events to a clean database, decide them `batch_size` at a time through the real pipeline,
    and return the decisions and commands it committed, by correlation id, without timings and stream ids."""
    client.flushdb()
    ensure_group(client)
    pipe = client.pipeline(transaction=False)
    for i in range(EVENTS):
        pipe.xadd(INPUT_STREAM, workload.fields(i, f"same-{i}"))  # type: ignore[arg-type]  # dict is invariant
    pipe.execute()
    pipeline = EventPipeline(
        DeliveryScripts(client), ensemble, AggregatorConfig(),
        PipelineConfig(consumer="identity", processing_lease_ms=30_000, completed_ttl_s=3600, max_deliveries=5,
                       max_event_bytes=65_536),
    )
    while new := _read_new(client, "identity", batch_size):
        batch = [StreamEntry(entry_id, fields) for entry_id, fields in new]
        assert len(batch) <= batch_size
        pipeline.process(batch)

    def by_id(stream: str) -> dict[bytes, Record]:
        return {
            fields[b"correlation_id"]: {k: v for k, v in fields.items() if not k.endswith(b"_ms") and k != b"event_id"}
            for _, fields in entries(client, stream)
        }

    return by_id(DECISIONS_STREAM), by_id(COMMANDS_STREAM)


def test_batched_and_one_at_a_time_decisions_are_identical(
    redis_client: redis.Redis, ensemble: AgentEnsemble, workload: Workload
) -> None:
    one_at_a_time = _decide_all(redis_client, ensemble, workload, batch_size=1)
    decisions, commands = one_at_a_time
    assert len(decisions) == EVENTS
    assert 0 < len(commands) < EVENTS, "the workload has trades and holds, so both paths are compared"
    for batch_size in (100, 37):
        assert _decide_all(redis_client, ensemble, workload, batch_size) == one_at_a_time, f"batch {batch_size}"


def test_the_workload_is_varied_enough_to_mean_something(workload: Workload) -> None:
    matrices = np.stack([matrix_from_bytes(fields[b"matrix"]) for fields in workload.templates])
    assert len({fields[b"synergy_type"] for fields in workload.templates}) >= 3
    assert len({fields[b"direction"] for fields in workload.templates}) == 2
    assert np.ptp(matrices, axis=0).max() > 0.5
