"""Consumer lag as `tacticalctl lag` and `lag watch` judge it: the runbook thresholds on the lag in seconds, the
trend of the samples the watch has taken, and the rates in (entries added) and out (entries delivered to the group:
counted, or Redis's entries-read where nothing says it is stale — see `RateSource`).

`LagMonitor` is pure (samples in, readings out); `sample_lag` is the one Redis read per sample.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from worker.delivery import StreamNames
from worker.health import DEFAULT_THRESHOLDS, CheckStatus, HealthCheck, Thresholds, check_consumer_lag
from worker.lag import (
    DEFAULT_TREND_POLICY,
    ConsumerLag,
    LagSample,
    LagTrend,
    LagTrendPolicy,
    TrendStatus,
    read_consumer_lag,
)
from worker.stream_entries import parse_stream_id

DEFAULT_STREAMS = StreamNames()
RATE_WINDOW_S = 10.0

_TREND_LEVEL = {
    TrendStatus.OK: CheckStatus.OK,
    TrendStatus.UNKNOWN: CheckStatus.OK,  # the count is unknown; the seconds still judge the lag
    TrendStatus.TOO_SHORT: CheckStatus.OK,  # no trend yet; the seconds still judge the lag
    TrendStatus.WARN: CheckStatus.WARN,
    TrendStatus.STALL: CheckStatus.WARN,
    TrendStatus.STOP: CheckStatus.CRITICAL,
}


def trend_level(trend: TrendStatus) -> CheckStatus:
    """Falling behind or stalled is a warning; stopped (nothing acknowledged for minutes) is critical."""
    return _TREND_LEVEL[trend]


def worse(a: CheckStatus, b: CheckStatus) -> CheckStatus:
    return a if a.rank >= b.rank else b


class RateSource(StrEnum):
    """Where the out rate comes from. The group's entries-read is not taken on trust: Redis 7.0 reloads it stale
    after a restart (and `XGROUP SETID … ENTRIESREAD` sets it to anything), and a rate across that jump reads 0 or
    thousands per second."""

    COUNTED = "counted"  # entries delivered, as counted (`ConsumerLag.delivered`) in both samples
    REDIS = "redis"  # the count is only a bound: entries-read's growth, where its lag lies within the bound in both
    UNKNOWN = "unknown"  # not two samples yet, or entries-read known stale, gone back, or nil


@dataclass(frozen=True, slots=True)
class LagReading:
    at: float
    lag: ConsumerLag
    entries_added: int | None
    trend: TrendStatus
    rate_in_per_s: float | None  # None until two samples span time
    rate_out_per_s: float | None
    check: HealthCheck  # the runbook thresholds on `lag.seconds`
    rate_out_source: RateSource = RateSource.UNKNOWN

    @property
    def status(self) -> CheckStatus:
        return worse(self.check.status, trend_level(self.trend))

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.lag.as_dict(),
            "at": self.at,
            "entries_added": self.entries_added,
            "trend": self.trend.value,
            "rate_in_per_s": self.rate_in_per_s,
            "rate_out_per_s": self.rate_out_per_s,
            "rate_out_source": self.rate_out_source.value,
            "status": self.status.value,
            "threshold_warn_s": DEFAULT_THRESHOLDS.lag_warn_s,
            "threshold_critical_s": DEFAULT_THRESHOLDS.lag_critical_s,
            "message": self.check.message,
        }


@dataclass(frozen=True, slots=True)
class _Observation:
    at: float
    added: int | None
    delivered: int | None  # counted
    read: int | None  # the group's entries-read, where nothing says it is stale
    position: tuple[int, int]  # the group's last-delivered id
    removed: int | None  # entries removed from the stream since it began
    delivered_in_stream: int | None  # delivered entries still in the stream (None: not counted)
    max_deleted: tuple[int, int] | None  # the greatest id XDEL removed (None: not known)
    undelivered_removed: bool

    @classmethod
    def of(cls, lag: ConsumerLag, at: float, added: int | None) -> _Observation:
        in_stream = None
        if lag.delivered is not None and lag.entries_added is not None and lag.removed is not None:
            in_stream = lag.entries_added - lag.removed - (lag.count or 0)  # XINFO's length less the undelivered
        return cls(
            at, added, lag.delivered, lag.entries_read if lag.redis_figure_agrees else None,
            parse_stream_id(lag.last_delivered_id), lag.removed, in_stream,
            None if lag.max_deleted_id is None else parse_stream_id(lag.max_deleted_id),
            lag.undelivered_removed,
        )

    def removed_none_undelivered_since(self, earlier: _Observation) -> bool:
        """No entry past `earlier`'s position has been removed from the stream since then. XDEL past it would raise
        the greatest deleted id past it; a trim (which Redis 7.0 does not record) takes the oldest entries first, so
        it reaches past the position only after removing more than the delivered entries the stream held then."""
        if self.removed is None or earlier.removed is None:
            return False
        if self.removed == earlier.removed:
            return True
        if self.max_deleted is None or self.max_deleted > earlier.position or earlier.delivered_in_stream is None:
            return False
        return self.removed - earlier.removed <= earlier.delivered_in_stream


def _rate(earlier: int | None, later: int | None, seconds: float) -> float | None:
    if earlier is None or later is None or seconds <= 0:
        return None
    return max(0, later - earlier) / seconds


def _rate_out(earlier: _Observation, later: _Observation, seconds: float) -> tuple[float | None, RateSource]:
    """Entries delivered per second between two readings. Delivered as counted (entries added less undelivered)
    takes an undelivered entry removed for a delivered one, so it is used only where no entry past the earlier
    reading's position has been removed since; else, if the group's last-delivered id has not moved, nothing was
    delivered (a dead worker behind a trimming producer: 0/s, not the producer's rate)."""
    if seconds <= 0:
        return None, RateSource.UNKNOWN
    if earlier.delivered is not None and later.delivered is not None and later.removed_none_undelivered_since(earlier):
        return max(0, later.delivered - earlier.delivered) / seconds, RateSource.COUNTED
    if later.position == earlier.position and (later.undelivered_removed or earlier.undelivered_removed):
        return 0.0, RateSource.COUNTED
    if earlier.undelivered_removed or later.undelivered_removed:
        return None, RateSource.UNKNOWN  # Redis's entries-read too: it cannot be checked against a count then
    # Gone back: reloaded stale by a restart between the two (never max(0, …): that would read as nothing out).
    if earlier.read is not None and later.read is not None and later.read >= earlier.read:
        return (later.read - earlier.read) / seconds, RateSource.REDIS
    return None, RateSource.UNKNOWN


class LagMonitor:
    """Feeds each sample to a `LagTrend`, keeps the recent lag seconds for a sparkline, and computes rates over
    the last `rate_window_s`."""

    def __init__(
        self,
        *,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
        policy: LagTrendPolicy = DEFAULT_TREND_POLICY,
        history: int = 120,
        rate_window_s: float = RATE_WINDOW_S,
    ) -> None:
        self.thresholds = thresholds
        self.trend = LagTrend(policy)
        self.rate_window_s = rate_window_s
        self._seconds: deque[float] = deque(maxlen=history)
        self._observations: deque[_Observation] = deque()
        self.last_lag: ConsumerLag | None = None

    @property
    def recent_seconds(self) -> list[float]:
        return list(self._seconds)

    def observe(self, lag: ConsumerLag, *, at: float, entries_added: int | None = None) -> LagReading:
        self.last_lag = lag
        self.trend.add(LagSample.from_consumer_lag(lag, at))
        self._seconds.append(lag.seconds)
        if entries_added is None:
            entries_added = lag.entries_added
        added = entries_added if entries_added is not None else lag.stream_length
        current = _Observation.of(lag, at, added)
        while self._observations and self._observations[0].at < at - self.rate_window_s:
            if len(self._observations) == 1:
                break  # keep one baseline even after a long pause between samples
            self._observations.popleft()
        baseline = self._observations[0] if self._observations else None
        self._observations.append(current)
        rate_in = rate_out = None
        source = RateSource.UNKNOWN
        if baseline is not None:
            span = at - baseline.at
            rate_in = _rate(baseline.added, current.added, span)
            rate_out, source = _rate_out(baseline, current, span)
        return LagReading(
            at=at,
            lag=lag,
            entries_added=entries_added,
            trend=self.trend.status(at),
            rate_in_per_s=rate_in,
            rate_out_per_s=rate_out,
            check=check_consumer_lag(lag.seconds, self.thresholds),
            rate_out_source=source,
        )


def sample_lag(client: redis.Redis, streams: StreamNames = DEFAULT_STREAMS,
               previous: ConsumerLag | None = None) -> tuple[ConsumerLag, int | None]:
    """One lag measurement and the stream's entries-added counter (None on servers older than Redis 7), read with it.
    `previous` (the last sample's lag) spares the script re-reading what it already knows.

    Raises `worker.lag.LagUnavailable` when the stream or the group does not exist."""
    lag = read_consumer_lag(client, streams.input, streams.group, previous=previous)
    return lag, lag.entries_added
