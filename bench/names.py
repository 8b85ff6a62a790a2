"""The Redis names the benchmark's own consumers use. The worker's streams come from `worker.names`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EchoStreams:
    """Where a bench consumer reads (`input`, in consumer group `group`) and where it writes its replies."""

    input: str
    output: str
    group: str


FLOOR_STREAMS = EchoStreams(input="bench:floor:in", output="bench:floor:out", group="bench_floor")
REFERENCE_STREAMS = EchoStreams(input="bench:reference:in", output="bench:reference:out", group="bench_reference")

# Celery's Redis result backend stores each result under this prefix and PUBLISHes it on a channel of the same name.
CELERY_RESULT_PREFIX = "celery-task-meta-"
