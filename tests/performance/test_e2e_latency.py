"""The runbook's performance validation (model-update procedure, step 5): a real worker process, real Redis, the
installed model bundle (TACTICAL_MODELS_DIR, else the shipped one), 100 events/s, measured from the producer's XADD to
the decision being readable on `tactical_decisions`. Only the runbook's own bounds are asserted."""

from __future__ import annotations

from bench.e2e import Load, StreamTarget, measure_round_trips, wait_until_answering
from bench.report import LatencySummary
from bench.workload import Workload
from worker.feed import run_id
from worker.names import DECISIONS_STREAM, INPUT_STREAM
from worker.process import WorkerStartError

RATE = 100.0  # events/s: the runbook's throughput floor
DURATION_S = 5.0
P99_BOUND_MS = 100.0  # critical
P50_BOUND_MS = 50.0  # warning


def test_end_to_end_latency_at_100_events_per_second_is_within_the_runbook_bounds(
    redis_url: str, start_worker, workload: Workload
) -> None:
    worker = start_worker(redis_url)

    def alive() -> None:
        if worker.poll() is not None:
            raise WorkerStartError(worker.consumer, f"exited with {worker.poll()}", worker.log_text())

    target = StreamTarget("e2e", redis_url, INPUT_STREAM, DECISIONS_STREAM)
    try:
        prefix = f"perf-{run_id()}"
        wait_until_answering(target, workload, prefix, timeout_s=60, alive=alive)
        trips = measure_round_trips(target, workload, Load(rate=RATE, duration_s=DURATION_S), prefix, alive=alive)
    finally:
        target.close()

    latency = LatencySummary.from_seconds(trips.latencies_s)
    shown = f"{trips.completed}/{trips.sent} decided; {latency}"
    assert trips.sent >= RATE * DURATION_S * 0.95, shown
    assert trips.completed == trips.sent, f"every event sent must be decided: {shown}"
    assert latency.p99_ms < P99_BOUND_MS, f"P99 over the runbook's critical bound: {shown}"
    assert latency.p50_ms < P50_BOUND_MS, f"P50 over the runbook's warning bound: {shown}"
