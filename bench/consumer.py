"""The loop the bare bench consumers share (floor and reference): XREADGROUP a batch, reply in one pipeline, XACK.
No validation, no idempotency, no metrics: they are what the worker is compared against."""

from __future__ import annotations

import argparse
import signal
import socket
from collections.abc import Callable, Sequence
from types import FrameType
from typing import cast

import redis

from bench.names import EchoStreams
from worker.stream_entries import Entry

READ_COUNT = 100
READ_BLOCK_MS = 100

Entries = Sequence[Entry]
BatchHandler = Callable[[Entries, "redis.client.Pipeline"], None]  # queue the replies (XADDs) on the pipeline


def ensure_group(client: redis.Redis, streams: EchoStreams) -> None:
    try:
        client.xgroup_create(streams.input, streams.group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class ConsumerLoop:
    def __init__(self, client: redis.Redis, streams: EchoStreams, handle: BatchHandler, consumer: str) -> None:
        self.client = client
        self.streams = streams
        self.handle = handle
        self.consumer = consumer
        self.should_exit = False

    def stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self.should_exit = True

    def run(self) -> None:
        s = self.streams
        ensure_group(self.client, s)
        while not self.should_exit:
            reply = cast(list[tuple[bytes, list[Entry]]], self.client.xreadgroup(
                s.group, self.consumer, {s.input: ">"}, count=READ_COUNT, block=READ_BLOCK_MS))
            if not reply:
                continue
            entries = reply[0][1]
            pipe = self.client.pipeline(transaction=False)
            self.handle(entries, pipe)
            pipe.xack(s.input, s.group, *(entry_id for entry_id, _ in entries))
            pipe.execute()


def consumer_main(argv: Sequence[str] | None, description: str, streams: EchoStreams,
                  make_handler: Callable[[argparse.Namespace], BatchHandler],
                  add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--consumer", default=f"{socket.gethostname()}:bench")
    add_arguments(parser)
    args = parser.parse_args(argv)
    handler = make_handler(args)
    client = redis.Redis.from_url(args.redis_url, socket_timeout=READ_BLOCK_MS / 1e3 + 10)
    loop = ConsumerLoop(client, streams, handler, args.consumer)
    signal.signal(signal.SIGTERM, loop.stop)
    signal.signal(signal.SIGINT, loop.stop)
    loop.run()
    client.close()
    return 0
