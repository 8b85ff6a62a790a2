"""The market-hours check's duplicate step, from the streams of a real Redis: an event sent twice within the window
is a warning (what TacticalDuplicateEvents fires on; the worker decided it once), two commands for one id critical.
Before, the step counted duplicate alerts that nothing writes, and could never warn."""

from __future__ import annotations

import time

import redis

from worker.names import COMMANDS_STREAM, INPUT_STREAM
from worker.ops.checks import MARKET_WINDOW_S, Status, check_duplicate_alerts
from worker.ops.sources import Sources
from worker.settings import default_models_dir


def step(redis_url: str):
    return check_duplicate_alerts(Sources(redis_url, "http://127.0.0.1:1", default_models_dir()))


def send(client: redis.Redis, *ids: str, seconds_ago: float = 0.0) -> None:
    start = int((time.time() - seconds_ago) * 1000)
    for index, cid in enumerate(ids):
        client.xadd(INPUT_STREAM, {"correlation_id": cid}, id=f"{start}-{index + 1}" if seconds_ago else "*")


def test_distinct_events_are_ok(redis_url: str, redis_client: redis.Redis) -> None:
    send(redis_client, "a", "b", "c")
    result = step(redis_url)
    assert result.status is Status.OK, result.value
    assert "0 correlation id(s) sent more than once in 15 min" in result.value


def test_an_event_sent_twice_in_the_window_warns_naming_it(redis_url: str, redis_client: redis.Redis) -> None:
    send(redis_client, "a", "b", "a")
    result = step(redis_url)
    assert result.status is Status.WARN, result.value
    assert "1 correlation id(s) sent more than once" in result.value
    assert "`tacticalctl duplicates --window 15m`" in result.next_action
    [offender] = result.details["resent_in_window"]["offenders"]
    assert (offender["correlation_id"], offender["count"]) == ("a", 2)


def test_copies_older_than_the_window_are_not_this_window_s(redis_url: str, redis_client: redis.Redis) -> None:
    send(redis_client, "a", "a", seconds_ago=MARKET_WINDOW_S + 600)
    send(redis_client, "b")
    assert step(redis_url).status is Status.OK


def test_two_commands_for_one_event_are_critical(redis_url: str, redis_client: redis.Redis) -> None:
    send(redis_client, "a")
    for _ in range(2):
        redis_client.xadd(COMMANDS_STREAM, {"correlation_id": "a", "side": "BUY"})
    assert step(redis_url).status is Status.CRITICAL
