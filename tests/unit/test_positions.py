from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from worker.positions import (
    DEFAULT_MAX_HOLDING,
    ClosedPosition,
    ExitReason,
    PositionBook,
    PositionBookError,
    bar_time,
)
from worker.records import ExecutionCommand

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def bars(n: int) -> datetime:
    return T0 + n * timedelta(minutes=5)


def long_command(cid: str = "L1", *, symbol: str = "ES", price: float = 100.0, quantity: int = 2) -> ExecutionCommand:
    return ExecutionCommand(cid, symbol, "BUY", quantity, price, price - 10.0, price + 15.0, "m")


def short_command(cid: str = "S1", *, symbol: str = "ES", price: float = 100.0, quantity: int = 3) -> ExecutionCommand:
    return ExecutionCommand(cid, symbol, "SELL", quantity, price, price + 10.0, price - 15.0, "m")


def test_an_opened_position_is_active_until_closed() -> None:
    book = PositionBook()

    position = book.open(long_command(), T0)

    assert book.active_count() == 1
    assert position.entry_price == 100.0
    assert position.opened_at == T0
    assert book.mark("ES", 101.0, bars(1)) == []
    assert book.active_count() == 1
    assert book.realised_pnl == 0.0


def test_long_closes_at_take_profit_when_price_reaches_it() -> None:
    book = PositionBook()
    book.open(long_command(), T0)

    closed = book.mark("ES", 115.0, bars(2))

    assert [(c.reason, c.exit_price, c.pnl) for c in closed] == [(ExitReason.TAKE_PROFIT, 115.0, 30.0)]
    assert closed[0].closed_at == bars(2)
    assert book.active_count() == 0
    assert book.realised_pnl == 30.0


def test_long_closes_at_its_stop_level_when_price_gaps_through_it() -> None:
    book = PositionBook()
    book.open(long_command(), T0)

    closed = book.mark("ES", 80.0, bars(1))

    assert [(c.reason, c.exit_price, c.pnl) for c in closed] == [(ExitReason.STOP_LOSS, 90.0, -20.0)]
    assert book.realised_pnl == -20.0


def test_short_stops_above_and_takes_profit_below() -> None:
    book = PositionBook()
    book.open(short_command("S1"), T0)
    book.open(short_command("S2", symbol="NQ", price=200.0), T0)

    stopped = book.mark("ES", 110.0, bars(1))
    assert [(c.position.correlation_id, c.reason, c.pnl) for c in stopped] == [("S1", ExitReason.STOP_LOSS, -30.0)]

    taken = book.mark("NQ", 180.0, bars(2))
    assert [(c.position.correlation_id, c.reason, c.exit_price, c.pnl) for c in taken] == [
        ("S2", ExitReason.TAKE_PROFIT, 185.0, 45.0)
    ]
    assert book.realised_pnl == 15.0
    assert book.active_count() == 0


def test_prices_between_the_levels_leave_positions_open() -> None:
    book = PositionBook()
    book.open(long_command("L1"), T0)
    book.open(short_command("S1"), T0)

    for n, price in enumerate([91.0, 109.0, 100.5, 90.01], start=1):
        assert book.mark("ES", price, bars(n)) == []
    assert book.active_count() == 2


def test_a_price_of_another_symbol_does_not_touch_levels() -> None:
    book = PositionBook()
    book.open(long_command(symbol="ES"), T0)

    assert book.mark("NQ", 50.0, bars(1)) == []
    assert book.active_count() == 1


def test_position_closes_after_max_holding_at_the_latest_price() -> None:
    book = PositionBook()
    book.open(long_command(), T0)
    book.mark("ES", 104.0, bars(11))
    assert book.active_count() == 1

    closed = book.mark("ES", 106.0, bars(12))

    assert timedelta(minutes=60) == DEFAULT_MAX_HOLDING
    assert [(c.reason, c.exit_price, c.pnl) for c in closed] == [(ExitReason.MAX_HOLDING, 106.0, 12.0)]


def test_time_exit_is_triggered_by_any_symbol_and_uses_the_positions_own_price() -> None:
    book = PositionBook(max_holding=timedelta(minutes=30))
    book.open(long_command(symbol="ES"), T0)
    book.mark("ES", 103.0, bars(2))

    closed = book.mark("NQ", 9000.0, bars(6))

    assert [(c.position.symbol, c.reason, c.exit_price) for c in closed] == [("ES", ExitReason.MAX_HOLDING, 103.0)]


def test_time_exit_without_any_later_price_is_at_entry() -> None:
    book = PositionBook(max_holding=timedelta(minutes=10))
    book.open(short_command(symbol="ES"), T0)

    closed = book.mark("NQ", 1.0, bars(2))

    assert [(c.reason, c.exit_price, c.pnl) for c in closed] == [(ExitReason.MAX_HOLDING, 100.0, 0.0)]


def test_a_symbol_whose_positions_all_closed_starts_again_with_no_price_or_time() -> None:
    book = PositionBook(max_holding=timedelta(minutes=10))
    book.open(long_command("L1", symbol="ES"), bars(20))
    book.mark("ES", 120.0, bars(21))  # takes profit: ES has nothing open, and its book goes
    assert book.active_count() == 0

    # The next book is NQ's (the book keeps one spare to reuse): it knows neither ES's price nor ES's time.
    book.open(short_command("S1", symbol="NQ"), bars(0))
    book.mark("NQ", 98.0, bars(1))  # at bar 1, long before ES's bar 21: NQ's own latest price, not a late bar
    closed = book.mark("YM", 1.0, bars(2))

    assert [(c.position.symbol, c.reason, c.exit_price, c.pnl) for c in closed] == [
        ("NQ", ExitReason.MAX_HOLDING, 98.0, 6.0)
    ]


def test_a_level_crossed_at_expiry_exits_at_the_level() -> None:
    book = PositionBook()
    book.open(long_command(), T0)

    closed = book.mark("ES", 120.0, bars(12))

    assert [(c.reason, c.exit_price) for c in closed] == [(ExitReason.TAKE_PROFIT, 115.0)]
    assert book.active_count() == 0


def test_a_mark_older_than_the_position_is_ignored_for_it() -> None:
    book = PositionBook()
    book.open(long_command(), bars(5))

    assert book.mark("ES", 50.0, bars(4)) == []
    assert book.active_count() == 1


def test_opening_the_same_command_twice_opens_one_position() -> None:
    book = PositionBook()
    first = book.open(long_command("L1"), T0)

    again = book.open(long_command("L1"), bars(1))

    assert again == first
    assert book.active_count() == 1


def test_many_positions_close_in_one_mark_and_counts_stay_consistent() -> None:
    book = PositionBook()
    for i in range(50):
        book.open(long_command(f"L{i}", price=100.0 + i), T0)  # stops at 90..139

    closed = book.mark("ES", 100.0, bars(1))  # stops at >= 100: entries 110..149

    assert {c.position.correlation_id for c in closed} == {f"L{i}" for i in range(10, 50)}
    assert all(c.reason is ExitReason.STOP_LOSS for c in closed)
    assert book.active_count() == 10
    assert book.closed_count == 40
    assert {p.correlation_id for p in book.open_positions("ES")} == {f"L{i}" for i in range(10)}


def test_a_full_book_closes_its_oldest_position_to_make_room() -> None:
    book = PositionBook(max_open=2)
    book.open(long_command("L1"), T0)
    book.open(long_command("L2"), bars(1))
    book.mark("ES", 105.0, bars(1))

    book.open(long_command("L3"), bars(2))

    assert book.active_count() == 2
    assert [p.correlation_id for p in book.open_positions()] == ["L2", "L3"]
    last = book.recent_closes[-1]
    assert (last.position.correlation_id, last.reason, last.exit_price) == ("L1", ExitReason.CAPACITY, 105.0)


def test_commands_the_book_cannot_hold_are_refused() -> None:
    book = PositionBook()
    bad_side = ExecutionCommand("X", "ES", "HOLD", 1, 100.0, 90.0, 110.0, "m")
    no_quantity = ExecutionCommand("Y", "ES", "BUY", 0, 100.0, 90.0, 110.0, "m")
    with pytest.raises(PositionBookError, match="side 'HOLD'"):
        book.open(bad_side, T0)
    with pytest.raises(PositionBookError, match="quantity 0"):
        book.open(no_quantity, T0)
    assert book.active_count() == 0


@pytest.mark.parametrize(
    "command",
    [
        ExecutionCommand("L2", "ES", "BUY", 1, math.nan, 90.0, 115.0, "m"),
        ExecutionCommand("L2", "ES", "BUY", 1, 100.0, math.nan, 115.0, "m"),
        ExecutionCommand("L2", "ES", "BUY", 1, 100.0, 90.0, math.nan, "m"),
    ],
    ids=["price", "stop_loss", "take_profit"],
)
def test_a_command_with_a_nan_price_or_level_is_refused(command: ExecutionCommand) -> None:
    book = PositionBook()
    book.open(long_command("L1"), T0)
    with pytest.raises(PositionBookError, match="NaN is no price"):
        book.open(command, T0)

    assert [p.correlation_id for p in book.open_positions()] == ["L1"]
    # The levels stay sorted: L1 still stops and takes profit where it should.
    assert [(c.reason, c.exit_price) for c in book.mark("ES", 116.0, bars(1))] == [(ExitReason.TAKE_PROFIT, 115.0)]


def test_a_nan_mark_is_refused_and_changes_nothing() -> None:
    book = PositionBook()
    book.open(long_command("L1"), T0)
    with pytest.raises(PositionBookError, match="is NaN"):
        book.mark("ES", math.nan, bars(1))

    assert book.active_count() == 1
    assert [(c.reason, c.exit_price) for c in book.mark("NQ", 1.0, bars(12))] == [(ExitReason.MAX_HOLDING, 100.0)]


def test_event_timestamps_are_accepted_as_text() -> None:
    book = PositionBook()
    book.open(long_command(), "2024-03-01T14:30:00Z")

    closed = book.mark("ES", 101.0, "2024-03-01T15:30:00")  # no offset means UTC

    assert [c.reason for c in closed] == [ExitReason.MAX_HOLDING]


def test_bar_time_normalises_to_utc() -> None:
    assert bar_time("2024-03-01T14:30:00Z") == T0
    assert bar_time("2024-03-01T14:30:00") == T0
    assert bar_time(datetime(2024, 3, 1, 15, 30, tzinfo=timezone(timedelta(hours=1)))) == T0
    assert bar_time(T0).tzinfo is UTC


def test_invalid_book_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_holding"):
        PositionBook(max_holding=timedelta(0))
    with pytest.raises(ValueError, match="max_open"):
        PositionBook(max_open=0)


def replay_marks(book: PositionBook, start: datetime, bars_count: int, price: float = 50.0) -> list[ClosedPosition]:
    """Marks of ES from `start`, one a bar, as a replay of older bars sends them; the positions they closed."""
    closed: list[ClosedPosition] = []
    for n in range(bars_count):
        closed += book.mark("ES", price, start + n * timedelta(minutes=5))
    return closed


def test_a_rewound_timeline_closes_the_positions_opened_after_it_at_their_last_price() -> None:
    # A replay of older bars (or a feed restarted from an earlier time) for ES: its marks are older than the ES
    # positions still open, which no mark of the new timeline would ever close or expire.
    book = PositionBook()
    book.open(long_command("early", price=100.0), T0)
    book.open(long_command("late", price=104.0), bars(11))
    book.open(short_command("other", price=100.0, symbol="NQ"), bars(11))
    book.mark("ES", 106.0, bars(12))  # "early" expires at bars(12): only "late" is left on ES
    assert {p.correlation_id for p in book.open_positions("ES")} == {"late"}

    replay = bars(-100)
    assert replay_marks(book, replay, 12) == [], "old marks, but the replay has not yet run a holding period"
    closed = book.mark("ES", 50.0, replay + DEFAULT_MAX_HOLDING)

    assert [(c.position.correlation_id, c.reason, c.exit_price, c.pnl, c.closed_at) for c in closed] == [
        ("late", ExitReason.REWOUND, 106.0, 4.0, bars(12))
    ], "at the last price it saw, as of when it saw it"
    assert [p.correlation_id for p in book.open_positions()] == ["other"], "another symbol's clock is its own"
    assert book.realised_pnl == pytest.approx(2 * 6.0 + 4.0)


def test_a_late_bar_among_current_ones_closes_nothing() -> None:
    # A dead letter put back, an entry reclaimed late: old, but the live timeline goes on around it.
    book = PositionBook()
    book.open(long_command("live", price=100.0), bars(100))
    for n in range(30):
        assert book.mark("ES", 50.0, bars(n)) == []  # a burst of late bars, each older by far than "live"
        assert book.mark("ES", 101.0, bars(100 + n // 10)) == []  # live marks in between
    assert [p.correlation_id for p in book.open_positions()] == ["live"]


def test_the_new_timeline_keeps_its_own_positions_and_closes_them_as_usual() -> None:
    book = PositionBook()
    book.open(long_command("old", price=100.0), bars(100))
    replay = bars(0)
    book.mark("ES", 100.0, replay)
    book.open(long_command("new", price=100.0), replay)  # opened by the replay, before the rewind is known
    book.open(long_command("same-time", price=100.0), replay + DEFAULT_MAX_HOLDING)

    closed = book.mark("ES", 101.0, replay + DEFAULT_MAX_HOLDING)

    assert [(c.position.correlation_id, c.reason) for c in closed] == [
        ("old", ExitReason.REWOUND), ("new", ExitReason.MAX_HOLDING)
    ], "a position opened at the rewind's time belongs to the new timeline"
    assert [p.correlation_id for p in book.open_positions()] == ["same-time"]
    closed = book.mark("ES", 115.0, replay + DEFAULT_MAX_HOLDING + timedelta(minutes=5))
    assert [(c.position.correlation_id, c.reason, c.exit_price) for c in closed] == [
        ("same-time", ExitReason.TAKE_PROFIT, 115.0)
    ]
    assert book.active_count() == 0


def test_a_rewind_closes_positions_that_no_mark_has_reached_at_their_entry() -> None:
    # Before the rewind rule they stayed open for good (active, never expiring), and every later mark crossing
    # their levels walked them all: ~0.6 ms a mark with a full book.
    book = PositionBook()
    for i in range(500):
        book.open(long_command(f"L{i}", price=100.0), bars(100))

    closed = replay_marks(book, bars(0), 13, price=80.0)  # crosses every stop, 100 bars earlier

    assert len(closed) == 500
    assert {(c.reason, c.exit_price, c.pnl, c.closed_at) for c in closed} == {
        (ExitReason.REWOUND, 100.0, 0.0, bars(100))
    }
    assert book.active_count() == 0
