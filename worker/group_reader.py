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
    """Reads one stream as one consumer of its group. One thread at a time.

    A read is one call (`read`), or two (`send`, then `receive`) when the caller works while Redis answers. Entries
    the reply delivers are pending on this consumer whether or not the reply is read: a caller that drops a reply
    (`forget`, or a failure between the two calls) re-reads its own pending entries."""

    def __init__(self, client: redis.Redis, stream: str, group: str, consumer: str) -> None:
        self.stream = stream
        self._held = HeldConnection(client)
        self._head = ("XREADGROUP", "GROUP", group, consumer, "COUNT")
        self._awaiting = False  # a read was sent and its reply not read yet

    def read(self, start: str | bytes, count: int, block_ms: int | None = None) -> list[Message]:
        """Entries after `start` ('>' new ones, '0' this consumer's pending ones), at most `count`; with `block_ms`,
        wait up to that long for the first. Redis errors propagate (the connection is discarded)."""
        self.send(start, count, block_ms)
        return self.receive()

    def send(self, start: str | bytes, count: int, block_ms: int | None = None) -> None:
        """The read of `read`, sent without waiting for its reply (`receive`). A reply still unread goes with its
        connection first: it is never taken for this read's."""
        self.forget()
        command = hiredis.pack_command((*self._head, count, *(("BLOCK", block_ms) if block_ms is not None else ()),
                                        "STREAMS", self.stream, start))
        connection = self._held.connection()
        try:
            connection.send_packed_command([command])
        except BaseException:
            self._held.discard()
            raise
        self._awaiting = True

    @property
    def awaiting(self) -> bool:
        """A read was sent and its reply is still to be received."""
        return self._awaiting

    def receive(self) -> list[Message]:
        """The messages of the read sent last."""
        assert self._awaiting, "receive() follows send()"
        self._awaiting = False
        connection = self._held.connection()
        try:
            reply = connection.read_response()
        except BaseException:
            self._held.discard()
            raise
        return stream_messages(reply, self.stream)

    def forget(self) -> None:
        """Drop the reply of a read sent and not received, with its connection."""
        if self._awaiting:
            self._awaiting = False
            self._held.discard()

    def close(self) -> None:
        self.forget()
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
