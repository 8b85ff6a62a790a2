"""The worker's group read on its own connection: the same entries, pending state and errors as a plain XREADGROUP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import cast

import pytest
import redis

from worker.group_reader import GroupReader, stream_messages
from worker.names import CONSUMER_GROUP, INPUT_STREAM


@pytest.fixture
def reader(redis_client: redis.Redis) -> Iterator[GroupReader]:
    redis_client.xgroup_create(INPUT_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    group_reader = GroupReader(redis_client, INPUT_STREAM, CONSUMER_GROUP, "c1")
    yield group_reader
    group_reader.close()


def pending_of(client: redis.Redis, consumer: str) -> list[bytes]:
    rows = client.xpending_range(INPUT_STREAM, CONSUMER_GROUP, min="-", max="+", count=100, consumername=consumer)
    return [cast(bytes, row["message_id"]) for row in rows]  # a bytes client


def test_new_entries_come_with_their_fields_in_order_and_become_this_consumers_pending(
    redis_client: redis.Redis, reader: GroupReader
) -> None:
    ids = [redis_client.xadd(INPUT_STREAM, {"correlation_id": f"c-{i}", "n": str(i)}) for i in range(5)]

    first = reader.read(">", count=3)
    rest = reader.read(">", count=3)

    assert first == [(ids[i], {b"correlation_id": f"c-{i}".encode(), b"n": str(i).encode()}) for i in range(3)]
    assert [entry_id for entry_id, _ in rest] == ids[3:]
    assert pending_of(redis_client, "c1") == ids
    assert reader.read(">", count=3) == []  # nothing new, no block: at once


def test_a_blocking_read_waits_for_the_first_entry_or_times_out_empty(
    redis_client: redis.Redis, reader: GroupReader
) -> None:
    started = time.monotonic()
    assert reader.read(">", count=10, block_ms=150) == []
    assert time.monotonic() - started >= 0.14

    adder = threading.Timer(0.1, lambda: redis_client.xadd(INPUT_STREAM, {"correlation_id": "late"}))
    adder.start()
    try:
        messages = reader.read(">", count=10, block_ms=5_000)
    finally:
        adder.join()
    assert [fields for _, fields in messages] == [{b"correlation_id": b"late"}]


def test_own_pending_entries_are_read_again_and_a_deleted_one_comes_back_without_fields(
    redis_client: redis.Redis, reader: GroupReader
) -> None:
    kept, deleted = (redis_client.xadd(INPUT_STREAM, {"correlation_id": cid}) for cid in ("kept", "deleted"))
    reader.read(">", count=10)
    redis_client.xdel(INPUT_STREAM, deleted)

    assert reader.read("0", count=10) == [(kept, {b"correlation_id": b"kept"}), (deleted, {})]


def test_a_read_sent_is_answered_while_the_caller_works_and_an_unread_reply_is_never_taken_for_the_next(
    redis_client: redis.Redis, reader: GroupReader
) -> None:
    ids = [redis_client.xadd(INPUT_STREAM, {"correlation_id": f"c-{i}"}) for i in range(4)]

    reader.send(">", count=2)
    assert reader.awaiting
    redis_client.xadd(INPUT_STREAM, {"correlation_id": "meanwhile"})  # the caller's own work, on another connection
    assert [entry_id for entry_id, _ in reader.receive()] == ids[:2]
    assert not reader.awaiting

    reader.send(">", count=1)  # delivered, its reply never received
    reader.send(">", count=1)  # the next read: its own reply, not the one left unread
    assert [entry_id for entry_id, _ in reader.receive()] == ids[3:4]
    reader.send(">", count=10)
    reader.forget()
    assert not reader.awaiting and reader.read(">", count=10) == []
    assert pending_of(redis_client, "c1")[:4] == ids, "entries of a reply left unread are pending: re-read them"
    assert [fields for _, fields in reader.read("0", count=10)][2] == {b"correlation_id": b"c-2"}


def test_a_refused_read_raises_and_the_next_one_works(redis_client: redis.Redis, reader: GroupReader) -> None:
    redis_client.xgroup_destroy(INPUT_STREAM, CONSUMER_GROUP)
    with pytest.raises(redis.ResponseError, match="NOGROUP"):
        reader.read(">", count=1)

    redis_client.xgroup_create(INPUT_STREAM, CONSUMER_GROUP, id="0")
    entry_id = redis_client.xadd(INPUT_STREAM, {"correlation_id": "after"})
    assert reader.read(">", count=1) == [(entry_id, {b"correlation_id": b"after"})]


def test_a_dropped_connection_raises_and_the_next_read_reconnects(
    redis_client: redis.Redis, reader: GroupReader
) -> None:
    reader.read(">", count=1)  # the reader now holds a connection
    redis_client.client_kill_filter(_type="normal", skipme=True)
    entry_id = redis_client.xadd(INPUT_STREAM, {"correlation_id": "after-kill"})

    with pytest.raises(redis.ConnectionError):
        reader.read(">", count=1)
    assert reader.read(">", count=1) == [(entry_id, {b"correlation_id": b"after-kill"})]


@pytest.mark.parametrize("protocol", [2, 3])
def test_replies_of_either_protocol_give_the_same_messages(redis_url: str, protocol: int) -> None:
    client = redis.Redis.from_url(redis_url, protocol=protocol)
    try:
        client.xgroup_create(INPUT_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
        entry_id = client.xadd(INPUT_STREAM, {"a": "1", "b": "2"})
        connection = client.connection_pool.get_connection()
        try:
            connection.send_command("XREADGROUP", "GROUP", CONSUMER_GROUP, "c1", "STREAMS", INPUT_STREAM, ">")
            reply = connection.read_response()
        finally:
            client.connection_pool.release(connection)
    finally:
        client.close()
    assert stream_messages(reply, INPUT_STREAM) == [(entry_id, {b"a": b"1", b"b": b"2"})]
    assert stream_messages(None, INPUT_STREAM) == []
