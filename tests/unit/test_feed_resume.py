"""A feed's batch in flight at an outage goes back in front of the rest, in order, to be sent again."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from tests.events import many_events
from worker.feed import ResumableFeed
from worker.records import SynergyEvent


def numbers(events: Iterable[SynergyEvent]) -> list[int]:
    """evt-3 → 3: which of many_events' events these are, in order."""
    return [int(event.correlation_id.removeprefix("evt-")) for event in events]


def test_a_batch_put_back_comes_first_and_in_order() -> None:
    events = many_events(10)  # any events: the feed only orders them
    feed = ResumableFeed(events)
    first = list(itertools.islice(feed, 3))
    feed.put_back(first)
    assert numbers(itertools.islice(feed, 5)) == [0, 1, 2, 3, 4]
    feed.put_back(events[3:5])
    assert numbers(feed) == [3, 4, 5, 6, 7, 8, 9]


def test_a_batch_put_back_while_an_earlier_one_is_half_resent_keeps_the_order() -> None:
    feed = ResumableFeed(many_events(6))
    feed.put_back(list(itertools.islice(feed, 4)))  # 0-3 in flight, then an outage
    resent = list(itertools.islice(feed, 1))  # the retry sends one of them, and fails again
    feed.put_back(resent)
    assert numbers(feed) == [0, 1, 2, 3, 4, 5]


def test_many_outages_do_not_nest() -> None:
    feed = ResumableFeed(many_events(3))
    for _ in range(200_000):  # each a one-event retry refused; a chain of iterators this deep would overflow
        feed.put_back([next(feed)])
    assert numbers(feed) == [0, 1, 2]
