"""Making real stuck entries for the pending / dead-letter commands."""

from __future__ import annotations

from typing import cast

import numpy as np
import redis

from worker.delivery import ensure_group
from worker.names import CONSUMER_GROUP, INPUT_STREAM
from worker.producer import make_event, publish_event
from worker.stream_entries import Entry


def publish(client: redis.Redis, count: int, prefix: str = "cid") -> list[bytes]:
    return [
        publish_event(client, make_event(correlation_id=f"{prefix}-{i}", rng=np.random.default_rng(i)))
        for i in range(count)
    ]


def read_new(client: redis.Redis, consumer: str, *, count: int | None = None,
             group: str = CONSUMER_GROUP) -> list[Entry]:
    """XREADGROUP of the input stream's new entries as `consumer` of `group`. redis-py types the reply as any reply;
    this client's is RESP2's list of [stream, entries], in bytes (an empty list when there is nothing new)."""
    reply = client.xreadgroup(group, consumer, {INPUT_STREAM: ">"}, count=count)
    return [entry for _, entries in cast(list[tuple[bytes, list[Entry]]], reply) for entry in entries]


def deliver_without_ack(client: redis.Redis, consumer: str, count: int) -> list[bytes]:
    """XREADGROUP as `consumer` and never acknowledge: the entries stay pending on it, as on a crashed worker."""
    ensure_group(client)
    return [entry_id for entry_id, _ in read_new(client, consumer, count=count)]


def pending_of(client: redis.Redis) -> dict[bytes, bytes]:
    """Entry id → consumer holding it. redis-py types each row's values as any of bytes, str, int: these two are
    bytes from this client."""
    rows = client.xpending_range(INPUT_STREAM, CONSUMER_GROUP, min="-", max="+", count=1000)
    return {cast(bytes, row["message_id"]): cast(bytes, row["consumer"]) for row in rows}
