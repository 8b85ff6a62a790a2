"""The position book: executed commands open positions, later prices of the same symbol close them.

The worker sees no market data besides its events, so a position is marked only by the prices of later events
(`mark(symbol, price, timestamp)`, time = the event's bar close, never the wall clock). A position closes:
- at its stop-loss or take-profit level when a mark touches or crosses it (a long stops at price <= stop-loss and
  takes profit at price >= take-profit; a short the reverse). It exits *at the level*: the bracket orders rest at
  the venue and would have filled there between two sparse marks; slippage is not modelled.
- at the latest known price of its symbol once it has been held `max_holding` (default 12 bars = 60 min). Level
  crossings are checked first, so a mark that both crosses a level and ends the holding time closes at the level.
- at the latest known price when the book is full (`max_open`), oldest first, so memory stays bounded.
- at the latest known price when its symbol's time is rewound (`Timeline`: a replay of older bars, a restarted
  feed; not a late bar among current ones): the symbol's positions opened after the new time close. No mark of the
  new timeline would reach them; held open, they would count as active for good and be walked by every mark
  crossing their levels.
Profit and loss is in price points × quantity (no contract multiplier): long (exit − entry)·q, short (entry − exit)·q.
A mark older than a position's opening says nothing about it and is ignored for that position.
"""

from __future__ import annotations

import bisect
from collections import deque
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from worker.records import ExecutionCommand, per_event_record
from worker.timeline import Timeline

BAR = timedelta(minutes=5)
DEFAULT_MAX_HOLDING = 12 * BAR
DEFAULT_MAX_OPEN = 10_000


def bar_time(timestamp: datetime | str) -> datetime:
    """An event's bar-close time as an aware UTC datetime; ISO-8601 text without an offset is UTC."""
    moment = datetime.fromisoformat(timestamp) if isinstance(timestamp, str) else timestamp
    if moment.tzinfo is UTC:
        return moment  # already what the books hold: the telemetry parses each event's time once and passes it on
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class ExitReason(StrEnum):
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    MAX_HOLDING = "max_holding"
    CAPACITY = "capacity"
    REWOUND = "rewound"


@per_event_record
class Position:
    correlation_id: str
    symbol: str
    side: str  # "BUY" (long) or "SELL" (short)
    quantity: int
    entry_price: float
    stop_loss: float
    take_profit: float
    opened_at: datetime

    @property
    def is_long(self) -> bool:
        return self.side == "BUY"

    def pnl_at(self, price: float) -> float:
        move = price - self.entry_price
        return (move if self.is_long else -move) * self.quantity


@per_event_record
class ClosedPosition:
    position: Position
    exit_price: float
    closed_at: datetime
    reason: ExitReason
    pnl: float


class PositionBookError(ValueError):
    """A command the book cannot hold (unknown side, non-positive quantity)."""


class _Levels:
    """Levels sorted ascending, each tagged with a position's sequence number; removal by (level, seq)."""

    def __init__(self) -> None:
        self._entries: list[tuple[float, int]] = []

    def add(self, level: float, seq: int) -> None:
        bisect.insort(self._entries, (level, seq))

    def remove(self, level: float, seq: int) -> None:
        index = bisect.bisect_left(self._entries, (level, seq))
        del self._entries[index]

    # Every event of the symbol asks all four of its level lists, and most marks trigger none: the lowest (highest)
    # level answers that before any search or list is built.
    def any_at_or_below(self, price: float) -> bool:
        return bool(self._entries) and self._entries[0][0] <= price

    def any_at_or_above(self, price: float) -> bool:
        return bool(self._entries) and self._entries[-1][0] >= price

    def at_or_below(self, price: float) -> list[int]:
        if not self.any_at_or_below(price):
            return []
        end = bisect.bisect_right(self._entries, (price, float("inf")))
        return [seq for _, seq in self._entries[:end]]

    def at_or_above(self, price: float) -> list[int]:
        if not self.any_at_or_above(price):
            return []
        start = bisect.bisect_left(self._entries, (price, -1))
        return [seq for _, seq in self._entries[start:]]


class _SymbolBook:
    def __init__(self, max_holding: timedelta) -> None:
        self.long_stops = _Levels()
        self.long_targets = _Levels()
        self.short_stops = _Levels()
        self.short_targets = _Levels()
        # The latest price and when (what positions exit at on time or capacity); the timeline also knows of bars
        # without a price (positions opened) and of late marks.
        self.last_price: float | None = None
        self.last_marked_at: datetime | None = None
        self.timeline = Timeline(max_holding)
        self.seqs: set[int] = set()  # its open positions

    def touched_by(self, price: float) -> bool:
        """Whether `price` reaches a level of any of its positions (most marks reach none)."""
        return (
            self.long_stops.any_at_or_above(price)
            or self.long_targets.any_at_or_below(price)
            or self.short_stops.any_at_or_below(price)
            or self.short_targets.any_at_or_above(price)
        )

    def restart(self) -> None:
        """Forget the symbol's prices and time, as a new book would (its level lists are empty with no positions)."""
        self.last_price = self.last_marked_at = None
        self.timeline.restart()


class PositionBook:
    """Open positions per symbol, closed by later prices; `active_count()` feeds `tactical_active_positions`."""

    def __init__(
        self, *, max_holding: timedelta = DEFAULT_MAX_HOLDING, max_open: int = DEFAULT_MAX_OPEN, history: int = 1000
    ) -> None:
        if max_holding <= timedelta(0):
            raise ValueError(f"max_holding {max_holding} must be positive")
        if max_open < 1:
            raise ValueError(f"max_open {max_open} must be >= 1")
        self.max_holding = max_holding
        self.max_open = max_open
        self._positions: dict[int, Position] = {}
        self._seq_by_id: dict[str, int] = {}
        self._symbols: dict[str, _SymbolBook] = {}
        self._expiries: list[tuple[datetime, int]] = []
        # A symbol's book goes when its last position closes (memory stays bounded however many symbols come and go);
        # one is kept for the next symbol to open a position, since a live symbol's book comes and goes all day.
        self._spare_book: _SymbolBook | None = None
        self._next_seq = 0
        self._realised_pnl = 0.0
        self._closed_count = 0
        self.recent_closes: deque[ClosedPosition] = deque(maxlen=history)

    @property
    def realised_pnl(self) -> float:
        return self._realised_pnl

    @property
    def closed_count(self) -> int:
        return self._closed_count

    def active_count(self) -> int:
        return len(self._positions)

    def open_positions(self, symbol: str | None = None) -> list[Position]:
        """Open positions, oldest opened first."""
        return [p for p in self._positions.values() if symbol is None or p.symbol == symbol]

    def open(self, command: ExecutionCommand, timestamp: datetime | str) -> Position:
        """Open the position an executed command creates; the same correlation id twice opens it once."""
        if command.correlation_id in self._seq_by_id:
            return self._positions[self._seq_by_id[command.correlation_id]]
        if command.side not in ("BUY", "SELL"):
            raise PositionBookError(f"command {command.correlation_id!r} has side {command.side!r}, not BUY/SELL")
        if command.quantity <= 0:
            raise PositionBookError(f"command {command.correlation_id!r} has quantity {command.quantity} <= 0")
        # A NaN compares false with everything: a level of NaN would break the sorted level lists, a price of NaN the
        # profit and loss. (The worker validates prices, and its levels follow from them: none can be NaN there.)
        if command.price != command.price or command.stop_loss != command.stop_loss or (
                command.take_profit != command.take_profit):
            raise PositionBookError(
                f"command {command.correlation_id!r} has price {command.price!r}, stop-loss {command.stop_loss!r}, "
                f"take-profit {command.take_profit!r}: NaN is no price")
        opened_at = bar_time(timestamp)
        while len(self._positions) >= self.max_open:
            oldest = next(iter(self._positions))
            self._close(oldest, self._last_price(self._positions[oldest]), opened_at, ExitReason.CAPACITY)

        position = Position(
            correlation_id=command.correlation_id,
            symbol=command.symbol,
            side=command.side,
            quantity=command.quantity,
            entry_price=command.price,
            stop_loss=command.stop_loss,
            take_profit=command.take_profit,
            opened_at=opened_at,
        )
        seq = self._next_seq
        self._next_seq += 1
        self._positions[seq] = position
        self._seq_by_id[position.correlation_id] = seq
        book = self._symbols.get(position.symbol)
        if book is None:
            book = self._symbols[position.symbol] = self._new_symbol_book()
        book.seqs.add(seq)
        book.timeline.saw(opened_at)
        if position.is_long:
            book.long_stops.add(position.stop_loss, seq)
            book.long_targets.add(position.take_profit, seq)
        else:
            book.short_stops.add(position.stop_loss, seq)
            book.short_targets.add(position.take_profit, seq)
        bisect.insort(self._expiries, (opened_at + self.max_holding, seq))
        return position

    def mark(self, symbol: str, price: float, timestamp: datetime | str) -> list[ClosedPosition]:
        """A price of `symbol` at bar close `timestamp`: close what it triggers; returns the positions closed."""
        if price != price:
            raise PositionBookError(f"a price of {symbol!r} is NaN: it reaches no level and is no last price")
        now = bar_time(timestamp)
        closed: list[ClosedPosition] = []
        book = self._symbols.get(symbol)
        if book is not None and book.timeline.rewound_by(now):
            closed.extend(self._rewind(book, now))
            book = self._symbols.get(symbol)  # gone if the rewind closed its last position
        if book is not None:
            if not book.timeline.behind and (book.last_marked_at is None or now >= book.last_marked_at):
                book.last_price, book.last_marked_at = price, now
            if book.touched_by(price):
                closed.extend(self._close_crossed(book, price, now))
        expiries = self._expiries
        if expiries and expiries[0][0] <= now:  # the earliest expiry is due: some are
            closed.extend(self._expire(now))
        return closed

    def _close_crossed(self, book: _SymbolBook, price: float, now: datetime) -> list[ClosedPosition]:
        closed = []
        triggered = (
            (book.long_stops.at_or_above(price), ExitReason.STOP_LOSS),
            (book.long_targets.at_or_below(price), ExitReason.TAKE_PROFIT),
            (book.short_stops.at_or_below(price), ExitReason.STOP_LOSS),
            (book.short_targets.at_or_above(price), ExitReason.TAKE_PROFIT),
        )
        for seqs, reason in triggered:
            for seq in seqs:
                position = self._positions.get(seq)
                if position is None or position.opened_at > now:
                    continue
                level = position.stop_loss if reason is ExitReason.STOP_LOSS else position.take_profit
                closed.append(self._close(seq, level, now, reason))
        return closed

    def _rewind(self, book: _SymbolBook, now: datetime) -> list[ClosedPosition]:
        """The symbol's time went back to `now` for good: close its positions opened after it at the last price they
        saw, as of when they saw it; the new timeline's marks set the last price again."""
        closed = []
        for seq in sorted(seq for seq in book.seqs if self._positions[seq].opened_at > now):
            position = self._positions[seq]
            seen_at = max(position.opened_at, book.last_marked_at or position.opened_at)
            closed.append(self._close(seq, self._last_price(position), seen_at, ExitReason.REWOUND))
        book.last_price = book.last_marked_at = None
        return closed

    def _expire(self, now: datetime) -> list[ClosedPosition]:
        """Close the positions held `max_holding` by `now` (the caller saw that the earliest is due)."""
        end = bisect.bisect_right(self._expiries, (now, float("inf")))
        due = [seq for _, seq in self._expiries[:end]]
        return [self._close(seq, self._last_price(self._positions[seq]), now, ExitReason.MAX_HOLDING) for seq in due]

    def _new_symbol_book(self) -> _SymbolBook:
        book, self._spare_book = self._spare_book, None
        if book is None:
            return _SymbolBook(self.max_holding)
        book.restart()
        return book

    def _last_price(self, position: Position) -> float:
        book = self._symbols[position.symbol]
        return position.entry_price if book.last_price is None else book.last_price

    def _close(self, seq: int, exit_price: float, closed_at: datetime, reason: ExitReason) -> ClosedPosition:
        position = self._positions.pop(seq)
        del self._seq_by_id[position.correlation_id]
        book = self._symbols[position.symbol]
        if position.is_long:
            book.long_stops.remove(position.stop_loss, seq)
            book.long_targets.remove(position.take_profit, seq)
        else:
            book.short_stops.remove(position.stop_loss, seq)
            book.short_targets.remove(position.take_profit, seq)
        expiry = (position.opened_at + self.max_holding, seq)
        del self._expiries[bisect.bisect_left(self._expiries, expiry)]
        book.seqs.discard(seq)
        if not book.seqs:
            del self._symbols[position.symbol]
            self._spare_book = book
        pnl = position.pnl_at(exit_price)
        self._realised_pnl += pnl
        self._closed_count += 1
        result = ClosedPosition(position, exit_price, closed_at, reason, pnl)
        self.recent_closes.append(result)
        return result
