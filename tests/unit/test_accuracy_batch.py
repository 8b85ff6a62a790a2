"""The accuracy tracker's batch sweep leaves exactly the state its event-by-event loop leaves, on any sequence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.accuracy import AgentAccuracy
from worker.actions import AGENT_NAMES, Action
from worker.records import AgentVote, SynergyEvent, SynergyType

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
PROBABILITIES = {Action.SHORT: (0.7, 0.2, 0.1), Action.HOLD: (0.2, 0.6, 0.2), Action.LONG: (0.1, 0.2, 0.7)}


def event(index: int, symbol: str, bar: int, price: float, atr: float) -> SynergyEvent:
    return SynergyEvent(correlation_id=f"c{index}", synergy_type=SynergyType.TYPE_1, direction=1, confidence=0.8,
                        symbol=symbol, timestamp=(T0 + bar * timedelta(minutes=5)).isoformat(), price=price, atr=atr,
                        matrix=np.zeros((60, 7), dtype=np.float32))


def votes(actions: tuple[Action, Action, Action]) -> tuple[AgentVote, ...]:
    return tuple(AgentVote(agent, PROBABILITIES[action], 0.9) for agent, action in zip(AGENT_NAMES, actions,
                                                                                        strict=True))


def state(tracker: AgentAccuracy) -> object:
    """Everything the tracker holds, in its order."""
    return (
        tracker.accuracy(), tracker.resolved_counts(), tracker.pending_count(), tracker.dropped, tracker._next_seq,
        {agent: (list(outcomes._outcomes), outcomes.correct) for agent, outcomes in tracker._outcomes.items()},
        [(symbol, calls.timeline.newest, calls.timeline.old_since, calls.calls)
         for symbol, calls in tracker._pending.items()],
    )


action = st.sampled_from(list(Action))
step = st.tuples(
    st.sampled_from(["ES", "NQ", "CL"]),
    # Bars since the symbol's last event: mostly forward (a live feed: the batch is swept), sometimes back (a late bar
    # or a rewind, within or across batches: event by event), sometimes far forward (past a run of late bars).
    st.one_of(*[st.integers(min_value=0, max_value=12)] * 5, st.integers(min_value=-30, max_value=-1),
              st.integers(min_value=13, max_value=60)),
    st.floats(min_value=90.0, max_value=110.0),
    st.sampled_from([0.5, 2.0, 4.0]),
    st.tuples(action, action, action),
)


@settings(max_examples=500, deadline=None)
@given(steps=st.lists(step, max_size=60), cuts=st.lists(st.integers(min_value=1, max_value=12), max_size=20),
       caps=st.sampled_from([(100_000, 1000), (8, 4), (5, 5), (3, 1)]))
def test_a_batch_leaves_the_state_its_events_one_by_one_leave(steps, cuts, caps) -> None:
    max_pending, per_symbol = caps
    one_by_one = AgentAccuracy(max_pending=max_pending, max_pending_per_symbol=per_symbol, window=7)
    batched = AgentAccuracy(max_pending=max_pending, max_pending_per_symbol=per_symbol, window=7)
    clock: dict[str, int] = {}
    items = []
    for index, (symbol, move, price, atr, actions) in enumerate(steps):
        clock[symbol] = clock.get(symbol, 0) + move
        items.append((event(index, symbol, clock[symbol], price, atr), votes(actions),
                      T0 + clock[symbol] * timedelta(minutes=5)))
    start = 0
    for size in [*cuts, len(items)]:
        batch = items[start:start + size]
        start += size
        for one, its_votes, bar_close in batch:
            one_by_one.observe(one.symbol, one.price, bar_close)
            one_by_one.record(one, its_votes, bar_close)
        batched.observe_and_record_batch([b[0] for b in batch], [b[1] for b in batch], [b[2] for b in batch])
        assert state(batched) == state(one_by_one)


def test_a_live_feed_batch_is_swept_and_resolves_calls_with_the_first_price_past_their_horizon() -> None:
    tracker = AgentAccuracy()
    # Every 5 bars (25 min) one event: each call (30 min horizon) resolves at the second event after it.
    items = [(event(n, "ES", 5 * n, 100.0 + 3 * n, 2.0), votes((Action.LONG, Action.SHORT, Action.HOLD)),
              T0 + 25 * n * timedelta(minutes=1)) for n in range(10)]
    assert tracker._sweepable([i[0] for i in items], [i[1] for i in items], [i[2] for i in items]) is not None

    tracker.observe_and_record_batch([i[0] for i in items], [i[1] for i in items], [i[2] for i in items])

    # Calls 0..7 resolved (by events 2..9): +6 beyond the 1.0 band, long was right.
    assert tracker.resolved_counts() == {"fvg": 8, "momentum": 8, "entry": 8}
    assert tracker.accuracy() == {"fvg": 1.0, "momentum": 0.0, "entry": 0.0}
    assert tracker.pending_count() == 2


def test_a_late_bar_sends_the_batch_event_by_event() -> None:
    tracker = AgentAccuracy()
    late = [(event(0, "ES", 10, 100.0, 2.0), votes((Action.LONG,) * 3), T0 + timedelta(minutes=50)),
            (event(1, "ES", 9, 100.0, 2.0), votes((Action.LONG,) * 3), T0 + timedelta(minutes=45))]
    assert tracker._sweepable([i[0] for i in late], [i[1] for i in late], [i[2] for i in late]) is None


def test_outcomes_count_in_the_order_their_events_came_across_symbols() -> None:
    # ES resolves at event 3, NQ at event 4, and ES's last event (5) comes after NQ's: the window keeps event order.
    def batch_of(tracker: AgentAccuracy, items: list) -> None:
        tracker.observe_and_record_batch([i[0] for i in items], [i[1] for i in items], [i[2] for i in items])

    right, wrong = (Action.LONG,) * 3, (Action.SHORT,) * 3
    minute = timedelta(minutes=1)
    first = [(event(0, "ES", 0, 100.0, 2.0), votes(right), T0), (event(1, "NQ", 0, 100.0, 2.0), votes(wrong), T0)]
    second = [(event(2, "CL", 0, 100.0, 2.0), votes(right), T0 + 5 * minute),
              (event(3, "ES", 8, 110.0, 2.0), votes(right), T0 + 40 * minute),
              (event(4, "NQ", 8, 110.0, 2.0), votes(right), T0 + 40 * minute),
              (event(5, "ES", 9, 111.0, 2.0), votes(right), T0 + 45 * minute)]
    one_by_one, batched = AgentAccuracy(window=7), AgentAccuracy(window=7)
    for items in (first, second):
        for one, its_votes, bar_close in items:
            one_by_one.observe(one.symbol, one.price, bar_close)
            one_by_one.record(one, its_votes, bar_close)
        batch_of(batched, items)

    assert list(batched._outcomes["fvg"]._outcomes) == [True, False] == list(one_by_one._outcomes["fvg"]._outcomes)
    assert state(batched) == state(one_by_one)


def test_a_live_batch_after_a_late_bar_clears_it_as_the_loop_does() -> None:
    def at(bar: int) -> datetime:
        return T0 + bar * timedelta(minutes=5)

    earlier = [(event(0, "ES", 0, 100.0, 2.0), votes((Action.LONG,) * 3), at(0)),
               (event(1, "ES", 20, 104.0, 2.0), votes((Action.LONG,) * 3), at(20)),
               (event(2, "ES", 3, 99.0, 2.0), votes((Action.LONG,) * 3), at(3))]  # 17 bars late: old, not a rewind
    live = [(event(3, "ES", 25, 105.0, 2.0), votes((Action.LONG,) * 3), at(25))]
    one_by_one, batched = AgentAccuracy(), AgentAccuracy()
    for items in (earlier, live):
        for one, its_votes, bar_close in items:
            one_by_one.observe(one.symbol, one.price, bar_close)
            one_by_one.record(one, its_votes, bar_close)
        batched.observe_and_record_batch([i[0] for i in items], [i[1] for i in items], [i[2] for i in items])
        assert state(batched) == state(one_by_one)

    assert batched._pending["ES"].timeline.old_since is None  # the live bar ended the run of old ones


def test_a_window_counts_what_it_holds_after_any_run_of_outcomes() -> None:
    from worker.accuracy import _Outcomes

    for runs in ([[True, False, True]], [[True] * 3, [False] * 2, [True, True]], [[False] * 9 + [True] * 3],
                 [[True] * 2, [False] * 12, [True]], [[False] * 2, [True] * 12, [False]],  # runs past the window
                 [[True] * 5, [True, False] * 2]):
        window, added_one_by_one = _Outcomes(5), _Outcomes(5)
        for run in runs:
            window.extend(run)
            for outcome in run:
                added_one_by_one.add(outcome)
            assert list(window._outcomes) == list(added_one_by_one._outcomes)
            assert window.correct == added_one_by_one.correct == sum(window._outcomes), runs
