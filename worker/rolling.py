"""What the worker did over the last N seconds: counts, rates, mean confidence and latency percentiles.

Memory is bounded: one slot per second of the window, each holding counters and a log-bucket latency
sketch (DDSketch-style, relative accuracy 1 %: a reported percentile is within 1 % of the exact
nearest-rank value, i.e. ±10 µs at 1 ms). At most ~1,100 buckets per slot cover 1 µs .. 1 h.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from worker.records import EventOutcome

NAN = float("nan")


class LatencySketch:
    """Counts of latencies in logarithmic buckets: bucket i holds (γ^(i-1), γ^i], γ = (1+α)/(1-α)."""

    MIN_S = 1e-6
    MAX_S = 3600.0

    __slots__ = ("_log_gamma", "buckets", "count", "gamma", "relative_accuracy")

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy}")
        self.relative_accuracy = relative_accuracy
        self.gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self._log_gamma = math.log(self.gamma)
        self.buckets: Counter[int] = Counter()
        self.count = 0

    def index(self, seconds: float) -> int:
        # `not >` also catches NaN: a broken measurement lands in the lowest bucket instead of raising.
        if not seconds > self.MIN_S:
            seconds = self.MIN_S
        elif seconds > self.MAX_S:
            seconds = self.MAX_S
        return math.ceil(math.log(seconds) / self._log_gamma)

    def value(self, index: int) -> float:
        """The bucket's representative: within `relative_accuracy` of every value in it."""
        return 2.0 * self.gamma**index / (self.gamma + 1.0)

    def add(self, seconds: float) -> None:
        self.buckets[self.index(seconds)] += 1
        self.count += 1

    def merge(self, other: LatencySketch) -> None:
        self.buckets.update(other.buckets)
        self.count += other.count

    def clear(self) -> None:
        self.buckets.clear()
        self.count = 0

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile (q in [0, 1]); NaN when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.count == 0:
            return NAN
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return self.value(index)
        return self.value(max(self.buckets))


@dataclass(slots=True)
class _Slot:
    second: int = -1
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    failed: int = 0  # attempts that failed without an outcome (a batch that failed, a read Redis refused)
    confidence_sum: float = 0.0
    confidence_count: int = 0
    latencies: LatencySketch = field(default_factory=LatencySketch)

    def reset(self, second: int) -> None:
        self.second = second
        self.outcomes.clear()
        self.errors.clear()
        self.failed = 0
        self.confidence_sum = 0.0
        self.confidence_count = 0
        self.latencies.clear()


@dataclass(frozen=True, slots=True)
class WindowStats:
    """One consistent reading of the window. NaN means "nothing to measure yet", never a made-up 0."""

    window_s: float
    events: int
    outcomes: Mapping[str, int]
    errors: Mapping[str, int]
    error_rate: float
    error_rates: Mapping[str, float]
    execution_rate: float
    mean_confidence: float
    throughput_per_s: float
    latency_count: int
    latency_p50_s: float
    latency_p99_s: float


def error_rate(errors: int, attempts: int) -> float:
    """Failed fraction of the attempts (events handled, and attempts that failed without an outcome), capped at 1.

    Failures with no attempt counted (a caller that records only errors) read 1.0; a quiet window reads 0.0.
    """
    if attempts > 0:
        return min(1.0, errors / attempts)
    return 1.0 if errors > 0 else 0.0


class RollingWindow:
    """Counts and latency percentiles over the last `window_s` seconds, to one-second granularity.

    Writers (the worker loop) and readers (health checks) may be different threads: a lock guards the slots.
    """

    def __init__(
        self,
        window_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        relative_accuracy: float = 0.01,
    ) -> None:
        if window_s < 1.0:
            raise ValueError(f"window_s must be at least 1 second, got {window_s}")
        self.window_s = float(window_s)
        self._clock = clock
        self._started = clock()
        self._size = math.ceil(window_s)
        self._relative_accuracy = relative_accuracy
        self._slots = [_Slot(latencies=LatencySketch(relative_accuracy)) for _ in range(self._size)]
        self._lock = threading.Lock()

    def _slot(self, now: float) -> _Slot:
        second = math.floor(now)
        slot = self._slots[second % self._size]
        if slot.second != second:
            slot.reset(second)
        return slot

    def _live_slots(self, now: float) -> list[_Slot]:
        newest = math.floor(now)
        oldest = newest - self._size + 1
        return [slot for slot in self._slots if oldest <= slot.second <= newest]

    def record_events(
        self,
        outcomes: Iterable[str],
        latencies_s: Iterable[float] = (),
        confidences: Iterable[float] = (),
    ) -> None:
        """One batch: an outcome per event handled, a latency per decided event, a confidence per decision.

        The three need not be the same length: duplicates and dead letters have an outcome but no decision.
        """
        with self._lock:
            slot = self._slot(self._clock())
            slot.outcomes.update(outcomes)
            for seconds in latencies_s:
                slot.latencies.add(seconds)
            for confidence in confidences:
                if math.isfinite(confidence):
                    slot.confidence_sum += confidence
                    slot.confidence_count += 1

    def record_event(self, outcome: str, latency_s: float | None = None, confidence: float | None = None) -> None:
        self.record_events(
            (outcome,),
            () if latency_s is None else (latency_s,),
            () if confidence is None else (confidence,),
        )

    def record_error(self, operation: str, count: int = 1, *, handled: bool = False) -> None:
        """`count` failures of `operation`. `handled`: the failed events also have an outcome (dead letters);
        otherwise each failure is an attempt more, which the error rate divides by as well: a batch of 100 events that
        failed once and then succeeded is 100 errors in 200 attempts, not 100 in 100."""
        with self._lock:
            slot = self._slot(self._clock())
            slot.errors[operation] += count
            if not handled:
                slot.failed += count

    def _merged(self, now: float) -> tuple[Counter[str], Counter[str], float, int, LatencySketch, int]:
        outcomes: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        failed = 0
        confidence_sum = 0.0
        confidence_count = 0
        latencies = LatencySketch(self._relative_accuracy)
        with self._lock:
            for slot in self._live_slots(now):
                outcomes.update(slot.outcomes)
                errors.update(slot.errors)
                failed += slot.failed
                confidence_sum += slot.confidence_sum
                confidence_count += slot.confidence_count
                latencies.merge(slot.latencies)
        return outcomes, errors, confidence_sum, confidence_count, latencies, failed

    def _covered_s(self, now: float) -> float:
        # Full past seconds plus the part of the current one, but never more than the worker has been up.
        in_window = (self._size - 1) + (now - math.floor(now))
        return max(1.0, min(now - self._started, in_window))

    def latency_quantile(self, q: float) -> float:
        return self._merged(self._clock())[4].quantile(q)

    def snapshot(self) -> WindowStats:
        now = self._clock()
        outcomes, errors, confidence_sum, confidence_count, latencies, failed = self._merged(now)
        events = sum(outcomes.values())
        attempts = events + failed  # every event handled, and every attempt that failed without an outcome
        decisions = outcomes[EventOutcome.EXECUTED] + outcomes[EventOutcome.HOLD]
        return WindowStats(
            window_s=self.window_s,
            events=events,
            outcomes=dict(outcomes),
            errors=dict(errors),
            error_rate=error_rate(sum(errors.values()), attempts),
            error_rates={operation: error_rate(count, attempts) for operation, count in errors.items()},
            execution_rate=outcomes[EventOutcome.EXECUTED] / decisions if decisions else NAN,
            mean_confidence=confidence_sum / confidence_count if confidence_count else NAN,
            throughput_per_s=events / self._covered_s(now),
            latency_count=latencies.count,
            latency_p50_s=latencies.quantile(0.50),
            latency_p99_s=latencies.quantile(0.99),
        )


__all__ = ["LatencySketch", "RollingWindow", "WindowStats", "error_rate"]
