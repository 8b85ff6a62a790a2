"""`tacticalctl up`'s simulated feed rides out Redis refusing writes without losing an event."""

from __future__ import annotations

import threading
import time

import redis

from tacticalctl.up import _feed_through_outages
from tests.events import many_events
from tests.integration.streams import wait_for
from worker.embedded_redis import EmbeddedRedis
from worker.names import INPUT_STREAM


def test_writes_refused_for_a_while_lose_no_event(private_redis: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(private_redis.url())
    events = many_events(5000, prefix="feed")
    sent: list[int] = []
    stop = threading.Event()
    feed = threading.Thread(target=_feed_through_outages, daemon=True,
                            args=(client, iter(events)), kwargs={"rate": 200.0, "stop": stop, "on_sent": sent.append})
    feed.start()
    try:
        wait_for(lambda: sum(sent) >= 50, what="the feed running")
        client.config_set("maxmemory", 1)  # Redis now refuses every write (OOM), answering PING as ever
        refused_at = sum(sent)
        time.sleep(2.5)  # the feed tries again every second: two or three tries refused
        assert sum(sent) == refused_at, "a write went through while refused"
        client.config_set("maxmemory", 0)
        wait_for(lambda: sum(sent) >= refused_at + 50, what="the feed resumed")
    finally:
        stop.set()
        feed.join(timeout=10)
        client.config_set("maxmemory", 0)

    ids = [fields[b"correlation_id"].decode() for _, fields in client.xrange(INPUT_STREAM)]
    assert ids == [event.correlation_id for event in events[: len(ids)]], "an event was lost or sent out of order"
    assert len(ids) == sum(sent) >= refused_at + 50
    client.close()
