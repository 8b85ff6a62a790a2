"""A feed's batch in flight at an outage goes back in front of the rest, in order, to be sent again."""

from __future__ import annotations

import itertools

from worker.feed import ResumableFeed


def test_a_batch_put_back_comes_first_and_in_order() -> None:
    feed = ResumableFeed(range(10))  # any items: the feed only orders them
    first = list(itertools.islice(feed, 3))
    feed.put_back(first)
    assert list(itertools.islice(feed, 5)) == [0, 1, 2, 3, 4]
    feed.put_back([3, 4])
    assert list(feed) == [3, 4, 5, 6, 7, 8, 9]


def test_a_batch_put_back_while_an_earlier_one_is_half_resent_keeps_the_order() -> None:
    feed = ResumableFeed(range(6))
    feed.put_back(list(itertools.islice(feed, 4)))  # 0-3 in flight, then an outage
    resent = list(itertools.islice(feed, 1))  # the retry sends one of them, and fails again
    feed.put_back(resent)
    assert list(feed) == [0, 1, 2, 3, 4, 5]


def test_many_outages_do_not_nest() -> None:
    feed = ResumableFeed(range(3))
    for _ in range(200_000):  # each a one-event retry refused; a chain of iterators this deep would overflow
        feed.put_back([next(feed)])
    assert list(feed) == [0, 1, 2]
