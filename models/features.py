"""The 7-feature builder: OHLCV bars → one row of features per 5-minute bar (DESIGN.md's matrix columns).

Upstream, `tacticalctl simulate|replay` and training all build features here, so they agree by construction.
Columns, in `worker.records.FEATURE_NAMES` order, for bar i (known at bar i's close):

Fair value gaps (FVG), tracked bar by bar:
  * A **bullish** gap forms at bar i (i >= 2) when low[i] > high[i-2]; its zone is [high[i-2], low[i]].
    A **bearish** gap forms when high[i] < low[i-2]; its zone is [high[i], low[i-2]]. (Both at once is impossible.)
  * A gap's **level** is the midpoint of its zone ("consequent encroachment").
  * A gap is **mitigated** on the first later bar that trades to its level: low <= level for a bullish
    gap, high >= level for a bearish one. A mitigated gap is no longer active.
  * A gap **expires** (silently, no mitigation signal) once it is more than `FVG_EXPIRY_BARS` bars old,
    and at most `MAX_ACTIVE_GAPS_PER_SIDE` gaps per side stay active (the oldest is dropped first).
  * Order within bar i: mitigate gaps formed before i, expire old gaps, then add a gap formed at i.
  So an active bullish level is always below the close and an active bearish level above it.

  0 `fvg_bullish_active`    1 if any bullish gap is active after bar i, else 0.
  1 `fvg_bearish_active`    same for bearish gaps.
  2 `fvg_nearest_level`     of all active gaps, the level nearest the close: 100·(level − close)/close,
                            clipped to ±2 (%), then /2 → [−1, 1]; negative = below price. 0 if none active.
  3 `fvg_age`               exp(−0.1·(i − formation bar)) of that nearest gap (1 on the bar it forms); 0 if none.
  4 `fvg_mitigation_signal` 1 on a bar that mitigates at least one active gap, else 0.

  5 `price_momentum_5`      100·(close[i]/close[i−5] − 1) / 5, clipped to ±1; 0 for the first 5 bars.
  6 `volume_ratio`          tanh(log1p(volume[i]/ema[i] − 1)) = tanh(log(volume/ema)) ∈ [−1, 1), where ema is
                            the EMA of volume with α = 0.02 seeded with volume[0] and including bar i;
                            0 where the EMA is 0 (no volume traded yet).

Finally every column is clipped to ±2 and the matrix is float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.bars import Bars
from worker.records import FEATURE_NAMES, MATRIX_COLS, MATRIX_ROWS

FVG_EXPIRY_BARS = 50
MAX_ACTIVE_GAPS_PER_SIDE = 10
FVG_AGE_DECAY = 0.1
MOMENTUM_LOOKBACK = 5
VOLUME_EMA_ALPHA = 0.02
FEATURE_CLIP = 2.0

FEATURE_INDEX: dict[str, int] = {name: position for position, name in enumerate(FEATURE_NAMES)}


@dataclass(frozen=True, eq=False)
class FairValueGapTrack:
    """Per-bar state of fair value gaps after each bar's close (see the module docstring)."""

    bullish_active: np.ndarray  # bool
    bearish_active: np.ndarray  # bool
    nearest_level: np.ndarray  # float64 price of the nearest active gap's level, NaN if none
    nearest_age: np.ndarray  # int64 bars since the nearest active gap formed, -1 if none
    formed_direction: np.ndarray  # int8: +1 bullish gap formed on this bar, -1 bearish, 0 none
    formed_size: np.ndarray  # float64 height of the gap formed on this bar, 0 if none
    mitigated_bullish: np.ndarray  # bool: this bar mitigated at least one bullish gap
    mitigated_bearish: np.ndarray  # bool


@dataclass(slots=True)
class _Gap:
    formed: int
    level: float


def track_fair_value_gaps(bars: Bars) -> FairValueGapTrack:
    n = len(bars)
    high, low, close = bars.high, bars.low, bars.close
    bullish_active = np.zeros(n, dtype=bool)
    bearish_active = np.zeros(n, dtype=bool)
    nearest_level = np.full(n, np.nan)
    nearest_age = np.full(n, -1, dtype=np.int64)
    formed_direction = np.zeros(n, dtype=np.int8)
    formed_size = np.zeros(n)
    mitigated_bullish = np.zeros(n, dtype=bool)
    mitigated_bearish = np.zeros(n, dtype=bool)

    bullish: list[_Gap] = []
    bearish: list[_Gap] = []
    for i in range(n):
        low_i, high_i = float(low[i]), float(high[i])
        if bullish:
            kept = [gap for gap in bullish if low_i > gap.level]
            mitigated_bullish[i] = len(kept) < len(bullish)
            bullish = [gap for gap in kept if i - gap.formed <= FVG_EXPIRY_BARS]
        if bearish:
            kept = [gap for gap in bearish if high_i < gap.level]
            mitigated_bearish[i] = len(kept) < len(bearish)
            bearish = [gap for gap in kept if i - gap.formed <= FVG_EXPIRY_BARS]
        if i >= 2:
            if low_i > high[i - 2]:
                bottom, top = float(high[i - 2]), low_i
                bullish.append(_Gap(i, (bottom + top) / 2))
                formed_direction[i], formed_size[i] = 1, top - bottom
                del bullish[:-MAX_ACTIVE_GAPS_PER_SIDE]
            elif high_i < low[i - 2]:
                bottom, top = high_i, float(low[i - 2])
                bearish.append(_Gap(i, (bottom + top) / 2))
                formed_direction[i], formed_size[i] = -1, top - bottom
                del bearish[:-MAX_ACTIVE_GAPS_PER_SIDE]
        bullish_active[i] = bool(bullish)
        bearish_active[i] = bool(bearish)
        if bullish or bearish:
            close_i = float(close[i])
            nearest = min((*bullish, *bearish), key=lambda gap: abs(gap.level - close_i))
            nearest_level[i] = nearest.level
            nearest_age[i] = i - nearest.formed

    return FairValueGapTrack(
        bullish_active=bullish_active,
        bearish_active=bearish_active,
        nearest_level=nearest_level,
        nearest_age=nearest_age,
        formed_direction=formed_direction,
        formed_size=formed_size,
        mitigated_bullish=mitigated_bullish,
        mitigated_bearish=mitigated_bearish,
    )


def price_momentum(close: np.ndarray, lookback: int = MOMENTUM_LOOKBACK) -> np.ndarray:
    """`price_momentum_5`: lookback-bar % change / 5, clipped to ±1; 0 before a full lookback."""
    momentum = np.zeros(close.shape[0])
    if close.shape[0] > lookback:
        percent = 100.0 * (close[lookback:] / close[:-lookback] - 1.0)
        momentum[lookback:] = np.clip(percent / 5.0, -1.0, 1.0)
    return momentum


def exponential_moving_average(values: np.ndarray, alpha: float) -> np.ndarray:
    """EMA seeded with the first value: ema[0] = x[0], ema[i] = α·x[i] + (1 − α)·ema[i−1]."""
    ema = np.empty(values.shape[0])
    if values.shape[0] == 0:
        return ema
    level = float(values[0])
    keep = 1.0 - alpha
    for i, value in enumerate(values.tolist()):
        level = alpha * value + keep * level if i else level
        ema[i] = level
    return ema


def volume_ratio(volume: np.ndarray, alpha: float = VOLUME_EMA_ALPHA) -> np.ndarray:
    """`volume_ratio`: tanh(log1p(volume/EMA(volume) − 1)); −1 for zero volume, 0 where the EMA is 0."""
    ema = exponential_moving_average(volume, alpha)
    ratio = np.divide(volume, ema, out=np.ones_like(ema), where=ema > 0)
    with np.errstate(divide="ignore"):
        return np.tanh(np.log1p(ratio - 1.0))


def build_features(bars: Bars) -> np.ndarray:
    """(n_bars, 7) float32 features, columns in FEATURE_NAMES order, all finite and within ±2."""
    track = track_fair_value_gaps(bars)
    close = bars.close
    n = len(bars)
    features = np.zeros((n, MATRIX_COLS))
    features[:, FEATURE_INDEX["fvg_bullish_active"]] = track.bullish_active
    features[:, FEATURE_INDEX["fvg_bearish_active"]] = track.bearish_active
    has_gap = track.nearest_age >= 0
    distance_percent = 100.0 * (track.nearest_level[has_gap] - close[has_gap]) / close[has_gap]
    features[has_gap, FEATURE_INDEX["fvg_nearest_level"]] = np.clip(distance_percent, -2.0, 2.0) / 2.0
    features[has_gap, FEATURE_INDEX["fvg_age"]] = np.exp(-FVG_AGE_DECAY * track.nearest_age[has_gap])
    features[:, FEATURE_INDEX["fvg_mitigation_signal"]] = track.mitigated_bullish | track.mitigated_bearish
    features[:, FEATURE_INDEX["price_momentum_5"]] = price_momentum(close)
    features[:, FEATURE_INDEX["volume_ratio"]] = volume_ratio(bars.volume)
    return np.clip(features, -FEATURE_CLIP, FEATURE_CLIP).astype(np.float32)


def feature_window(features: np.ndarray, end: int) -> np.ndarray:
    """The (60, 7) float32 matrix of rows end−59..end inclusive (oldest first), as its own copy."""
    if end < MATRIX_ROWS - 1:
        raise ValueError(f"a {MATRIX_ROWS}-bar window needs end >= {MATRIX_ROWS - 1}, got end={end}")
    if end >= features.shape[0]:
        raise ValueError(f"end={end} is past the last feature row ({features.shape[0] - 1})")
    return np.array(features[end - MATRIX_ROWS + 1 : end + 1], dtype=np.float32, order="C")


def true_range(bars: Bars) -> np.ndarray:
    """max(high − low, |high − previous close|, |low − previous close|); high − low for the first bar."""
    high, low, close = bars.high, bars.low, bars.close
    ranges = high - low
    if len(bars) > 1:
        previous = close[:-1]
        ranges[1:] = np.maximum.reduce([ranges[1:], np.abs(high[1:] - previous), np.abs(low[1:] - previous)])
    return ranges


def average_true_range(bars: Bars, period: int = 14) -> np.ndarray:
    """Wilder's ATR per bar; before `period` bars exist, the mean true range so far (so it is always defined)."""
    if period < 1:
        raise ValueError(f"ATR period must be >= 1, got {period}")
    ranges = true_range(bars)
    n = ranges.shape[0]
    atr = np.cumsum(ranges) / np.arange(1, n + 1)
    if n > period:
        level = float(atr[period - 1])
        keep = (period - 1) / period
        tail = ranges[period:].tolist()
        for offset, value in enumerate(tail, start=period):
            level = level * keep + value / period
            atr[offset] = level
    return atr
