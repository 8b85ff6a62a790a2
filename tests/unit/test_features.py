from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.bars import Bars
from models.features import (
    FEATURE_INDEX,
    FVG_EXPIRY_BARS,
    MAX_ACTIVE_GAPS_PER_SIDE,
    average_true_range,
    build_features,
    feature_window,
    track_fair_value_gaps,
)
from models.simulator import SimulatorConfig, simulate_bars
from worker.records import FEATURE_NAMES, MATRIX_SHAPE

BULL, BEAR, LEVEL, AGE, MITIGATION, MOMENTUM, VOLUME = (FEATURE_INDEX[name] for name in FEATURE_NAMES)


def make_bars(ohlc: list[tuple[float, float, float, float]], volume: list[float] | None = None) -> Bars:
    n = len(ohlc)
    columns = np.array(ohlc, dtype=np.float64).reshape(n, 4)
    start = np.datetime64("2026-01-05T00:05:00", "s")
    return Bars(
        timestamps=start + np.arange(n) * np.timedelta64(300, "s"),
        open=columns[:, 0],
        high=columns[:, 1],
        low=columns[:, 2],
        close=columns[:, 3],
        volume=np.array(volume if volume is not None else [100.0] * n),
    )


# A bullish gap forms on bar 2 (low 1002 > high[0] 1001: zone [1001, 1002], level 1001.5), survives
# bar 3 (low 1003) and is mitigated on bar 4 (low 1001.4 reaches 1001.5).
BULLISH_GAP = [
    (1000.0, 1001.0, 999.0, 1000.5),
    (1000.5, 1004.0, 1000.5, 1003.8),
    (1003.8, 1005.0, 1002.0, 1004.5),
    (1004.5, 1005.5, 1003.0, 1005.0),
    (1005.0, 1005.2, 1001.4, 1001.8),
]


def test_a_bullish_gap_forms_ages_and_is_mitigated() -> None:
    features = build_features(make_bars(BULLISH_GAP))
    assert features.dtype == np.float32
    assert features[:, BULL].tolist() == [0, 0, 1, 1, 0]
    assert features[:, BEAR].tolist() == [0, 0, 0, 0, 0]
    assert features[:, MITIGATION].tolist() == [0, 0, 0, 0, 1]
    assert features[2, LEVEL] == pytest.approx(100 * (1001.5 - 1004.5) / 1004.5 / 2, rel=1e-6)
    assert features[3, LEVEL] == pytest.approx(100 * (1001.5 - 1005.0) / 1005.0 / 2, rel=1e-6)
    assert features[2, AGE] == pytest.approx(1.0)
    assert features[3, AGE] == pytest.approx(math.exp(-0.1), rel=1e-6)
    assert features[4, LEVEL] == 0 and features[4, AGE] == 0


def test_a_bearish_gap_sits_above_price_until_price_trades_back_up_to_it() -> None:
    mirrored = [(2000 - o, 2000 - lo, 2000 - h, 2000 - c) for o, h, lo, c in BULLISH_GAP]
    features = build_features(make_bars(mirrored))
    assert features[:, BEAR].tolist() == [0, 0, 1, 1, 0]
    assert features[:, BULL].tolist() == [0, 0, 0, 0, 0]
    assert features[:, MITIGATION].tolist() == [0, 0, 0, 0, 1]
    level = 2000 - 1001.5
    assert features[2, LEVEL] == pytest.approx(100 * (level - (2000 - 1004.5)) / (2000 - 1004.5) / 2, rel=1e-6)
    assert features[2, LEVEL] > 0


def test_the_nearest_level_is_clipped_at_two_percent() -> None:
    far = [(100.0, 101.0, 99.0, 100.5), (100.5, 110.0, 100.5, 109.0), (109.0, 110.0, 108.0, 109.5)]
    features = build_features(make_bars(far))
    assert features[2, LEVEL] == pytest.approx(-1.0)  # (101+108)/2 is 4.6 % below 109.5 → −2 % → /2


def test_an_unmitigated_gap_expires_without_a_mitigation_signal() -> None:
    bars = BULLISH_GAP[:4] + [(1005.0, 1005.5, 1004.0, 1005.0)] * (FVG_EXPIRY_BARS + 5)
    track = track_fair_value_gaps(make_bars(bars))
    features = build_features(make_bars(bars))
    formed = 2
    assert track.bullish_active[formed + FVG_EXPIRY_BARS]
    assert features[formed + FVG_EXPIRY_BARS, AGE] == pytest.approx(math.exp(-0.1 * FVG_EXPIRY_BARS), rel=1e-5)
    assert not track.bullish_active[formed + FVG_EXPIRY_BARS + 1]
    assert features[:, MITIGATION].sum() == 0


def test_at_most_the_newest_gaps_per_side_stay_active() -> None:
    # A staircase: every bar from 2 on leaves a bullish gap (low[k] = 10k > high[k-2] = 10k - 15).
    stairs = [(10.0 * k + 2, 10.0 * k + 5, 10.0 * k, 10.0 * k + 3) for k in range(1, 16)]
    levels = [(stairs[k - 2][1] + stairs[k][2]) / 2 for k in range(2, 15)]
    newest_kept = levels[-MAX_ACTIVE_GAPS_PER_SIDE:]
    dropped = levels[:-MAX_ACTIVE_GAPS_PER_SIDE]
    # One bar falls below every kept gap's level but stays above the dropped ones.
    low = (newest_kept[0] + dropped[-1]) / 2
    crash = (stairs[-1][3], stairs[-1][3], low, low + 1)
    track = track_fair_value_gaps(make_bars([*stairs, crash]))
    assert track.bullish_active[len(stairs) - 1]
    assert track.mitigated_bullish[len(stairs)]
    assert not track.bullish_active[len(stairs)], "gaps beyond the cap must have been dropped, not kept"


def test_momentum_is_the_five_bar_percent_change_over_five_clipped() -> None:
    closes = [100.0] * 5 + [104.0, 106.0, 94.0, 97.0]
    bars = make_bars([(c, c + 1, c - 1, c) for c in closes])
    momentum = build_features(bars)[:, MOMENTUM]
    assert momentum[:5].tolist() == [0, 0, 0, 0, 0]
    assert momentum[5] == pytest.approx(4.0 / 5)
    assert momentum[6] == pytest.approx(1.0)  # 6 % / 5 = 1.2, clipped
    assert momentum[7] == pytest.approx(-1.0)  # −6 % / 5 = −1.2, clipped
    assert momentum[8] == pytest.approx(-3.0 / 5)


def test_volume_ratio_is_tanh_log_of_volume_over_its_ema() -> None:
    volumes = [100.0, 100.0, 200.0, 0.0, 50.0]
    bars = make_bars([(10.0, 11.0, 9.0, 10.0)] * len(volumes), volume=volumes)
    ratio = build_features(bars)[:, VOLUME]
    ema = [100.0, 100.0]
    for v in volumes[2:]:
        ema.append(0.02 * v + 0.98 * ema[-1])
    assert ratio[0] == 0 and ratio[1] == 0
    assert ratio[2] == pytest.approx(math.tanh(math.log(200 / 102)), rel=1e-6)
    assert ratio[3] == pytest.approx(-1.0)  # no volume at all
    assert ratio[4] == pytest.approx(math.tanh(math.log(50 / ema[4])), rel=1e-6)


def test_volume_ratio_is_zero_before_any_volume_trades() -> None:
    bars = make_bars([(10.0, 11.0, 9.0, 10.0)] * 3, volume=[0.0, 0.0, 10.0])
    ratio = build_features(bars)[:, VOLUME]
    assert ratio[:2].tolist() == [0, 0]
    assert ratio[2] == pytest.approx(math.tanh(math.log(10 / 0.2)), rel=1e-6)


def test_average_true_range_is_wilders() -> None:
    ohlc = [(10.0, 11.0, 9.0, 10.0), (10.0, 12.0, 10.0, 11.0), (11.0, 11.5, 8.0, 9.0), (9.0, 9.5, 8.5, 9.0)]
    atr = average_true_range(make_bars(ohlc), period=2)
    true_ranges = [2.0, 2.0, 3.5, 1.0]  # bar 1: max(2, |12-10|, |10-10|); bar 2: max(3.5, 0.5, 3)
    assert atr[0] == pytest.approx(2.0)
    assert atr[1] == pytest.approx((2.0 + 2.0) / 2)
    assert atr[2] == pytest.approx((atr[1] * 1 + true_ranges[2]) / 2)
    assert atr[3] == pytest.approx((atr[2] * 1 + true_ranges[3]) / 2)


def test_true_range_uses_the_gap_from_the_previous_close() -> None:
    ohlc = [(10.0, 10.5, 9.5, 10.0), (13.0, 13.5, 12.5, 13.0)]
    atr = average_true_range(make_bars(ohlc), period=1)
    assert atr[1] == pytest.approx(3.5)  # |13.5 − 10| beats the bar's own range of 1


def test_feature_window_is_sixty_rows_ending_at_the_bar() -> None:
    features = build_features(simulate_bars(SimulatorConfig(seed=2, n_bars=200)))
    window = feature_window(features, 120)
    assert window.shape == MATRIX_SHAPE
    assert window.dtype == np.float32
    np.testing.assert_array_equal(window, features[61:121])
    window[:] = 7
    assert not np.any(features[61:121] == 7), "the window must be a copy"


@pytest.mark.parametrize("end", [0, 58, 200])
def test_feature_window_refuses_incomplete_windows(end: int) -> None:
    features = np.zeros((200, 7), dtype=np.float32)
    with pytest.raises(ValueError):
        feature_window(features, end)


def test_simulated_features_are_finite_and_bounded() -> None:
    features = build_features(simulate_bars(SimulatorConfig(seed=5, n_bars=20_000)))
    assert features.shape == (20_000, 7)
    assert np.isfinite(features).all()
    assert np.abs(features).max() <= 2.0
    for column in (BULL, BEAR, MITIGATION):
        assert set(np.unique(features[:, column]).tolist()) == {0.0, 1.0}
    assert features[:, AGE].min() >= 0 and features[:, AGE].max() <= 1.0
    no_gap = (features[:, BULL] == 0) & (features[:, BEAR] == 0)
    assert no_gap.any() and not features[no_gap][:, [LEVEL, AGE]].any()
    assert np.all(np.abs(features[:, LEVEL]) <= 1.0)


@st.composite
def random_bars(draw: st.DrawFn) -> Bars:
    n = draw(st.integers(min_value=1, max_value=80))
    price = st.floats(min_value=0.01, max_value=1e6, allow_nan=False)
    rows = []
    for _ in range(n):
        o, c = draw(price), draw(price)
        high = max(o, c) * draw(st.floats(min_value=1.0, max_value=1.5))
        low = min(o, c) * draw(st.floats(min_value=0.5, max_value=1.0))
        rows.append((o, high, low, c))
    volume = draw(st.lists(st.floats(min_value=0, max_value=1e9), min_size=n, max_size=n))
    return make_bars(rows, volume)


@settings(max_examples=60, deadline=None)
@given(random_bars())
def test_features_are_finite_and_within_two_for_any_valid_bars(bars: Bars) -> None:
    features = build_features(bars)
    assert features.shape == (len(bars), 7) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert np.abs(features).max() <= 2.0


def _tracked_plainly(bars: Bars) -> dict[str, np.ndarray]:
    """The gap tracker as the module docstring states it, one bar and one gap at a time: the oracle for the faster
    loop in models.features (parallel lists, one max() to tell whether any gap was mitigated)."""
    n = len(bars)
    out = {"bullish_active": np.zeros(n, bool), "bearish_active": np.zeros(n, bool),
           "nearest_level": np.full(n, np.nan), "nearest_age": np.full(n, -1, np.int64),
           "formed_direction": np.zeros(n, np.int8), "formed_size": np.zeros(n),
           "mitigated_bullish": np.zeros(n, bool), "mitigated_bearish": np.zeros(n, bool)}
    bullish: list[tuple[int, float]] = []  # (bar formed, level)
    bearish: list[tuple[int, float]] = []
    for i in range(n):
        low, high, close = float(bars.low[i]), float(bars.high[i]), float(bars.close[i])
        kept = [gap for gap in bullish if low > gap[1]]
        out["mitigated_bullish"][i] = len(kept) < len(bullish)
        bullish = [gap for gap in kept if i - gap[0] <= FVG_EXPIRY_BARS]
        kept = [gap for gap in bearish if high < gap[1]]
        out["mitigated_bearish"][i] = len(kept) < len(bearish)
        bearish = [gap for gap in kept if i - gap[0] <= FVG_EXPIRY_BARS]
        if i >= 2 and low > bars.high[i - 2]:
            bullish = [*bullish, (i, (float(bars.high[i - 2]) + low) / 2)][-MAX_ACTIVE_GAPS_PER_SIDE:]
            out["formed_direction"][i], out["formed_size"][i] = 1, low - float(bars.high[i - 2])
        elif i >= 2 and high < bars.low[i - 2]:
            bearish = [*bearish, (i, (high + float(bars.low[i - 2])) / 2)][-MAX_ACTIVE_GAPS_PER_SIDE:]
            out["formed_direction"][i], out["formed_size"][i] = -1, float(bars.low[i - 2]) - high
        out["bullish_active"][i], out["bearish_active"][i] = bool(bullish), bool(bearish)
        if bullish or bearish:
            formed, level = min([*bullish, *bearish], key=lambda gap: abs(gap[1] - close))
            out["nearest_level"][i], out["nearest_age"][i] = level, i - formed
    return out


def _assert_tracked_as_plainly(bars: Bars) -> None:
    track = track_fair_value_gaps(bars)
    for name, expected in _tracked_plainly(bars).items():
        got = getattr(track, name)
        assert got.dtype == expected.dtype, name
        np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_gap_tracker_matches_its_plain_statement_on_simulated_markets(seed: int) -> None:
    _assert_tracked_as_plainly(simulate_bars(SimulatorConfig(seed=seed, n_bars=4_000)))


@settings(max_examples=60, deadline=None)
@given(random_bars())
def test_the_gap_tracker_matches_its_plain_statement_on_any_bars(bars: Bars) -> None:
    _assert_tracked_as_plainly(bars)
