"""Where a worker's time goes: the pipeline's stages, per event, in this process, against a real Redis.

Queues events, then reads and decides them the way the worker does (`GroupReader`, `EventPipeline.process`,
telemetry), one batch at a time with nothing else running, and reports the median per-event time of each step: at
batch 1 (the latency path: every round trip and fixed cost is paid per event) and at a full batch (the throughput
path). No producer or reader competes for the cores, so the figures are the pipeline's own; `tacticalctl bench`
measures the whole system. "telemetry" is what recording one batch costs: the worker records short batches together
(`Worker.hold_for_recording`; ~5 of them a pass at 1,000 events/s), so it pays less of the batch-1 figure.

It also times the forward pass of one event alone, back to back and each right after a Redis round trip (a PING):
on the machine the README describes, the second costs ~1.5× the first, which is why the inference step at batch 1
costs more inside the pipeline than `tacticalctl bench`'s "model alone" figure.

Run as `python -m bench.stages [--events 2000] [--batches 60] [--batch-size 100] [--json]`.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from bench.model import load_ensemble, measure_model
from bench.workload import Workload
from worker.aggregator import AggregatorConfig
from worker.delivery import DeliveryScripts, ensure_group
from worker.embedded_redis import EmbeddedRedis
from worker.group_reader import GroupReader
from worker.inference import row_invariant_kernels
from worker.names import CONSUMER_GROUP, INPUT_STREAM
from worker.pipeline import EventPipeline, PipelineConfig, StreamEntry
from worker.telemetry import Telemetry

CONSUMER = "bench-stages"
STEPS = ("read", "validate", "claim", "inference", "aggregate", "commit", "telemetry", "total")


def measure_stages(client: redis.Redis, reader: GroupReader, pipeline: EventPipeline, telemetry: Telemetry,
                   workload: Workload, *, batches: int, batch_size: int, id_prefix: str) -> dict[str, float]:
    """Median µs per event of each step over `batches` batches of `batch_size` (the first tenth is warm-up)."""
    sender = client.pipeline(transaction=False)
    for i in range(batches * batch_size):
        sender.xadd(INPUT_STREAM, workload.fields(i, f"{id_prefix}-{i}"))  # type: ignore[arg-type]
    sender.execute()
    samples: dict[str, list[float]] = {step: [] for step in STEPS}
    clock = time.perf_counter
    for index in range(batches):
        started = clock()
        messages = reader.read(">", batch_size)
        entries = [StreamEntry(entry_id, fields) for entry_id, fields in messages]
        read = clock()
        result = pipeline.process(entries)
        processed = clock()
        telemetry.record_batch(result)
        finished = clock()
        if len(result.decisions) != len(entries):
            raise RuntimeError(f"batch {index}: {len(result.decisions)} decisions for {len(entries)} events")
        if index < batches // 10:
            continue
        steps = {"read": read - started, **result.stage_seconds, "telemetry": finished - processed,
                 "total": finished - started}
        for step in STEPS:
            samples[step].append(steps[step] / len(entries))
    return {step: round(statistics.median(values) * 1e6, 1) for step, values in samples.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="events decided one at a time (batch 1)")
    parser.add_argument("--batches", type=int, default=60, help="full batches decided")
    parser.add_argument("--batch-size", type=int, default=100, help="events per full batch (the worker's default)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.events < 10 or args.batches < 10 or args.batch_size < 1:
        parser.error("--events and --batches must be at least 10, --batch-size at least 1")

    workload = Workload.simulated()
    ensemble = load_ensemble()
    # The kernels stay selected for the whole run, as the worker holds them while it serves.
    with tempfile.TemporaryDirectory(prefix="tactical-stages-") as run_dir, row_invariant_kernels:
        server = EmbeddedRedis(data_dir=Path(run_dir) / "redis")
        server.start()
        try:
            client = redis.Redis.from_url(server.url())
            ensure_group(client)
            config = PipelineConfig(consumer=CONSUMER, processing_lease_ms=30_000, completed_ttl_s=3600,
                                    max_deliveries=5, max_event_bytes=65_536)
            pipeline = EventPipeline(DeliveryScripts(client), ensemble, AggregatorConfig(), config)
            reader = GroupReader(client, INPUT_STREAM, CONSUMER_GROUP, CONSUMER)
            telemetry = Telemetry()
            gc.freeze()  # as the worker does after startup
            forward = {
                "back_to_back": measure_model(ensemble, workload, iterations=args.events),
                "after_round_trip": measure_model(ensemble, workload, iterations=args.events, before_each=client.ping),
            }
            report: dict[str, dict[str, float]] = {
                "batch_1": measure_stages(client, reader, pipeline, telemetry, workload, batches=args.events,
                                          batch_size=1, id_prefix="one"),
                f"batch_{args.batch_size}": measure_stages(client, reader, pipeline, telemetry, workload,
                                                           batches=args.batches, batch_size=args.batch_size,
                                                           id_prefix="full"),
            }
            report["forward_pass_batch_1"] = {name: round(summary.p50_ms * 1e3, 1) for name, summary in forward.items()}
            reader.close()
            client.close()
        finally:
            server.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        columns = [name for name in report if name.startswith("batch_")]
        print(f"{'µs per event':<12}" + "".join(f"{name:>12}" for name in columns))
        for step in STEPS:
            print(f"{step:<12}" + "".join(f"{report[name][step]:>12.1f}" for name in columns))
        forward_pass = report["forward_pass_batch_1"]
        print(f"\nforward pass, one event (p50 µs): back to back {forward_pass['back_to_back']:.1f}, "
              f"right after a Redis round trip {forward_pass['after_round_trip']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
