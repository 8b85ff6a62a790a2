"""Making real stuck entries for the pending / dead-letter commands."""

from __future__ import annotations

import numpy as np
import redis

from worker.delivery import ensure_group
from worker.names import CONSUMER_GROUP, INPUT_STREAM
from worker.producer import make_event, publish_event


def publish(client: redis.Redis, count: int, prefix: str = "cid") -> list[bytes]:
    return [
        publish_event(client, make_event(correlation_id=f"{prefix}-{i}", rng=np.random.default_rng(i)))
        for i in range(count)
    ]


def deliver_without_ack(client: redis.Redis, consumer: str, count: int) -> list[bytes]:
    """XREADGROUP as `consumer` and never acknowledge: the entries stay pending on it, as on a crashed worker."""
    ensure_group(client)
    reply = client.xreadgroup(CONSUMER_GROUP, consumer, {INPUT_STREAM: ">"}, count=count)
    return [entry_id for _, entries in reply for entry_id, _ in entries]


def pending_of(client: redis.Redis) -> dict[bytes, bytes]:
    """Entry id → consumer holding it."""
    rows = client.xpending_range(INPUT_STREAM, CONSUMER_GROUP, min="-", max="+", count=1000)
    return {row["message_id"]: row["consumer"] for row in rows}
