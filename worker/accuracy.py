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
Memory is bounded: at most `max_pending_per_symbol` unresolved calls per symbol (the oldest are dropped and
counted in `dropped`), a symbol without pending calls holds nothing, and each agent keeps `window` outcomes.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from worker.actions import AGENT_NAMES, Action
from worker.positions import BAR, bar_time
from worker.records import AgentVote, SynergyEvent

DEFAULT_HORIZON = 6 * BAR
DEFAULT_DEAD_BAND_ATR = 0.5
DEFAULT_WINDOW = 500
DEFAULT_MAX_PENDING_PER_SYMBOL = 1000


@dataclass(frozen=True, slots=True)
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

    def __len__(self) -> int:
        return len(self._outcomes)

    def accuracy(self) -> float | None:
        return self.correct / len(self._outcomes) if self._outcomes else None


class AgentAccuracy:
    def __init__(
        self,
        *,
        horizon: timedelta = DEFAULT_HORIZON,
        dead_band_atr: float = DEFAULT_DEAD_BAND_ATR,
        window: int = DEFAULT_WINDOW,
        max_pending_per_symbol: int = DEFAULT_MAX_PENDING_PER_SYMBOL,
    ) -> None:
        if horizon <= timedelta(0):
            raise ValueError(f"horizon {horizon} must be positive")
        if not dead_band_atr >= 0.0:
            raise ValueError(f"dead_band_atr {dead_band_atr!r} must be >= 0")
        if window < 1:
            raise ValueError(f"window {window} must be >= 1")
        if max_pending_per_symbol < 1:
            raise ValueError(f"max_pending_per_symbol {max_pending_per_symbol} must be >= 1")
        self.horizon = horizon
        self.dead_band_atr = dead_band_atr
        self.max_pending_per_symbol = max_pending_per_symbol
        self._outcomes = {agent: _Outcomes(window) for agent in AGENT_NAMES}
        # Per symbol, sorted by (due, sequence); the unique sequence keeps calls from ever being compared.
        self._pending: dict[str, list[tuple[datetime, int, PendingCall]]] = {}
        self._next_seq = 0
        self.dropped = 0

    def record(
        self, event: SynergyEvent, votes: Sequence[AgentVote], bar_close: datetime | None = None
    ) -> PendingCall:
        """Keep every agent's call on `event` until its horizon has passed. `bar_close`: the event's timestamp,
        when the caller has parsed it already."""
        unknown = [vote.agent for vote in votes if vote.agent not in self._outcomes]
        if unknown:
            raise ValueError(f"votes from unknown agent(s) {unknown}; agents are {AGENT_NAMES}")
        call = PendingCall(
            correlation_id=event.correlation_id,
            price=event.price,
            dead_band=self.dead_band_atr * event.atr,
            due=(bar_close or bar_time(event.timestamp)) + self.horizon,
            actions=tuple((vote.agent, vote.action) for vote in votes),
        )
        pending = self._pending.setdefault(event.symbol, [])
        bisect.insort(pending, (call.due, self._next_seq, call))
        self._next_seq += 1
        if len(pending) > self.max_pending_per_symbol:
            del pending[0]
            self.dropped += 1
        return call

    def observe(self, symbol: str, price: float, timestamp: datetime | str) -> int:
        """Resolve `symbol`'s calls whose horizon has passed by `timestamp` with `price`; returns how many."""
        pending = self._pending.get(symbol)
        if not pending:
            return 0
        now = bar_time(timestamp)
        end = bisect.bisect_right(pending, (now, float("inf")))
        for _, _, call in pending[:end]:
            truth = realised_action(call.price, price, call.dead_band)
            for agent, action in call.actions:
                self._outcomes[agent].add(action is truth)
        del pending[:end]
        if not pending:
            del self._pending[symbol]
        return end

    def accuracy(self) -> dict[str, float | None]:
        """Each agent's share of correct calls over its rolling window; None until one has resolved."""
        return {agent: outcomes.accuracy() for agent, outcomes in self._outcomes.items()}

    def resolved_counts(self) -> dict[str, int]:
        """Resolved calls currently in each agent's window."""
        return {agent: len(outcomes) for agent, outcomes in self._outcomes.items()}

    def pending_count(self, symbol: str | None = None) -> int:
        if symbol is not None:
            return len(self._pending.get(symbol, ()))
        return sum(len(calls) for calls in self._pending.values())
