"""The floor: a bare echo consumer in its own process. XADD → XREADGROUP → XADD reply (+ XACK) → client XREAD is
the least any Redis-stream worker can cost on this machine.

Run as `python -m bench.floor --redis-url URL`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import redis

from bench.consumer import BatchHandler, Entries, consumer_main
from bench.names import FLOOR_STREAMS


def echo_handler(args: argparse.Namespace | None = None) -> BatchHandler:
    output = FLOOR_STREAMS.output

    def handle(entries: Entries, pipe: redis.client.Pipeline) -> None:
        for _, fields in entries:
            pipe.xadd(output, {b"correlation_id": fields[b"correlation_id"]})

    return handle


def main(argv: Sequence[str] | None = None) -> int:
    return consumer_main(argv, "Bench floor: a bare Redis stream echo consumer.", FLOOR_STREAMS, echo_handler)


if __name__ == "__main__":
    raise SystemExit(main())
