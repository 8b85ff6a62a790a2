"""Pruning the consumer names dead workers leave in the group (`worker.ops.consumer_prune`): only names with
nothing pending, no heartbeat, idle long enough; never one holding an entry."""

from __future__ import annotations

import time

import pytest
import redis

from tests.integration.streams import read_group
from worker.alerts import recent_alerts
from worker.delivery import delete_consumers_without_pending, ensure_group
from worker.heartbeat import write_heartbeat
from worker.names import CONSUMER_GROUP, INPUT_STREAM
from worker.ops.consumer_prune import prune_consumers


def consumers(client: redis.Redis) -> set[str]:
    return {c["name"].decode() for c in client.xinfo_consumers(INPUT_STREAM, CONSUMER_GROUP)}


def read_as(client: redis.Redis, consumer: str, *, ack: bool) -> None:
    client.xadd(INPUT_STREAM, {"correlation_id": consumer})
    delivered = read_group(client, consumer, 1)
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
    assert delete_consumers_without_pending(redis_client, ["late"]) == ()
    assert "late" in consumers(redis_client)
    assert redis_client.xpending(INPUT_STREAM, CONSUMER_GROUP)["pending"] == 1


def test_a_stopping_worker_keeps_its_name_when_an_entry_is_claimed_to_it_as_it_checks(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's clean exit forgets its name when nothing is pending on it. An operator's `pending claim` to it (its
    heartbeat still live) landing right after it looked used to be dropped with the name by XGROUP DELCONSUMER: lost,
    never delivered again. Here the claim lands right after any XPENDING the worker sends."""
    from worker.ops.pending import claim_stuck_entries
    from worker.service import Worker
    from worker.settings import WorkerSettings

    ensure_group(redis_client)
    read_as(redis_client, "crashed", ack=False)  # an entry stuck on a dead worker
    read_as(redis_client, "stopping", ack=True)  # the worker: nothing pending on it
    write_heartbeat(redis_client, "stopping", interval_s=5, info={})
    worker = Worker(WorkerSettings.from_env({}, redis_url=redis_url, consumer="stopping", http_addr="127.0.0.1:0"))
    client = redis.Redis.from_url(redis_url)
    sent = client.execute_command

    def claim_after_xpending(*args: object, **options: object) -> object:
        reply = sent(*args, **options)
        if str(args[0]).upper().startswith("XPENDING"):
            claim_stuck_entries(redis_client, to_consumer="stopping", min_idle_ms=0, actor="operator", apply=True)
        return reply

    monkeypatch.setattr(client, "execute_command", claim_after_xpending)
    try:
        worker.forget_consumer_if_idle(client)
    finally:
        client.close()
    claimed = redis_client.xpending_range(INPUT_STREAM, CONSUMER_GROUP, min="-", max="+", count=10)
    if claimed and claimed[0]["consumer"] == b"crashed":  # the worker sent no XPENDING of its own: claim it now
        claim_stuck_entries(redis_client, to_consumer="stopping", min_idle_ms=0, actor="operator", apply=True)
        worker.forget_consumer_if_idle(redis_client)
    [entry] = redis_client.xpending_range(INPUT_STREAM, CONSUMER_GROUP, min="-", max="+", count=10)
    assert entry["consumer"] == b"stopping" and "stopping" in consumers(redis_client)

    redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, entry["message_id"])  # decided: nothing pending now
    worker.forget_consumer_if_idle(redis_client)
    assert "stopping" not in consumers(redis_client)
