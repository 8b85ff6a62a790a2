"""A symbol's bar clock: late bars are not a rewind; a replay of older bars is, once it has run a holding period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.timeline import Timeline

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


def bars(n: int) -> datetime:
    return T0 + n * timedelta(minutes=5)


def test_marks_in_order_or_late_by_up_to_the_tolerance_are_never_a_rewind() -> None:
    timeline = Timeline(HOUR)
    assert not any(timeline.rewound_by(bars(n)) for n in range(50))
    assert not timeline.rewound_by(bars(49) - HOUR), "late by exactly the tolerance: still current"
    assert timeline.newest == bars(49) and timeline.old_since is None


def test_old_marks_rewind_once_they_have_advanced_by_the_tolerance_on_their_own() -> None:
    timeline = Timeline(HOUR)
    timeline.saw(bars(100))  # a bar without a price: a position opened, a call recorded

    assert [timeline.rewound_by(bars(n)) for n in range(12)] == [False] * 12
    assert timeline.rewound_by(bars(12)), "12 bars = an hour of the replay's own time"
    assert timeline.newest == bars(12) and timeline.old_since is None
    assert not timeline.rewound_by(bars(13)), "the clock restarted from the replay"


def test_a_current_mark_ends_a_run_of_old_ones() -> None:
    timeline = Timeline(HOUR)
    timeline.saw(bars(100))
    for n in range(11):
        assert not timeline.rewound_by(bars(n))
    assert timeline.behind, "its latest price is an old one: nobody's latest"
    assert not timeline.rewound_by(bars(100))  # the live feed goes on
    assert not timeline.behind
    assert not timeline.rewound_by(bars(12)), "a new run starts from here: 0 bars old, not 12"


def test_the_run_counts_from_its_oldest_mark() -> None:
    timeline = Timeline(HOUR)
    timeline.saw(bars(100))
    assert not timeline.rewound_by(bars(20))
    assert not timeline.rewound_by(bars(10))  # older still: the run now starts here
    assert not timeline.rewound_by(bars(21))
    assert timeline.rewound_by(bars(22))
