"""`tacticalctl up`'s simulated feed rides out Redis refusing writes without losing an event."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import redis

from tacticalctl.up import _feed_through_outages
from tests.events import many_events
from tests.integration.streams import wait_for
from worker import stream_entries
from worker.embedded_redis import EmbeddedRedis
from worker.feed import FeedOutage, FeedStats, ResumableFeed
from worker.names import INPUT_STREAM
from worker.producer import publish_events
from worker.records import SynergyEvent
from worker.stream_entries import newest_id


@contextmanager
def feeding(client: redis.Redis, source: Iterable[SynergyEvent], *, rate: float) -> Iterator[list[int]]:
    """`up`'s feed sending `source` in a thread of its own; yields what it reports sent, batch by batch. On the way
    out the feed is stopped and Redis takes writes again, whatever the test did to its memory limit."""
    sent: list[int] = []
    stop = threading.Event()
    feed = threading.Thread(target=_feed_through_outages, daemon=True,
                            args=(client, iter(source)), kwargs={"rate": rate, "stop": stop, "on_sent": sent.append})
    feed.start()
    try:
        yield sent
    finally:
        stop.set()
        feed.join(timeout=10)
        client.config_set("maxmemory", 0)


def test_writes_refused_for_a_while_lose_no_event(private_redis: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(private_redis.url())
    events = many_events(5000, prefix="feed")
    with feeding(client, events, rate=200.0) as sent:
        wait_for(lambda: sum(sent) >= 50, what="the feed running")
        client.config_set("maxmemory", 1)  # Redis now refuses every write (OOM), answering PING as ever
        # What Redis holds, not what the feed has reported: a batch Redis took just before the limit may be reported
        # a moment after it.
        refused_at = client.xlen(INPUT_STREAM)
        time.sleep(2.5)  # the feed tries again every second: two or three tries refused
        assert client.xlen(INPUT_STREAM) == refused_at, "a write went through while refused"
        assert sum(sent) == refused_at, "the feed reports what landed, no more"
        client.config_set("maxmemory", 0)
        wait_for(lambda: sum(sent) >= refused_at + 50, what="the feed resumed")

    ids = [fields[b"correlation_id"].decode() for _, fields in stream_entries.entries(client, INPUT_STREAM)]
    assert ids == [event.correlation_id for event in events[: len(ids)]], "an event was lost or sent out of order"
    assert len(ids) == sum(sent) >= refused_at + 50
    client.close()


def test_a_batch_cut_short_is_sent_again_only_where_it_did_not_land(private_redis: EmbeddedRedis) -> None:
    # Redis fills up in the middle of a batch: its first events land, the rest are refused (OOM). Told only "refused",
    # the feed used to send the whole batch again once Redis took writes, each landed event a second time.
    client = redis.Redis.from_url(private_redis.url())
    events = many_events(3000, prefix="cut")

    def source() -> Iterator[SynergyEvent]:
        for index, event in enumerate(events):
            if index == 300:
                time.sleep(0.3)  # behind its schedule: the next batch is a large one (500 events, ~1 MB)
                room = int(client.info("memory")["used_memory"]) + 150_000  # ~70 more events
                client.config_set("maxmemory", room)
            yield event

    with feeding(client, source(), rate=2000.0) as sent:
        wait_for(lambda: client.config_get("maxmemory")["maxmemory"] != "0", what="the feed filling Redis")
        time.sleep(2.5)  # refused: the feed tries again every second
        length = client.xlen(INPUT_STREAM)
        assert 300 < length < 1000, "the batch cut short landed in part"
        client.config_set("maxmemory", 0)
        wait_for(lambda: sum(sent) >= length + 500, what="the feed resumed")

    ids = [fields[b"correlation_id"].decode() for _, fields in stream_entries.entries(client, INPUT_STREAM)]
    assert ids == [event.correlation_id for event in events[: len(ids)]], "an event was sent twice, lost or reordered"
    assert len(ids) == sum(sent), "what landed unseen counts as sent"
    client.close()


def test_what_landed_is_looked_for_after_the_feeds_own_last_entry_past_other_producers(
    redis_client: redis.Redis,
) -> None:
    batch = many_events(4, prefix="again")
    publish_events(redis_client, batch)  # an earlier run of the same ids: before the feed began, not its own
    feed = ResumableFeed([], written_after=newest_id(redis_client, INPUT_STREAM))
    redis_client.xadd(INPUT_STREAM, {"correlation_id": "another-producer"})
    landed_ids = publish_events(redis_client, batch[:2])  # the first two of the batch in flight landed, unconfirmed
    outage = FeedOutage(FeedStats(0, 1.0), batch, redis.ConnectionError("Connection reset by peer"))

    assert feed.resume(redis_client, outage) == 2
    assert list(feed) == batch[2:], "the events that did not land are sent again, in order"
    assert feed.written_after == landed_ids[-1]


def test_a_stream_that_cannot_be_read_leaves_the_whole_batch_to_send_again(redis_client: redis.Redis) -> None:
    batch = many_events(3, prefix="unread")
    redis_client.set(INPUT_STREAM, "not a stream")
    feed = ResumableFeed([], written_after=b"0-0")
    outage = FeedOutage(FeedStats(0, 1.0), batch, redis.ConnectionError("Connection reset by peer"))
    assert feed.resume(redis_client, outage) == 0
    assert list(feed) == batch
