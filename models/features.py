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

import math
from dataclasses import dataclass

import numpy as np

from models.bars import Bars
from worker.records import FEATURE_CLIP, FEATURE_NAMES, MATRIX_COLS, MATRIX_ROWS

FVG_EXPIRY_BARS = 50
MAX_ACTIVE_GAPS_PER_SIDE = 10
FVG_AGE_DECAY = 0.1
MOMENTUM_LOOKBACK = 5
VOLUME_EMA_ALPHA = 0.02

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


def track_fair_value_gaps(bars: Bars) -> FairValueGapTrack:
    n = len(bars)
    # Python floats and lists in the loop: indexing numpy arrays element by element costs more than the work.
    highs, lows, closes = bars.high.tolist(), bars.low.tolist(), bars.close.tolist()
    bullish_active = [False] * n
    bearish_active = [False] * n
    nearest_level = [math.nan] * n
    nearest_age = [-1] * n
    formed_direction = [0] * n
    formed_size = [0.0] * n
    mitigated_bullish = [False] * n
    mitigated_bearish = [False] * n

    # Active gaps per side, oldest first: the bar each formed on and its level (the gap's midpoint), as parallel lists
    # so that "is any mitigated?" is one max() or min() over floats.
    bull_formed: list[int] = []
    bull_level: list[float] = []
    bear_formed: list[int] = []
    bear_level: list[float] = []
    for i in range(n):
        low_i, high_i = lows[i], highs[i]
        oldest_kept = i - FVG_EXPIRY_BARS
        if bull_level:
            if low_i <= max(bull_level):  # traded into: mitigated
                mitigated_bullish[i] = True
                kept = [k for k, level in enumerate(bull_level) if low_i > level]
                bull_formed, bull_level = [bull_formed[k] for k in kept], [bull_level[k] for k in kept]
            while bull_formed and bull_formed[0] < oldest_kept:  # expired
                del bull_formed[0], bull_level[0]
        if bear_level:
            if high_i >= min(bear_level):
                mitigated_bearish[i] = True
                kept = [k for k, level in enumerate(bear_level) if high_i < level]
                bear_formed, bear_level = [bear_formed[k] for k in kept], [bear_level[k] for k in kept]
            while bear_formed and bear_formed[0] < oldest_kept:
                del bear_formed[0], bear_level[0]
        if i >= 2:
            if low_i > highs[i - 2]:
                bottom, top = highs[i - 2], low_i
                bull_formed.append(i)
                bull_level.append((bottom + top) / 2)
                formed_direction[i], formed_size[i] = 1, top - bottom
                del bull_formed[:-MAX_ACTIVE_GAPS_PER_SIDE], bull_level[:-MAX_ACTIVE_GAPS_PER_SIDE]
            elif high_i < lows[i - 2]:
                bottom, top = high_i, lows[i - 2]
                bear_formed.append(i)
                bear_level.append((bottom + top) / 2)
                formed_direction[i], formed_size[i] = -1, top - bottom
                del bear_formed[:-MAX_ACTIVE_GAPS_PER_SIDE], bear_level[:-MAX_ACTIVE_GAPS_PER_SIDE]
        if bull_level or bear_level:
            bullish_active[i] = bool(bull_level)
            bearish_active[i] = bool(bear_level)
            # The gap whose level is nearest the close; on a tie the first, bullish before bearish, oldest first.
            close_i = closes[i]
            levels = bull_level + bear_level
            distances = [abs(level - close_i) for level in levels]
            nearest = distances.index(min(distances))
            nearest_level[i] = levels[nearest]
            nearest_age[i] = i - (bull_formed + bear_formed)[nearest]

    return FairValueGapTrack(
        bullish_active=np.array(bullish_active, dtype=bool),
        bearish_active=np.array(bearish_active, dtype=bool),
        nearest_level=np.array(nearest_level, dtype=np.float64),
        nearest_age=np.array(nearest_age, dtype=np.int64),
        formed_direction=np.array(formed_direction, dtype=np.int8),
        formed_size=np.array(formed_size, dtype=np.float64),
        mitigated_bullish=np.array(mitigated_bullish, dtype=bool),
        mitigated_bearish=np.array(mitigated_bearish, dtype=bool),
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
