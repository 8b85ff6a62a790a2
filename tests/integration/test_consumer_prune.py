"""Pruning the consumer names dead workers leave in the group (`worker.ops.consumer_prune`): only names with
nothing pending, no heartbeat, idle long enough; never one holding an entry."""

from __future__ import annotations

import time

import redis

from worker.alerts import recent_alerts
from worker.delivery import ensure_group
from worker.heartbeat import write_heartbeat
from worker.names import CONSUMER_GROUP, INPUT_STREAM
from worker.ops.consumer_prune import _PRUNE_LUA, prune_consumers


def consumers(client: redis.Redis) -> set[str]:
    return {c["name"].decode() for c in client.xinfo_consumers(INPUT_STREAM, CONSUMER_GROUP)}


def read_as(client: redis.Redis, consumer: str, *, ack: bool) -> None:
    client.xadd(INPUT_STREAM, {"correlation_id": consumer})
    delivered = client.xreadgroup(CONSUMER_GROUP, consumer, {INPUT_STREAM: ">"}, count=1)[0][1]
    if ack:
        client.xack(INPUT_STREAM, CONSUMER_GROUP, delivered[0][0])


def test_only_dead_idle_names_with_nothing_pending_go(redis_client: redis.Redis) -> None:
    ensure_group(redis_client)
    read_as(redis_client, "crashed-clean", ack=True)
    read_as(redis_client, "crashed-holding", ack=False)  # its entry waits for the reclaim
    read_as(redis_client, "alive", ack=True)
    write_heartbeat(redis_client, "alive", interval_s=5, info={})
    time.sleep(0.3)
    read_as(redis_client, "just-read", ack=True)

    dry = prune_consumers(redis_client, actor="test", apply=False, min_idle_s=0.25)
    assert [c.name for c in dry.planned] == ["crashed-clean"] and dry.removed == ()
    assert consumers(redis_client) == {"crashed-clean", "crashed-holding", "alive", "just-read"}

    done = prune_consumers(redis_client, actor="test", apply=True, min_idle_s=0.25)
    assert done.removed == ("crashed-clean",)
    assert consumers(redis_client) == {"crashed-holding", "alive", "just-read"}
    assert redis_client.xpending(INPUT_STREAM, CONSUMER_GROUP)["pending"] == 1  # its entry still there
    (entry,) = recent_alerts(redis_client, count=1)
    assert entry.kind == "consumer_prune" and "crashed-clean" in entry.message


def test_a_name_that_took_an_entry_since_it_was_planned_is_kept(redis_client: redis.Redis) -> None:
    """The check and the delete are one script: a DELCONSUMER of a name holding an entry would drop the entry."""
    ensure_group(redis_client)
    read_as(redis_client, "late", ack=False)
    script = redis_client.register_script(_PRUNE_LUA)
    assert script(keys=[INPUT_STREAM], args=[CONSUMER_GROUP, "late"]) == []
    assert "late" in consumers(redis_client)
    assert redis_client.xpending(INPUT_STREAM, CONSUMER_GROUP)["pending"] == 1
