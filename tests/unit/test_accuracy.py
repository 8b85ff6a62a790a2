from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from worker.accuracy import DEFAULT_HORIZON, AgentAccuracy, realised_action
from worker.actions import AGENT_NAMES, Action
from worker.records import AgentVote, SynergyEvent, SynergyType

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
ONE_HOT = {Action.SHORT: (1.0, 0.0, 0.0), Action.HOLD: (0.0, 1.0, 0.0), Action.LONG: (0.0, 0.0, 1.0)}


def bars(n: int) -> datetime:
    return T0 + n * timedelta(minutes=5)


def make_event(
    n: int = 0, *, symbol: str = "ES", price: float = 100.0, atr: float = 2.0, cid: str = "c"
) -> SynergyEvent:
    return SynergyEvent(
        correlation_id=cid,
        synergy_type=SynergyType.TYPE_1,
        direction=1,
        confidence=0.8,
        symbol=symbol,
        timestamp=bars(n).isoformat().replace("+00:00", "Z"),
        price=price,
        atr=atr,
        matrix=np.zeros((60, 7), dtype=np.float32),
    )


def calls(fvg: Action, momentum: Action, entry: Action) -> list[AgentVote]:
    return [
        AgentVote(agent, ONE_HOT[action], 0.9)
        for agent, action in zip(AGENT_NAMES, (fvg, momentum, entry), strict=True)
    ]


def test_nothing_resolved_means_no_accuracy() -> None:
    tracker = AgentAccuracy()

    assert tracker.accuracy() == {"fvg": None, "momentum": None, "entry": None}


def test_calls_resolve_with_the_first_price_at_the_horizon() -> None:
    tracker = AgentAccuracy()
    tracker.record(make_event(0, price=100.0, atr=2.0), calls(Action.LONG, Action.SHORT, Action.HOLD))

    assert tracker.observe("ES", 110.0, bars(5)) == 0  # before the horizon: not yet
    assert tracker.accuracy()["fvg"] is None
    assert tracker.observe("ES", 103.0, bars(6)) == 1  # at the horizon: +3 beyond the 1.0 band → long was right
    assert tracker.observe("ES", 90.0, bars(7)) == 0  # already resolved

    assert timedelta(minutes=30) == DEFAULT_HORIZON
    assert tracker.accuracy() == {"fvg": 1.0, "momentum": 0.0, "entry": 0.0}
    assert tracker.pending_count() == 0


def test_a_later_first_price_resolves_a_call_whose_horizon_passed_without_prices() -> None:
    tracker = AgentAccuracy()
    tracker.record(make_event(0, price=100.0), calls(Action.SHORT, Action.SHORT, Action.LONG))

    assert tracker.observe("ES", 95.0, bars(20)) == 1

    assert tracker.accuracy() == {"fvg": 1.0, "momentum": 1.0, "entry": 0.0}


def test_inside_the_dead_band_hold_was_right() -> None:
    tracker = AgentAccuracy(dead_band_atr=0.5)
    tracker.record(make_event(0, price=100.0, atr=2.0), calls(Action.HOLD, Action.LONG, Action.SHORT))

    tracker.observe("ES", 101.0, bars(6))  # move +1.0 == band edge: still inside

    assert tracker.accuracy() == {"fvg": 1.0, "momentum": 0.0, "entry": 0.0}


def test_just_beyond_the_dead_band_the_direction_was_right() -> None:
    tracker = AgentAccuracy(dead_band_atr=0.5)
    tracker.record(make_event(0, price=100.0, atr=2.0), calls(Action.HOLD, Action.LONG, Action.SHORT))

    tracker.observe("ES", 98.99, bars(6))

    assert tracker.accuracy() == {"fvg": 0.0, "momentum": 0.0, "entry": 1.0}


@pytest.mark.parametrize(
    ("later", "expected"),
    [(100.0, Action.HOLD), (102.0, Action.HOLD), (98.0, Action.HOLD), (102.5, Action.LONG), (97.5, Action.SHORT)],
)
def test_realised_action(later: float, expected: Action) -> None:
    assert realised_action(100.0, later, dead_band=2.0) is expected


def test_only_the_same_symbol_resolves_a_call() -> None:
    tracker = AgentAccuracy()
    tracker.record(make_event(0, symbol="ES"), calls(Action.LONG, Action.LONG, Action.LONG))

    assert tracker.observe("NQ", 500.0, bars(10)) == 0
    assert tracker.pending_count("ES") == 1


def test_accuracy_is_over_a_rolling_window_of_resolved_calls() -> None:
    tracker = AgentAccuracy(window=4)
    # Four wrong fvg calls, then four right ones: the window forgets the wrong ones.
    for n in range(8):
        fvg = Action.SHORT if n < 4 else Action.LONG
        tracker.record(make_event(n, price=100.0, cid=f"c{n}"), calls(fvg, Action.LONG, Action.HOLD))
        tracker.observe("ES", 110.0, bars(n + 6))
        if n == 3:
            assert tracker.accuracy()["fvg"] == 0.0
        if n == 5:
            assert tracker.accuracy()["fvg"] == 0.5

    assert tracker.accuracy() == {"fvg": 1.0, "momentum": 1.0, "entry": 0.0}
    assert tracker.resolved_counts() == {"fvg": 4, "momentum": 4, "entry": 4}


def test_calls_resolve_in_due_order_even_when_recorded_out_of_order() -> None:
    tracker = AgentAccuracy()
    tracker.record(make_event(4, price=100.0, cid="late"), calls(Action.LONG, Action.LONG, Action.LONG))
    tracker.record(make_event(0, price=100.0, cid="early"), calls(Action.SHORT, Action.SHORT, Action.SHORT))

    assert tracker.observe("ES", 90.0, bars(6)) == 1  # only the call made at bar 0 is due

    assert tracker.accuracy()["fvg"] == 1.0
    assert tracker.observe("ES", 110.0, bars(10)) == 1
    assert tracker.accuracy()["fvg"] == 1.0


def test_pending_calls_per_symbol_are_capped() -> None:
    tracker = AgentAccuracy(max_pending_per_symbol=3)
    for n in range(5):
        tracker.record(make_event(n, cid=f"c{n}"), calls(Action.LONG, Action.LONG, Action.LONG))

    assert tracker.pending_count("ES") == 3
    assert tracker.dropped == 2
    assert tracker.observe("ES", 110.0, bars(100)) == 3


def test_votes_from_unknown_agents_are_refused() -> None:
    tracker = AgentAccuracy()
    with pytest.raises(ValueError, match="unknown agent"):
        tracker.record(make_event(), [AgentVote("risk", (0.0, 0.0, 1.0), 1.0)])


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="horizon"):
        AgentAccuracy(horizon=timedelta(0))
    with pytest.raises(ValueError, match="dead_band_atr"):
        AgentAccuracy(dead_band_atr=-0.1)
    with pytest.raises(ValueError, match="window"):
        AgentAccuracy(window=0)
    with pytest.raises(ValueError, match="max_pending_per_symbol"):
        AgentAccuracy(max_pending_per_symbol=0)


def test_symbols_whose_events_stopped_do_not_keep_their_calls_for_good() -> None:
    # A rolled or delisted contract sends no later price: its last calls can never resolve.
    tracker = AgentAccuracy(max_pending=5, max_pending_per_symbol=5)
    for n, symbol in enumerate(["A", "B", "C", "D", "E"]):
        tracker.record(make_event(n, symbol=symbol, cid=symbol), calls(Action.LONG, Action.LONG, Action.LONG))
    tracker.record(make_event(5, symbol="A", cid="A2"), calls(Action.LONG, Action.LONG, Action.LONG))  # A is live

    assert tracker.pending_count() == 5 and tracker.dropped == 1
    assert tracker.pending_count("B") == 0, "the symbol recorded least recently goes first"
    assert tracker.pending_count("A") == 2
    for n, symbol in enumerate(["F", "G"]):
        tracker.record(make_event(6 + n, symbol=symbol, cid=symbol), calls(Action.LONG, Action.LONG, Action.LONG))
    assert (tracker.pending_count(), tracker.dropped) == (5, 3)
    assert [tracker.pending_count(s) for s in "ABCDEFG"] == [2, 0, 0, 0, 1, 1, 1]
    assert tracker.observe("A", 110.0, bars(100)) == 2
    assert tracker.pending_count() == 3


def test_calls_of_a_rewound_timeline_are_dropped_not_kept_or_resolved_by_older_prices() -> None:
    tracker = AgentAccuracy()
    for n in (100, 101, 102):
        tracker.record(make_event(n, cid=f"later{n}"), calls(Action.LONG, Action.LONG, Action.LONG))

    # A replay from 100 bars earlier: its first hour could still be late bars among current ones.
    assert [tracker.observe("ES", 90.0, bars(n)) for n in range(12)] == [0] * 12
    assert tracker.pending_count() == 3 and tracker.dropped == 0
    tracker.record(make_event(0, price=100.0, cid="replayed"), calls(Action.LONG, Action.SHORT, Action.LONG))

    assert tracker.observe("ES", 110.0, bars(12)) == 1, "the replay's own call resolves"
    assert tracker.pending_count() == 0 and tracker.dropped == 3
    assert tracker.accuracy() == {"fvg": 1.0, "momentum": 0.0, "entry": 1.0}, "no call resolved by another timeline"


def test_a_late_bar_among_current_ones_drops_nothing() -> None:
    tracker = AgentAccuracy()
    tracker.record(make_event(100, price=100.0, cid="live"), calls(Action.LONG, Action.LONG, Action.LONG))
    for n in range(30):
        assert tracker.observe("ES", 50.0, bars(n)) == 0  # late bars, e.g. dead letters put back
        assert tracker.observe("ES", 101.0, bars(100 + n // 10)) == 0  # the live feed in between
    assert tracker.dropped == 0
    assert tracker.observe("ES", 110.0, bars(106)) == 1


def test_invalid_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_pending 999 must be >= max_pending_per_symbol 1000"):
        AgentAccuracy(max_pending=999)
    with pytest.raises(ValueError, match="rewind_tolerance"):
        AgentAccuracy(rewind_tolerance=timedelta(minutes=-5))
