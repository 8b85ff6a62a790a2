"""The worker's XREADGROUP, on a connection of its own.

The read is on the hot path once per batch: at batch 1 it is a third of the worker's round trips. Packed by hiredis
and sent on a held connection, it skips redis-py's per-call pool checkout, stale-reply poll and argument conversion
(the read step at batch 1 in `python -m bench.stages`: ~200 → ~150 µs on the benchmark machine); the reply is turned
into entries here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hiredis
import redis

from worker.connection import HeldConnection

Message = tuple[bytes, dict[bytes, bytes]]  # (entry id, fields); no fields: a pending entry deleted from the stream


class GroupReader:
    """Reads one stream as one consumer of its group. One thread at a time."""

    def __init__(self, client: redis.Redis, stream: str, group: str, consumer: str) -> None:
        self.stream = stream
        self._held = HeldConnection(client)
        self._head = ("XREADGROUP", "GROUP", group, consumer, "COUNT")

    def read(self, start: str | bytes, count: int, block_ms: int | None = None) -> list[Message]:
        """Entries after `start` ('>' new ones, '0' this consumer's pending ones), at most `count`; with `block_ms`,
        wait up to that long for the first. Redis errors propagate (the connection is discarded)."""
        block = ("BLOCK", block_ms) if block_ms is not None else ()
        command = hiredis.pack_command((*self._head, count, *block, "STREAMS", self.stream, start))
        connection = self._held.connection()
        try:
            connection.send_packed_command([command])
            reply = connection.read_response()
        except BaseException:
            self._held.discard()
            raise
        return stream_messages(reply, self.stream)

    def close(self) -> None:
        self._held.close()


def stream_messages(reply: Any, stream: str) -> list[Message]:
    """The messages of `stream` in a raw XREAD/XREADGROUP reply: RESP3 (a map by stream) or RESP2 (a list of
    [stream, messages]); None (nothing came before the block timed out) is no messages."""
    if not reply:
        return []
    if isinstance(reply, Mapping):
        entries = reply.get(stream.encode(), [])
    else:
        entries = next((messages for name, messages in reply if name == stream.encode()), [])
    return [(entry_id, _pairs(flat)) for entry_id, flat in entries]


def _pairs(flat: list[bytes] | None) -> dict[bytes, bytes]:
    if not flat:
        return {}
    return dict(zip(flat[::2], flat[1::2], strict=True))
