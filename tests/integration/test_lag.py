from __future__ import annotations

import time

import pytest
import redis

from tests.integration.streams import read_group
from worker.health import CheckStatus, check_event_rate
from worker.lag import (
    EXACT_COUNT_LIMIT,
    LagSample,
    LagUnavailable,
    TrendStatus,
    evaluate_lag_trend,
    read_consumer_lag,
)
from worker.names import CONSUMER_GROUP, INPUT_STREAM
from worker.ops.lag_watch import LagMonitor, RateSource, sample_lag


def server_now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def add_entries(client: redis.Redis, first_ms: int, count: int) -> list[str]:
    """`count` entries with explicit ids one millisecond apart, the first at `first_ms`."""
    pipe = client.pipeline(transaction=False)
    for offset in range(count):
        pipe.xadd(INPUT_STREAM, {"n": str(offset)}, id=f"{first_ms + offset}-0")
    return [entry_id.decode() for entry_id in pipe.execute()]


@pytest.fixture
def backlog(redis_client: redis.Redis) -> tuple[int, list[str]]:
    """1,000 entries, the first ten seconds old, and the group created at 0 (nothing delivered yet)."""
    now_ms = server_now_ms(redis_client)
    first_ms = now_ms - 10_000
    ids = add_entries(redis_client, first_ms, 1000)
    redis_client.xgroup_create(INPUT_STREAM, CONSUMER_GROUP, id="0")
    return first_ms, ids


def test_undelivered_backlog(redis_client: redis.Redis, backlog: tuple[int, list[str]]) -> None:
    first_ms, ids = backlog
    lag = read_consumer_lag(redis_client, now_ms=first_ms + 10_000)
    assert lag.count == 1000
    assert lag.pending == 0
    assert lag.seconds == 10.0
    assert lag.oldest_id == ids[0]
    assert lag.last_delivered_id == "0-0"
    assert lag.stream_length == 1000


def test_age_is_measured_on_the_server_clock(redis_client: redis.Redis, backlog: tuple[int, list[str]]) -> None:
    lag = read_consumer_lag(redis_client)
    assert 10.0 <= lag.seconds < 40.0


def test_delivered_but_unacknowledged_entries_still_count_as_waiting(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    first_ms, ids = backlog
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=1000)
    lag = read_consumer_lag(redis_client, now_ms=first_ms + 10_000)
    assert lag.count == 0
    assert lag.pending == 1000
    assert lag.seconds == 10.0
    assert lag.oldest_id == ids[0]
    assert lag.entries_read == 1000


def test_after_reading_and_acking_everything_nothing_waits(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    first_ms, ids = backlog
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=1000)
    redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, *ids)
    lag = read_consumer_lag(redis_client, now_ms=first_ms + 10_000)
    assert (lag.count, lag.pending, lag.seconds, lag.oldest_id) == (0, 0, 0.0, None)
    assert lag.last_delivered_id == ids[-1]


def test_oldest_waiting_entry_is_the_first_undelivered_once_the_head_is_acked(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    first_ms, ids = backlog
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=400)
    redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, *ids[:400])
    lag = read_consumer_lag(redis_client, now_ms=first_ms + 10_000)
    assert lag.count == 600
    assert lag.oldest_id == ids[400]
    assert lag.seconds == pytest.approx((10_000 - 400) / 1000)


def test_a_pending_entry_older_than_the_undelivered_ones_sets_the_age(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    first_ms, ids = backlog
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=10)
    redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, *ids[1:10])  # the first one is stuck
    lag = read_consumer_lag(redis_client, now_ms=first_ms + 10_000)
    assert (lag.count, lag.pending) == (990, 1)
    assert lag.oldest_id == ids[0]
    assert lag.seconds == 10.0


def test_a_large_backlog_with_few_delivered_entries_before_it_is_counted_exactly(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    # Redis says 1000 (entries-read 0, as Redis 7.0 can after a restart); 100 entries are delivered, 900 wait.
    _first_ms, ids = backlog
    redis_client.execute_command("XGROUP", "SETID", INPUT_STREAM, CONSUMER_GROUP, ids[99], "ENTRIESREAD", 0)
    lag = read_consumer_lag(redis_client)
    assert (lag.count, lag.count_exact, lag.count_text, lag.count_note) == (900, True, "900", None)
    assert lag.redis_lag == 1000


def test_a_large_lag_with_much_delivered_before_it_is_a_bound_and_says_so(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    # 500 delivered, 500 wait: at least 256 wait (counted), at most 1000 - 256 (256 delivered counted).
    _first_ms, ids = backlog
    redis_client.execute_command("XGROUP", "SETID", INPUT_STREAM, CONSUMER_GROUP, ids[499], "ENTRIESREAD", 400)
    lag = read_consumer_lag(redis_client)
    assert (lag.count, lag.count_exact, lag.count_min, lag.count_max) == (600, False, 256, 744)
    assert lag.count_text == "256–744 (Redis: 600)"
    assert lag.count_note is not None and "a bound, not a count" in lag.count_note
    assert {k: lag.as_dict()[k] for k in ("count", "count_exact", "count_min", "count_max", "redis_lag")} == {
        "count": 600, "count_exact": False, "count_min": 256, "count_max": 744, "redis_lag": 600}

    # What Redis 7.0 does after a restart (its entries-read reloaded as of the last AOF rewrite): a figure the bound
    # rules out is not taken as the count, and the line says why.
    redis_client.execute_command("XGROUP", "SETID", INPUT_STREAM, CONSUMER_GROUP, ids[499], "ENTRIESREAD", 100)
    lag = read_consumer_lag(redis_client)
    assert (lag.count, lag.count_exact, lag.redis_lag, lag.count_text) == (None, False, 900, "256–744")
    assert lag.count_note is not None and "900, is outside it" in lag.count_note

    redis_client.xgroup_setid(INPUT_STREAM, CONSUMER_GROUP, ids[899])
    counted = read_consumer_lag(redis_client)
    assert (counted.count, counted.count_exact, counted.count_text) == (100, True, "100")


def test_xdel_of_an_unread_entry_makes_a_large_count_unknown_not_zero(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    first_ms, ids = backlog
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=300)
    redis_client.xdel(INPUT_STREAM, ids[500])
    lag = read_consumer_lag(redis_client, now_ms=first_ms + 10_000)
    assert (lag.count, lag.redis_lag) == (None, None)
    assert lag.count_text == "256–743"
    assert lag.count_note is not None and "Redis cannot tell either" in lag.count_note
    assert lag.seconds == 10.0


def test_xdel_of_an_unread_entry_in_a_stream_read_little_is_still_counted(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    _first_ms, ids = backlog
    redis_client.xdel(INPUT_STREAM, ids[500])
    lag = read_consumer_lag(redis_client)
    assert (lag.count, lag.count_exact, lag.redis_lag) == (999, True, None)


def test_xdel_of_entries_already_read_keeps_the_count(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    _first_ms, ids = backlog
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=10)
    redis_client.xdel(INPUT_STREAM, ids[3])
    assert read_consumer_lag(redis_client).count == 990


def test_setid_to_an_arbitrary_id_leaves_redis_unable_to_tell_and_the_count_counted(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    first_ms, ids = backlog
    redis_client.xgroup_setid(INPUT_STREAM, CONSUMER_GROUP, id=ids[99])
    lag = read_consumer_lag(redis_client, now_ms=first_ms + 10_000)
    assert (lag.count, lag.count_exact, lag.redis_lag) == (900, True, None)
    assert lag.entries_read is None
    assert lag.oldest_id == ids[100]
    assert lag.seconds == pytest.approx(9.9)


def test_missing_stream_is_a_clear_error(redis_client: redis.Redis) -> None:
    with pytest.raises(LagUnavailable, match="stream 'synergy_events' does not exist"):
        read_consumer_lag(redis_client)


def test_missing_group_is_a_clear_error(redis_client: redis.Redis) -> None:
    redis_client.xadd(INPUT_STREAM, {"n": "1"})
    redis_client.xgroup_create(INPUT_STREAM, "someone_else", id="0")
    with pytest.raises(LagUnavailable, match="consumer group 'tactical_group' does not exist"):
        read_consumer_lag(redis_client)


def test_other_stream_and_group_names(redis_client: redis.Redis) -> None:
    redis_client.xadd("test:input", {"n": "1"}, id="5-0")
    redis_client.xgroup_create("test:input", "test_group", id="0")
    lag = read_consumer_lag(redis_client, stream="test:input", group="test_group", now_ms=2005)
    assert (lag.count, lag.seconds, lag.oldest_id) == (1, 2.0, "5-0")


def test_samples_of_a_consumer_that_stopped_show_stop(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    _first_ms, ids = backlog
    samples = []
    for minute in range(4):  # reads and acks 100 per minute for two minutes, then nothing
        if minute < 2:
            batch = ids[minute * 100 : (minute + 1) * 100]
            redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=100)
            redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, *batch)
        samples.append(LagSample.from_consumer_lag(read_consumer_lag(redis_client), at=60.0 * minute))
    assert [s.committed for s in samples] == [100, 200, 200, 200]
    assert evaluate_lag_trend(samples, now=60.0 * 3 + 1) is TrendStatus.STOP


def wait_for_aof_rewrite(client: redis.Redis, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            return
        time.sleep(0.05)
    raise AssertionError("the AOF rewrite did not finish")


def test_a_redis_restart_does_not_invent_a_backlog(private_redis) -> None:
    # Redis 7.0 reloads a group's entries-read from the AOF as of its last rewrite, so XINFO GROUPS reports a lag
    # for entries long delivered (and it grows with each restart). Nothing after last-delivered-id means none waits.
    client = redis.Redis.from_url(private_redis.url())
    client.xgroup_create(INPUT_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    for round_ in range(3):
        for n in range(20):
            client.xadd(INPUT_STREAM, {"n": f"{round_}-{n}"})
        for entry_id, _ in read_group(client, "c1", 100):
            client.xack(INPUT_STREAM, CONSUMER_GROUP, entry_id)
        if round_ == 0:  # the AOF rewrite the reloaded entries-read then goes back to
            client.bgrewriteaof()
            wait_for_aof_rewrite(client)
        client.close()
        private_redis.restart(kill=False)
        client = redis.Redis.from_url(private_redis.url())
    reported = next(g for g in client.xinfo_groups(INPUT_STREAM) if g["name"] == CONSUMER_GROUP.encode())["lag"]
    assert reported == 40  # what Redis says: the two rounds read after the rewrite
    lag = read_consumer_lag(client)
    assert (lag.count, lag.pending, lag.seconds) == (0, 0, 0.0)
    # entries-added is reloaded exact, so what was delivered is counted right where entries-read is not (20).
    assert (lag.entries_added, lag.delivered, lag.entries_read) == (60, 60, 20)
    # A real backlog after the restart is counted as it is, not as Redis's stale figure.
    for n in range(7):
        client.xadd(INPUT_STREAM, {"n": f"after-{n}"})
    assert read_consumer_lag(client).count == 7


def stale_entries_read(client: redis.Redis, last_delivered_id: str, entries_read: int) -> None:
    """What a Redis 7.0 restart does to the group: entries-read reloaded as of the last AOF rewrite, the id kept."""
    client.execute_command("XGROUP", "SETID", INPUT_STREAM, CONSUMER_GROUP, last_delivered_id,
                           "ENTRIESREAD", entries_read)


def test_a_stopped_consumer_is_still_stop_after_redis_reloads_entries_read_stale(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    """The trend's finished counter was entries-read − pending: the restart's jump (100 → 0) read as progress, and
    a consumer stopped for three minutes was called too_short. Counted (entries added − undelivered − pending), it
    has not moved."""
    _first_ms, ids = backlog
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=100)
    redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, *ids[:100])
    samples = []
    for minute in range(4):
        if minute == 2:
            stale_entries_read(redis_client, ids[99], 0)
        samples.append(LagSample.from_consumer_lag(read_consumer_lag(redis_client), at=60.0 * minute))
    assert [s.committed for s in samples] == [100, 100, 100, 100]
    assert evaluate_lag_trend(samples, now=60.0 * 3 + 1) is TrendStatus.STOP


def test_the_out_rate_across_a_stale_entries_read_is_what_was_delivered(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    """`lag watch`'s out rate was entries-read's growth: 0/s across the restart's jump back, while 50 were
    delivered. Counted, it is 50 over the span, and says so."""
    _first_ms, ids = backlog
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=100)
    monitor = LagMonitor(rate_window_s=10.0)
    lag, added = sample_lag(redis_client)
    monitor.observe(lag, at=0.0, entries_added=added)
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=50)
    stale_entries_read(redis_client, ids[149], 10)
    lag, added = sample_lag(redis_client)
    assert (lag.entries_read, lag.redis_lag, lag.count, lag.delivered) == (10, 990, 850, 150)
    reading = monitor.observe(lag, at=5.0, entries_added=added)
    assert (reading.rate_out_per_s, reading.rate_out_source) == (10.0, RateSource.COUNTED)
    assert reading.as_dict()["rate_out_source"] == "counted" and reading.as_dict()["delivered"] == 150


def test_a_large_backlog_known_only_as_a_bound_is_a_backlog_to_the_event_rate_check(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    """500 wait, Redis says 900 (stale): the count is the bound 256–744 and no figure. The worker's event-rate check
    took that for no backlog ("rate not judged") and never warned of a slow worker under a large backlog; it now
    judges on the bound's low end, and says "at least"."""
    _first_ms, ids = backlog
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=500)
    redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, *ids[:497])
    stale_entries_read(redis_client, ids[499], 100)
    lag = read_consumer_lag(redis_client)
    assert (lag.count, lag.count_exact, lag.count_min, lag.pending) == (None, False, 256, 3)
    assert lag.backlog_at_least == 259
    check = check_event_rate(10.0, lag.backlog_at_least, backlog_is_floor=not lag.count_exact)
    assert check.status is CheckStatus.WARN
    assert "with at least 259 entries waiting" in check.message
    assert LagSample.from_consumer_lag(lag, at=0.0).count is None  # the trend: unknown, not Redis's 900


def trimming_producer(client: redis.Redis, count: int, maxlen: int = 500) -> None:
    """A producer adding `count` entries with `MAXLEN ~ maxlen` (worker.producer's trim: the oldest go, delivered
    or not)."""
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        pipe.xadd(INPUT_STREAM, {"n": str(n)}, maxlen=maxlen, approximate=True)
    pipe.execute()


def test_undelivered_entries_trimmed_away_are_not_counted_as_delivered(redis_client: redis.Redis) -> None:
    """Worker dead with 10 pending, a producer trimming at MAXLEN ~ 500: delivered was entries-added less the
    undelivered count, so every undelivered entry trimmed away counted as delivered, and `lag watch` showed out as
    fast as in ("counted"): events being lost looked like a healthy consumer. Out is 0/s (the group's position has
    not moved), delivered unknown, and the reading says undelivered entries were removed."""
    redis_client.xgroup_create(INPUT_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    trimming_producer(redis_client, 20)
    redis_client.xreadgroup(CONSUMER_GROUP, "dead", {INPUT_STREAM: ">"}, count=10)
    monitor = LagMonitor(rate_window_s=10.0)
    readings = []
    for second in range(0, 100, 10):
        trimming_producer(redis_client, 100)
        lag, added = sample_lag(redis_client)
        readings.append(monitor.observe(lag, at=float(second), entries_added=added))
    last = readings[-1]
    assert last.lag.removed is not None and last.lag.removed > 0  # the trim did remove undelivered entries
    assert last.lag.pending == 10 and last.lag.count == last.lag.stream_length
    assert last.lag.undelivered_removed and last.lag.delivered is None
    assert last.as_dict()["undelivered_removed"] is True and last.as_dict()["delivered"] is None
    assert last.rate_in_per_s == 10.0
    assert [r.rate_out_per_s for r in readings[1:]] == [0.0] * 9
    assert {r.rate_out_source for r in readings[1:]} == {RateSource.COUNTED}


def test_a_live_consumer_behind_a_trimming_producer_keeps_its_counted_out_rate(redis_client: redis.Redis) -> None:
    """The normal case of a trimming producer: only delivered entries go. Nothing says undelivered were removed,
    and out is what was delivered."""
    redis_client.xgroup_create(INPUT_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    monitor = LagMonitor(rate_window_s=10.0)
    readings = []
    for second in range(0, 50, 10):
        trimming_producer(redis_client, 300)
        for entry_id, _ in read_group(redis_client, "c1", 250):
            redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, entry_id)
        lag, added = sample_lag(redis_client)
        readings.append(monitor.observe(lag, at=float(second), entries_added=added))
    removed = readings[-1].lag.removed
    assert removed is not None and removed > 0 and not readings[-1].lag.undelivered_removed
    assert [(r.rate_out_per_s, r.rate_out_source) for r in readings[1:]] == [(25.0, RateSource.COUNTED)] * 4


def test_xdel_of_an_undelivered_entry_leaves_delivered_unknown_and_the_out_rate_not_inflated(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    _first_ms, ids = backlog
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=10)
    monitor = LagMonitor(rate_window_s=10.0)
    lag, added = sample_lag(redis_client)
    assert (lag.delivered, lag.undelivered_removed) == (10, False)
    monitor.observe(lag, at=0.0, entries_added=added)
    redis_client.xdel(INPUT_STREAM, *ids[500:550])
    lag, added = sample_lag(redis_client)
    assert (lag.count, lag.undelivered_removed, lag.delivered) == (940, True, None)
    reading = monitor.observe(lag, at=5.0, entries_added=added)
    assert (reading.rate_out_per_s, reading.rate_out_source) == (0.0, RateSource.COUNTED)  # it was 10/s
    # Once the group is past the deleted entries, delivered is counted again, but the rate across the deletion
    # is not read off it (it would count the 50 deleted as delivered).
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=900)
    lag, added = sample_lag(redis_client)
    assert (lag.count, lag.undelivered_removed, lag.delivered) == (40, False, 960)
    reading = monitor.observe(lag, at=10.0, entries_added=added)
    assert (reading.rate_out_per_s, reading.rate_out_source) != (190.0, RateSource.COUNTED)  # 950 in 5 s: wrong
    assert reading.rate_out_source is not RateSource.COUNTED or reading.rate_out_per_s == 182.0  # 910 delivered


def test_a_dead_worker_in_a_large_backlog_known_only_as_a_bound_is_called_stopped(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    """1,000 entries, 400 delivered (396 acked, 4 pending) and 600 waiting: a bound (256–744). The trend took
    neither count nor committed from it and said unknown, so a dead worker during a large backlog was never called
    stopped (lag watch, /health/state, triage). Its last-delivered id and pending count have not moved: stop."""
    _first_ms, ids = backlog
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=400)
    redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, *ids[:396])
    monitor = LagMonitor()
    readings = []
    for second in range(0, 190, 10):
        lag, added = sample_lag(redis_client)
        readings.append(monitor.observe(lag, at=float(second), entries_added=added))
    lag = readings[-1].lag
    assert (lag.count_exact, lag.count_min, lag.pending, lag.delivered) == (False, 256, 4, None)
    assert [r.trend for r in readings][3:12] == [TrendStatus.STALL] * 9  # 30 s span, nothing moved
    assert readings[-1].trend is TrendStatus.STOP and readings[-1].status is CheckStatus.CRITICAL
    assert readings[-1].as_dict()["trend"] == "stop"


def test_a_working_consumer_in_a_large_backlog_known_only_as_a_bound_is_not_called_stopped(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    _first_ms, ids = backlog
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=300)
    redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, *ids[:300])
    samples = []
    for step in range(19):  # 2 every 10 s, delivered and acknowledged: slow, but moving
        batch = read_group(redis_client, "c1", 2)
        redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, *(entry_id for entry_id, _ in batch))
        lag = read_consumer_lag(redis_client)
        assert not lag.count_exact
        samples.append(LagSample.from_consumer_lag(lag, at=10.0 * step))
    assert evaluate_lag_trend(samples, now=180.5) is TrendStatus.OK


def test_a_dead_worker_behind_a_trimming_producer_is_called_stopped(redis_client: redis.Redis) -> None:
    """The incident of entries being lost: worker dead with 10 pending, a producer trimming at MAXLEN ~ 500. The
    trend went stall -> ok once the trim reached the undelivered entries (each counted as delivered)."""
    redis_client.xgroup_create(INPUT_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    trimming_producer(redis_client, 20)
    redis_client.xreadgroup(CONSUMER_GROUP, "dead", {INPUT_STREAM: ">"}, count=10)
    monitor = LagMonitor()
    readings = []
    for second in range(0, 200, 10):
        trimming_producer(redis_client, 100)
        lag, added = sample_lag(redis_client)
        readings.append(monitor.observe(lag, at=float(second), entries_added=added))
    assert readings[-1].lag.undelivered_removed
    assert [r.trend for r in readings][3:12] == [TrendStatus.STALL] * 9
    assert readings[-1].trend is TrendStatus.STOP


def xrange_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_xrange", {}).get("calls", 0))


def test_a_reading_given_the_last_one_skips_re_reading_the_delivered_entries_while_nothing_was_removed(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    """Each reading of a bound read 256 delivered entries (~0.5 MB of 1.7 KB events into Lua) just to learn there
    were at least 256. Given the last reading, it reads them again only when entries were removed since."""
    _first_ms, ids = backlog
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=400)
    first = read_consumer_lag(redis_client)
    assert first.head_mark == ids[EXACT_COUNT_LIMIT - 1] and not first.count_exact
    redis_client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=50)
    redis_client.config_resetstat()
    again = read_consumer_lag(redis_client, previous=first)
    assert xrange_calls(redis_client) == 1  # the undelivered side only
    fresh = read_consumer_lag(redis_client)
    assert (again.count, again.count_min, again.count_max, again.head_mark) == (
        fresh.count, fresh.count_min, fresh.count_max, fresh.head_mark)

    # Entries removed (a trim past the mark, or an XDEL before it): read again, and the count follows.
    redis_client.xtrim(INPUT_STREAM, maxlen=600)
    redis_client.config_resetstat()
    trimmed = read_consumer_lag(redis_client, previous=again)
    assert xrange_calls(redis_client) == 2
    assert (trimmed.count, trimmed.count_exact) == (550, True)  # 50 delivered left before the group's position
    assert trimmed.head_mark is None


def test_a_mark_is_not_used_for_a_group_position_before_it(
    redis_client: redis.Redis, backlog: tuple[int, list[str]]
) -> None:
    _first_ms, ids = backlog
    redis_client.xgroup_setid(INPUT_STREAM, CONSUMER_GROUP, ids[499])
    first = read_consumer_lag(redis_client)
    assert first.head_mark == ids[EXACT_COUNT_LIMIT - 1]
    redis_client.xgroup_setid(INPUT_STREAM, CONSUMER_GROUP, ids[99])  # 100 delivered before it now
    assert read_consumer_lag(redis_client, previous=first).count == 900


def test_the_lag_is_read_while_redis_is_out_of_memory(private_redis) -> None:
    """At maxmemory Redis refuses every command queued in a MULTI, reads too: the lag — what an operator reads
    then (the runbook's OOM breaker) — is read without one."""
    client = redis.Redis.from_url(private_redis.url())
    client.xgroup_create(INPUT_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    for i in range(5):
        client.xadd(INPUT_STREAM, {"n": str(i)})
    client.config_set("maxmemory", "1mb")
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("a-write", "refused")  # Redis is out of memory for writes indeed

    lag = read_consumer_lag(client)

    assert (lag.count, lag.pending, lag.stream_length) == (5, 0, 5)
    client.close()


def test_a_refused_read_is_the_refusal_not_a_missing_stream(private_redis) -> None:
    """Under an ACL user without XINFO, the lag cannot be read: that is Redis refusing (the user's ACL to fix), not
    a stream that does not exist."""
    admin = redis.Redis.from_url(private_redis.url())
    admin.xgroup_create(INPUT_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    admin.xadd(INPUT_STREAM, {"n": "1"})
    admin.execute_command("ACL", "SETUSER", "noxinfo", "on", ">pw", "~*", "&*", "+@all", "-xinfo")
    client = redis.Redis.from_url(private_redis.url().replace("redis://", "redis://noxinfo:pw@"))

    with pytest.raises(redis.exceptions.NoPermissionError):
        read_consumer_lag(client)
    client.close()
    admin.close()
