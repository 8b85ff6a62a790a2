"""The synergy detector: the upstream stand-in that turns bars into SYNERGY_DETECTED events.

A synergy is a bar where independent signals line up. Signals at bar i (all known at its close;
ATR = Wilder's ATR14 at i, Δ5 = close[i] − close[i−5]):

* **momentum** in direction d = sign(Δ5) when |Δ5| >= `MOMENTUM_ATR_MULTIPLE`·ATR;
  strength min(1, |Δ5| / (2·`MOMENTUM_ATR_MULTIPLE`·ATR)).
* **volume spike** when the `volume_ratio` feature >= `VOLUME_SPIKE_RATIO` (volume >= 1.5× its EMA);
  strength = the feature itself (< 1).
* **fresh FVG** in direction d: a fair value gap at least `MIN_FVG_ATR_MULTIPLE`·ATR high that formed
  within the last `FRESH_FVG_BARS` bars (bullish +1, bearish −1) and is still active;
  strength min(1, gap height / ATR).
* **mitigation reversal** toward d: bar i mitigates a gap of direction d (see `models.features`), the
  5-bar move ran against it (Δ5·d <= −`PULLBACK_ATR_MULTIPLE`·ATR: the pullback that reached the gap),
  and bar i closes in the half of its range that rejects the pullback (upper half for a long).

Types, by precedence:
  TYPE_4  fresh FVG + momentum + volume spike, all in d          confidence = mean of the three strengths
  TYPE_3  mitigation reversal toward d                           mean(close location, pullback strength)
  TYPE_1  fresh FVG + momentum in d (no volume spike)            mean(momentum, FVG strengths)
  TYPE_2  momentum + volume spike in d (no fresh FVG in d)       mean(momentum, volume strengths)
A bar whose rules point both ways is ambiguous and skipped. One move triggers once: after a synergy in
direction d, no other synergy in d is flagged for `COOLDOWN_BARS` bars. Only bars with a full 60-bar
window (index >= 59) are considered.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from models.bars import Bars, format_timestamp
from models.features import (
    FEATURE_INDEX,
    average_true_range,
    build_features,
    feature_window,
    track_fair_value_gaps,
)
from worker.events import MAX_CORRELATION_ID_LENGTH
from worker.records import MATRIX_COLS, MATRIX_ROWS, SynergyEvent, SynergyType

MOMENTUM_ATR_MULTIPLE = 1.5
PULLBACK_ATR_MULTIPLE = 0.75
MIN_FVG_ATR_MULTIPLE = 0.25
VOLUME_SPIKE_RATIO = float(np.tanh(np.log(1.5)))
FRESH_FVG_BARS = 3
COOLDOWN_BARS = 6
ATR_PERIOD = 14
FIRST_SYNERGY_INDEX = MATRIX_ROWS - 1

_NOT_ID_CHARACTER = re.compile(r"[^\x21-\x7e]")


@dataclass(frozen=True)
class Synergy:
    index: int
    synergy_type: SynergyType
    direction: int  # 1 long, -1 short
    confidence: float  # [0, 1]


@dataclass(frozen=True, eq=False)
class _Signals:
    """Per-bar signal arrays; a direction of 0 means no signal."""

    momentum_direction: np.ndarray
    momentum_strength: np.ndarray
    volume_spike: np.ndarray
    volume_strength: np.ndarray
    fresh_fvg_direction: np.ndarray
    fresh_fvg_strength: np.ndarray
    reversal_direction: np.ndarray
    reversal_strength: np.ndarray


def _signals(bars: Bars, features: np.ndarray, atr: np.ndarray) -> _Signals:
    n = len(bars)
    close, high, low = bars.close, bars.high, bars.low
    move = np.zeros(n)
    move[5:] = close[5:] - close[:-5]
    safe_atr = np.where(atr > 0, atr, np.inf)
    move_in_atr = move / safe_atr

    momentum_direction = np.where(np.abs(move_in_atr) >= MOMENTUM_ATR_MULTIPLE, np.sign(move_in_atr), 0.0)
    momentum_strength = np.minimum(1.0, np.abs(move_in_atr) / (2 * MOMENTUM_ATR_MULTIPLE))

    volume = features[:, FEATURE_INDEX["volume_ratio"]].astype(np.float64)
    volume_spike = volume >= VOLUME_SPIKE_RATIO

    track = track_fair_value_gaps(bars)
    fresh_direction = np.zeros(n)
    fresh_strength = np.zeros(n)
    for age in range(FRESH_FVG_BARS):
        # Gaps formed `age` bars ago, nearest first so the youngest gap sets direction and strength.
        formed = np.zeros(n, dtype=np.int8)
        size = np.zeros(n)
        formed[age:] = track.formed_direction[: n - age]
        size[age:] = track.formed_size[: n - age]
        still_active = np.where(formed > 0, track.bullish_active, track.bearish_active)
        big_enough = size >= MIN_FVG_ATR_MULTIPLE * atr
        take = (formed != 0) & still_active & big_enough & (fresh_direction == 0)
        fresh_direction[take] = formed[take]
        fresh_strength[take] = np.minimum(1.0, size[take] / safe_atr[take])

    bar_range = high - low
    close_location = np.divide(close - low, bar_range, out=np.full(n, 0.5), where=bar_range > 0)
    pullback = PULLBACK_ATR_MULTIPLE
    long_reversal = track.mitigated_bullish & (move_in_atr <= -pullback) & (close_location >= 0.5)
    short_reversal = track.mitigated_bearish & (move_in_atr >= pullback) & (close_location <= 0.5)
    reversal_direction = long_reversal.astype(np.float64) - short_reversal.astype(np.float64)
    rejection = np.where(reversal_direction > 0, close_location, 1.0 - close_location)
    pullback_strength = np.minimum(1.0, np.abs(move_in_atr) / (2 * pullback))
    reversal_strength = (rejection + pullback_strength) / 2

    return _Signals(
        momentum_direction=momentum_direction.astype(np.int8),
        momentum_strength=momentum_strength,
        volume_spike=volume_spike,
        volume_strength=np.clip(volume, 0.0, 1.0),
        fresh_fvg_direction=fresh_direction.astype(np.int8),
        fresh_fvg_strength=fresh_strength,
        reversal_direction=reversal_direction.astype(np.int8),
        reversal_strength=reversal_strength,
    )


def _classify(signals: _Signals, i: int) -> tuple[SynergyType, int, float] | None:
    momentum = int(signals.momentum_direction[i])
    fvg = int(signals.fresh_fvg_direction[i])
    reversal = int(signals.reversal_direction[i])
    spike = bool(signals.volume_spike[i])
    s_momentum = float(signals.momentum_strength[i])
    s_fvg = float(signals.fresh_fvg_strength[i])
    s_volume = float(signals.volume_strength[i])

    candidates: list[tuple[SynergyType, int, float]] = []
    if momentum and fvg == momentum and spike:
        candidates.append((SynergyType.TYPE_4, momentum, (s_momentum + s_fvg + s_volume) / 3))
    if reversal:
        candidates.append((SynergyType.TYPE_3, reversal, float(signals.reversal_strength[i])))
    if momentum and fvg == momentum and not spike:
        candidates.append((SynergyType.TYPE_1, momentum, (s_momentum + s_fvg) / 2))
    if momentum and spike and fvg != momentum:
        candidates.append((SynergyType.TYPE_2, momentum, (s_momentum + s_volume) / 2))
    if not candidates or len({direction for _, direction, _ in candidates}) > 1:
        return None
    synergy_type, direction, confidence = candidates[0]
    return synergy_type, direction, round(min(1.0, max(0.0, confidence)), 4)


def detect_synergies(bars: Bars, features: np.ndarray) -> list[Synergy]:
    """Synergies in bar order, only at indices >= 59 (a full 60-bar window); rules in the module docstring."""
    return _detect(bars, features, average_true_range(bars, ATR_PERIOD))


def _detect(bars: Bars, features: np.ndarray, atr: np.ndarray) -> list[Synergy]:
    _check_features(bars, features)
    signals = _signals(bars, features, atr)
    candidate_bars = np.flatnonzero((signals.momentum_direction != 0) | (signals.reversal_direction != 0))
    last_bar_by_direction = {1: -COOLDOWN_BARS - 1, -1: -COOLDOWN_BARS - 1}
    synergies: list[Synergy] = []
    for index in candidate_bars[candidate_bars >= FIRST_SYNERGY_INDEX].tolist():
        classified = _classify(signals, index)
        if classified is None:
            continue
        synergy_type, direction, confidence = classified
        if index - last_bar_by_direction[direction] <= COOLDOWN_BARS:
            continue
        last_bar_by_direction[direction] = index
        synergies.append(Synergy(index, synergy_type, direction, confidence))
    return synergies


def correlation_id(symbol: str, bar_time: np.datetime64, id_prefix: str = "") -> str:
    """`{prefix}{symbol}-{YYYYMMDDTHHMMSSZ}`: the same bar of the same symbol always gets the same id."""
    compact = np.datetime_as_string(bar_time.astype("datetime64[s]"), unit="s").replace("-", "").replace(":", "")
    identifier = _NOT_ID_CHARACTER.sub("_", f"{id_prefix}{symbol}-{compact}Z")
    if len(identifier) > MAX_CORRELATION_ID_LENGTH:
        raise ValueError(
            f"correlation id {identifier[:40]!r}… is {len(identifier)} characters, at most "
            f"{MAX_CORRELATION_ID_LENGTH}: use a shorter id prefix or symbol"
        )
    return identifier


def synergy_events(bars: Bars, features: np.ndarray | None = None, *, id_prefix: str = "") -> Iterator[SynergyEvent]:
    """Full SYNERGY_DETECTED events for every synergy in `bars`, in bar order.

    matrix = the 60-bar feature window ending at the synergy bar, price = its close, atr = ATR14 there,
    timestamp = its close time (ISO-8601 Z). Ids are deterministic (see `correlation_id`), so replaying
    the same bars yields the same ids and the worker treats them as duplicates.
    """
    return (event for _, event in detected_synergy_events(bars, features, id_prefix=id_prefix))


def detected_synergy_events(
    bars: Bars, features: np.ndarray | None = None, *, id_prefix: str = ""
) -> Iterator[tuple[Synergy, SynergyEvent]]:
    """Each synergy with the event `synergy_events` sends for it: one detection pass for both."""
    if features is None:
        features = build_features(bars)
    atr = average_true_range(bars, ATR_PERIOD)
    for synergy in _detect(bars, features, atr):
        i = synergy.index
        bar_time = bars.timestamps[i]
        yield synergy, SynergyEvent(
            correlation_id=correlation_id(bars.symbol, bar_time, id_prefix),
            synergy_type=synergy.synergy_type,
            direction=synergy.direction,
            confidence=synergy.confidence,
            symbol=bars.symbol,
            timestamp=format_timestamp(bar_time),
            price=float(bars.close[i]),
            atr=float(atr[i]),
            matrix=feature_window(features, i),
        )


def _check_features(bars: Bars, features: np.ndarray) -> None:
    if features.shape != (len(bars), MATRIX_COLS):
        raise ValueError(
            f"features have shape {features.shape}, expected ({len(bars)}, {MATRIX_COLS}) for these bars; "
            "build them with models.features.build_features(bars)"
        )
