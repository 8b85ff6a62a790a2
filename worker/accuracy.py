"""How `tactical_agent_accuracy` is obtained: each agent's call checked against what the price did next.

The worker sees no market data besides its events, so the truth comes from the prices of later events:
1. `record(event, votes)`: every agent's call for the event (its argmax action: short, hold or long) is kept with
   the event's symbol, price, ATR and bar-close time, pending until `time + horizon` (default 6 bars = 30 min).
2. `observe(symbol, price, timestamp)` (the worker calls it with every event's own symbol, price and bar close):
   every pending call of that symbol whose horizon has passed (`timestamp >= time + horizon`) is resolved with
   this price — the first price observed at or after its horizon.
3. The realised move is `price - call price`. Inside the dead band (`|move| <= dead_band_atr × ATR`, default
   0.5 ATR) the right call was hold; beyond it, the action whose sign matches the move. A call is correct iff it
   equals that action.
4. Accuracy of an agent = correct / resolved over its last `window` resolved calls (default 500), or None
   until one has resolved.
Memory is bounded: at most `max_pending_per_symbol` unresolved calls per symbol (the oldest are dropped) and
`max_pending` in all (the calls of the symbol recorded least recently are dropped: a symbol whose events stopped —
a rolled contract, a delisted one — would otherwise keep its last calls for good); a symbol without pending calls
holds nothing, and each agent keeps `window` outcomes. When a symbol's time is rewound (`Timeline`, with the
position book's holding limit as tolerance: a replay of older bars, not a late bar among current ones), its calls
made after the new time are dropped: no later price of the new timeline can resolve them, and a much later one of
it would be the wrong truth. Dropped calls are counted in `dropped`.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta

from worker.actions import AGENT_NAMES, Action
from worker.positions import BAR, DEFAULT_MAX_HOLDING, bar_time
from worker.records import AgentVote, SynergyEvent, per_event_record
from worker.timeline import Timeline

DEFAULT_HORIZON = 6 * BAR
DEFAULT_DEAD_BAND_ATR = 0.5
DEFAULT_WINDOW = 500
DEFAULT_MAX_PENDING_PER_SYMBOL = 1000
DEFAULT_MAX_PENDING = 100_000
DEFAULT_REWIND_TOLERANCE = DEFAULT_MAX_HOLDING  # what counts as a rewind for the position book counts here too


@per_event_record
class PendingCall:
    correlation_id: str
    price: float
    dead_band: float
    due: datetime
    actions: tuple[tuple[str, Action], ...]  # (agent, its call)


def realised_action(entry_price: float, later_price: float, dead_band: float) -> Action:
    """The call that was right: hold inside the dead band, else the direction of the move."""
    move = later_price - entry_price
    if abs(move) <= dead_band:
        return Action.HOLD
    return Action.LONG if move > 0 else Action.SHORT


class _Outcomes:
    """An agent's last `window` outcomes with a running count of the correct ones."""

    def __init__(self, window: int) -> None:
        self._outcomes: deque[bool] = deque(maxlen=window)
        self.correct = 0

    def add(self, correct: bool) -> None:
        if len(self._outcomes) == self._outcomes.maxlen:
            self.correct -= self._outcomes[0]
        self._outcomes.append(correct)
        self.correct += correct

    def extend(self, results: list[bool]) -> None:
        """`add` each of `results`, in order: the count is kept by what enters and what falls out of the window."""
        outcomes = self._outcomes
        assert outcomes.maxlen is not None
        falling_out = max(0, len(outcomes) + len(results) - outcomes.maxlen)  # the first of outcomes, then of results
        from_outcomes = min(falling_out, len(outcomes))
        dropped = sum(itertools.islice(outcomes, from_outcomes)) + sum(results[:falling_out - from_outcomes])
        self.correct += sum(results) - dropped
        outcomes.extend(results)

    def __len__(self) -> int:
        return len(self._outcomes)

    def accuracy(self) -> float | None:
        return self.correct / len(self._outcomes) if self._outcomes else None


class _SymbolCalls:
    """A symbol's unresolved calls, sorted by (due, sequence) — the unique sequence keeps calls from ever being
    compared — and its bar clock."""

    __slots__ = ("calls", "timeline")

    def __init__(self, rewind_tolerance: timedelta) -> None:
        self.calls: list[tuple[datetime, int, PendingCall]] = []
        self.timeline = Timeline(rewind_tolerance)


class AgentAccuracy:
    def __init__(
        self,
        *,
        horizon: timedelta = DEFAULT_HORIZON,
        dead_band_atr: float = DEFAULT_DEAD_BAND_ATR,
        window: int = DEFAULT_WINDOW,
        max_pending_per_symbol: int = DEFAULT_MAX_PENDING_PER_SYMBOL,
        max_pending: int = DEFAULT_MAX_PENDING,
        rewind_tolerance: timedelta = DEFAULT_REWIND_TOLERANCE,
    ) -> None:
        if horizon <= timedelta(0):
            raise ValueError(f"horizon {horizon} must be positive")
        if not dead_band_atr >= 0.0:
            raise ValueError(f"dead_band_atr {dead_band_atr!r} must be >= 0")
        if window < 1:
            raise ValueError(f"window {window} must be >= 1")
        if max_pending_per_symbol < 1:
            raise ValueError(f"max_pending_per_symbol {max_pending_per_symbol} must be >= 1")
        if max_pending < max_pending_per_symbol:
            # The symbol being recorded is the last one evicted: below one symbol's cap, it would drop its own calls.
            raise ValueError(f"max_pending {max_pending} must be >= max_pending_per_symbol {max_pending_per_symbol}")
        if rewind_tolerance < timedelta(0):
            raise ValueError(f"rewind_tolerance {rewind_tolerance} must be >= 0")
        self.horizon = horizon
        self.dead_band_atr = dead_band_atr
        self.max_pending_per_symbol = max_pending_per_symbol
        self.max_pending = max_pending
        self.rewind_tolerance = rewind_tolerance
        self._outcomes = {agent: _Outcomes(window) for agent in AGENT_NAMES}
        # Symbols in the order they last had a call recorded: the first is the one dropped when `max_pending` is
        # exceeded.
        self._pending: dict[str, _SymbolCalls] = {}
        self._pending_total = 0
        self._next_seq = 0
        self.dropped = 0

    def record(
        self, event: SynergyEvent, votes: Sequence[AgentVote], bar_close: datetime | None = None
    ) -> PendingCall:
        """Keep every agent's call on `event` until its horizon has passed. `bar_close`: the event's timestamp,
        when the caller has parsed it already."""
        actions = []  # a loop, not a generator into tuple(): called for every event
        for vote in votes:
            if vote.agent not in self._outcomes:
                unknown = [vote.agent for vote in votes if vote.agent not in self._outcomes]
                raise ValueError(f"votes from unknown agent(s) {unknown}; agents are {AGENT_NAMES}")
            actions.append((vote.agent, vote.action))
        bar_close = bar_close or bar_time(event.timestamp)
        call = PendingCall(
            correlation_id=event.correlation_id,
            price=event.price,
            dead_band=self.dead_band_atr * event.atr,
            due=bar_close + self.horizon,
            actions=tuple(actions),
        )
        symbol_calls = self._pending.pop(event.symbol, None) or _SymbolCalls(self.rewind_tolerance)
        self._pending[event.symbol] = symbol_calls  # now the most recently recorded symbol
        symbol_calls.timeline.saw(bar_close)
        pending = symbol_calls.calls
        bisect.insort(pending, (call.due, self._next_seq, call))
        self._next_seq += 1
        self._pending_total += 1
        if len(pending) > self.max_pending_per_symbol:
            del pending[0]
            self._drop(1)
        while self._pending_total > self.max_pending:
            symbol = next(iter(self._pending))
            self._drop(len(self._pending.pop(symbol).calls))
        return call

    def observe(self, symbol: str, price: float, timestamp: datetime | str) -> int:
        """Resolve `symbol`'s calls whose horizon has passed by `timestamp` with `price`; returns how many."""
        symbol_calls = self._pending.get(symbol)
        if symbol_calls is None:
            return 0
        pending = symbol_calls.calls
        now = bar_time(timestamp)
        if symbol_calls.timeline.rewound_by(now):  # the calls made after `now` belong to the abandoned timeline
            keep = bisect.bisect_right(pending, (now + self.horizon, float("inf")))
            self._drop(len(pending) - keep)
            del pending[keep:]
        if pending and pending[0][0] > now:  # the earliest call is not due yet (the usual case): none is
            return 0
        end = bisect.bisect_right(pending, (now, float("inf")))
        for _, _, call in pending[:end]:
            truth = realised_action(call.price, price, call.dead_band)
            for agent, action in call.actions:
                self._outcomes[agent].add(action is truth)
        del pending[:end]
        self._pending_total -= end
        if not pending:
            del self._pending[symbol]
        return end

    def observe_and_record_batch(
        self, events: Sequence[SynergyEvent], votes: Sequence[Sequence[AgentVote]], bar_closes: Sequence[datetime]
    ) -> None:
        """For each event in order: `observe` its own symbol, price and bar close, then `record` its votes — and the
        tracker is left as that loop leaves it. A batch as a live feed sends them (each symbol's bar closes in order,
        none behind what its calls have seen; one vote per agent in AGENT_NAMES order; no cap reached) is swept per
        symbol instead: the calls the batch itself resolves never become call objects or enter a sorted list. Any
        other batch (a late bar, a rewind, a cap, unknown agents) goes event by event."""
        by_symbol = self._sweepable(events, votes, bar_closes)
        if by_symbol is None:
            for event, event_votes, bar_close in zip(events, votes, bar_closes, strict=True):
                self.observe(event.symbol, event.price, bar_close)
                self.record(event, event_votes, bar_close)
            return
        horizon, dead_band_atr = self.horizon, self.dead_band_atr
        first_seq = self._next_seq
        resolved_by: list[list[tuple[Action, tuple[tuple[str, Action], ...]]]] = [[] for _ in events]
        resolved = 0
        for symbol, indices in by_symbol.items():
            symbol_calls = self._pending.get(symbol)
            if symbol_calls is None:
                symbol_calls = _SymbolCalls(self.rewind_tolerance)
            # The symbol's calls in (due, sequence) order are those pending, then the batch's: a batch call is due
            # no earlier (bar closes do not go back) and has a higher sequence number. Each batch call as (due,
            # sequence, price, dead band, agents' calls, batch index).
            pending = symbol_calls.calls
            new: list[tuple[datetime, int, float, float, tuple[tuple[str, Action], ...], int]] = []
            for index in indices:
                event = events[index]
                fvg, momentum, entry = votes[index]  # in AGENT_NAMES order (`_sweepable`)
                actions: tuple[tuple[str, Action], ...] = (
                    (fvg.agent, fvg.action), (momentum.agent, momentum.action), (entry.agent, entry.action))
                new.append((bar_closes[index] + horizon, first_seq + index, event.price, dead_band_atr * event.atr,
                            actions, index))
            # Event j resolves, at its price, every call due by its bar close and not resolved yet: dues and bar
            # closes both rise, so each event takes the next run of calls. A call recorded at j is due after j's bar.
            old_taken = new_taken = 0
            for index in indices:
                now, price = bar_closes[index], events[index].price
                while old_taken < len(pending) and pending[old_taken][0] <= now:
                    call = pending[old_taken][2]
                    resolved_by[index].append((realised_action(call.price, price, call.dead_band), call.actions))
                    old_taken += 1
                if old_taken < len(pending):
                    continue
                while new_taken < len(new) and new[new_taken][0] <= now:
                    _, _, call_price, dead_band, actions, _ = new[new_taken]
                    resolved_by[index].append((realised_action(call_price, price, dead_band), actions))
                    new_taken += 1
            resolved += old_taken + new_taken
            del pending[:old_taken]
            for due, seq, price, dead_band, actions, index in new[new_taken:]:
                pending.append((due, seq, PendingCall(events[index].correlation_id, price, dead_band, due, actions)))
            # As the loop leaves it: every bar close at or past the newest, so the last is the newest, none is old.
            symbol_calls.timeline.old_since = None
            symbol_calls.timeline.saw(bar_closes[indices[-1]])
            self._pending.pop(symbol, None)  # re-inserted: symbols in order of their last call recorded
            self._pending[symbol] = symbol_calls
        results: dict[str, list[bool]] = {agent: [] for agent in self._outcomes}
        for calls_resolved in resolved_by:
            for truth, actions in calls_resolved:
                for agent, action in actions:
                    results[agent].append(action is truth)
        for agent, agent_results in results.items():
            if agent_results:
                self._outcomes[agent].extend(agent_results)
        self._next_seq += len(events)
        self._pending_total += len(events) - resolved

    def _sweepable(
        self, events: Sequence[SynergyEvent], votes: Sequence[Sequence[AgentVote]], bar_closes: Sequence[datetime]
    ) -> dict[str, list[int]] | None:
        """Each symbol's batch indices, in order of the symbol's last event, when `observe_and_record_batch` can sweep
        the batch; None when it must go event by event."""
        if self._pending_total + len(events) > self.max_pending:
            return None
        by_symbol: dict[str, list[int]] = {}
        fvg, momentum, entry = AGENT_NAMES
        for index, (event, event_votes) in enumerate(zip(events, votes, strict=True)):
            if not (len(event_votes) == 3 and event_votes[0].agent == fvg and event_votes[1].agent == momentum
                    and event_votes[2].agent == entry):
                return None
            indices = by_symbol.pop(event.symbol, None)
            if indices is None:
                indices = []
                symbol_calls = self._pending.get(event.symbol)
                if symbol_calls is not None and (symbol_calls.timeline.newest is None
                                                 or bar_closes[index] < symbol_calls.timeline.newest):
                    return None
            elif bar_closes[index] < bar_closes[indices[-1]]:
                return None
            indices.append(index)
            by_symbol[event.symbol] = indices  # re-inserted: the dict ends in order of each symbol's last event
        for symbol, indices in by_symbol.items():
            symbol_calls = self._pending.get(symbol)
            pending = len(symbol_calls.calls) if symbol_calls is not None else 0
            if pending + len(indices) > self.max_pending_per_symbol:
                return None
        return by_symbol

    def _drop(self, count: int) -> None:
        self._pending_total -= count
        self.dropped += count

    def accuracy(self) -> dict[str, float | None]:
        """Each agent's share of correct calls over its rolling window; None until one has resolved."""
        return {agent: outcomes.accuracy() for agent, outcomes in self._outcomes.items()}

    def resolved_counts(self) -> dict[str, int]:
        """Resolved calls currently in each agent's window."""
        return {agent: len(outcomes) for agent, outcomes in self._outcomes.items()}

    def pending_count(self, symbol: str | None = None) -> int:
        if symbol is not None:
            symbol_calls = self._pending.get(symbol)
            return len(symbol_calls.calls) if symbol_calls is not None else 0
        return self._pending_total
