"""The simulator is deterministic, produces well-formed bars, and has structure the agents can learn."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.bars import Bars, read_bars_csv
from models.features import FEATURE_INDEX, FVG_EXPIRY_BARS, build_features, track_fair_value_gaps
from models.simulator import Regime, SimulatedMarket, SimulatorConfig, simulate_bars, simulate_market

SAMPLE_CSV = Path(__file__).resolve().parents[2] / "models" / "data" / "sample_bars.csv"
# models/data/sample_bars.csv is exactly these bars (regenerate with write_bars_csv if the simulator changes).
SAMPLE_CONFIG = SimulatorConfig(seed=10, n_bars=400, start="2026-03-02T13:00:00Z")
FORWARD_BARS = 6


@pytest.fixture(scope="module")
def market() -> SimulatedMarket:
    return simulate_market(SimulatorConfig(seed=3))


def arrays(bars: Bars) -> list[np.ndarray]:
    return [bars.timestamps, bars.open, bars.high, bars.low, bars.close, bars.volume]


def test_the_same_seed_gives_the_same_bars() -> None:
    config = SimulatorConfig(seed=42, n_bars=3_000)
    for left, right in zip(arrays(simulate_bars(config)), arrays(simulate_bars(config)), strict=True):
        np.testing.assert_array_equal(left, right)


def test_different_seeds_give_different_bars() -> None:
    first = simulate_bars(SimulatorConfig(seed=1, n_bars=3_000))
    second = simulate_bars(SimulatorConfig(seed=2, n_bars=3_000))
    assert not np.array_equal(first.close, second.close)
    assert not np.array_equal(first.volume, second.volume)
    np.testing.assert_array_equal(first.timestamps, second.timestamps)


def test_the_sample_csv_is_the_documented_simulation() -> None:
    sample = read_bars_csv(SAMPLE_CSV, symbol="SIM")
    for left, right in zip(arrays(sample), arrays(simulate_bars(SAMPLE_CONFIG)), strict=True):
        np.testing.assert_array_equal(left, right)


def test_bars_are_well_formed(market: SimulatedMarket) -> None:
    bars = market.bars
    config = SimulatorConfig(seed=3)
    assert len(bars) == config.n_bars and bars.symbol == "SIM"
    assert np.all(bars.low <= np.minimum(bars.open, bars.close))
    assert np.all(bars.high >= np.maximum(bars.open, bars.close))
    assert np.all(bars.low > 0) and np.all(bars.volume >= 1)
    np.testing.assert_array_equal(bars.open[1:], bars.close[:-1])
    for prices in (bars.open, bars.high, bars.low, bars.close):
        np.testing.assert_array_equal(np.round(prices / config.tick_size) * config.tick_size, prices)
    assert bars.open[0] == config.start_price
    assert np.mean(bars.high - bars.low) > 0


def test_bars_close_every_five_minutes_on_weekdays_only(market: SimulatedMarket) -> None:
    times = market.bars.timestamps
    assert times[0] == np.datetime64("2026-01-05T00:05:00", "s")
    steps = np.diff(times).astype(np.int64)
    assert steps.min() == 300
    assert set(np.unique(steps).tolist()) == {300, 300 + 2 * 86_400}  # Friday's last bar → Monday's first
    opens = times - np.timedelta64(300, "s")
    weekday = (opens.astype("datetime64[D]").astype(np.int64) + 3) % 7
    assert weekday.max() <= 4


def test_volume_follows_the_intraday_session(market: SimulatedMarket) -> None:
    bars = market.bars
    hour = ((bars.timestamps.astype(np.int64) - 300) % 86_400) // 3600
    us_open = bars.volume[(hour == 14)].mean()
    overnight = bars.volume[(hour >= 1) & (hour <= 4)].mean()
    assert us_open > 2 * overnight


def test_all_regimes_occur(market: SimulatedMarket) -> None:
    share = np.bincount(market.regimes, minlength=len(Regime)) / len(market.regimes)
    assert np.all(share > 0.02), share


def follow_the_move_hit_rate(bars: Bars, selection: np.ndarray, lookback: int = 12) -> float:
    """How often the next 6 bars move the way the last `lookback` bars did."""
    close = bars.close
    index = np.flatnonzero(selection)
    index = index[(index >= lookback) & (index < len(close) - FORWARD_BARS)]
    past = np.sign(close[index] - close[index - lookback])
    future = np.sign(close[index + FORWARD_BARS] - close[index])
    moving = (past != 0) & (future != 0)
    return float(np.mean(past[moving] == future[moving]))


def test_momentum_persists_in_trends_and_reverts_in_ranges(market: SimulatedMarket) -> None:
    trending = np.isin(market.regimes, [Regime.TRENDING_UP, Regime.TRENDING_DOWN])
    ranging = market.regimes == Regime.RANGING
    assert follow_the_move_hit_rate(market.bars, trending) > 0.6
    assert follow_the_move_hit_rate(market.bars, ranging) < 0.45


def share_of_gaps_mitigated(bars: Bars, formed_at: np.ndarray) -> float:
    track = track_fair_value_gaps(bars)
    outcomes = []
    for i in formed_at.tolist():
        if track.formed_direction[i] > 0:
            level = (bars.high[i - 2] + bars.low[i]) / 2
            outcomes.append(bool(np.any(bars.low[i + 1 : i + 1 + FVG_EXPIRY_BARS] <= level)))
        else:
            level = (bars.low[i - 2] + bars.high[i]) / 2
            outcomes.append(bool(np.any(bars.high[i + 1 : i + 1 + FVG_EXPIRY_BARS] >= level)))
    return float(np.mean(outcomes))


def test_gaps_get_filled_in_ranges_more_than_gaps_left_by_a_trend(market: SimulatedMarket) -> None:
    bars, regimes = market.bars, market.regimes
    direction = track_fair_value_gaps(bars).formed_direction
    complete = np.arange(len(bars)) < len(bars) - FVG_EXPIRY_BARS
    in_range = (direction != 0) & (regimes == Regime.RANGING) & complete
    with_trend = (
        ((direction > 0) & (regimes == Regime.TRENDING_UP)) | ((direction < 0) & (regimes == Regime.TRENDING_DOWN))
    ) & complete
    assert in_range.sum() > 200 and with_trend.sum() > 200
    assert share_of_gaps_mitigated(bars, np.flatnonzero(in_range)) > 0.85
    assert share_of_gaps_mitigated(bars, np.flatnonzero(with_trend)) < 0.7


def test_volume_spikes_accompany_breakouts(market: SimulatedMarket) -> None:
    regimes = market.regimes
    trending = np.isin(regimes, [Regime.TRENDING_UP, Regime.TRENDING_DOWN])
    breakout_starts = np.flatnonzero(trending[1:] & (regimes[:-1] == Regime.RANGING)) + 1
    breakout = np.zeros(len(regimes), dtype=bool)
    for start in breakout_starts:
        breakout[start : start + 3] = True
    volume_ratio = build_features(market.bars)[:, FEATURE_INDEX["volume_ratio"]]
    assert len(breakout_starts) >= 20
    assert volume_ratio[breakout].mean() > volume_ratio[~breakout].mean() + 0.4


def window_summaries(features: np.ndarray, close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bar with a full 60-bar window, summaries of the matrix an agent sees — the last row, mean
    momentum over 12 and 60 rows, mean volume ratio over 12 rows, mitigation rate and bullish-minus-bearish
    gap activity over 60 rows, mean nearest level over 12 rows — with their pairwise products (trend and
    range call for opposite responses to the same move), and the sign of the next 6-bar move."""
    cumulative = np.cumsum(np.vstack([np.zeros((1, 7)), features.astype(np.float64)]), axis=0)
    index = np.arange(59, len(close) - FORWARD_BARS)

    def window_mean(rows: int, feature: str) -> np.ndarray:
        column = FEATURE_INDEX[feature]
        return (cumulative[index + 1, column] - cumulative[index + 1 - rows, column]) / rows

    summaries = np.column_stack(
        [
            features[index],
            window_mean(12, "price_momentum_5"),
            window_mean(60, "price_momentum_5"),
            window_mean(12, "volume_ratio"),
            window_mean(60, "fvg_mitigation_signal"),
            window_mean(60, "fvg_bullish_active") - window_mean(60, "fvg_bearish_active"),
            window_mean(12, "fvg_nearest_level"),
        ]
    )
    first, second = np.triu_indices(summaries.shape[1])
    design = np.column_stack([np.ones(len(index)), summaries, summaries[:, first] * summaries[:, second]])
    label = np.sign(close[index + FORWARD_BARS] - close[index])
    moved = label != 0
    return design[moved], label[moved]


def held_out_accuracy(config: SimulatorConfig, fit_seed: int, test_seed: int) -> tuple[float, float]:
    """Least squares fit on one seed's bars, scored on another's: (accuracy, majority-class rate)."""
    fit_bars = simulate_bars(replace(config, seed=fit_seed))
    test_bars = simulate_bars(replace(config, seed=test_seed))
    x_fit, y_fit = window_summaries(build_features(fit_bars), fit_bars.close)
    x_test, y_test = window_summaries(build_features(test_bars), test_bars.close)
    weights, *_ = np.linalg.lstsq(x_fit, y_fit, rcond=None)
    accuracy = float(np.mean(np.sign(x_test @ weights) == y_test))
    majority = float(max(np.mean(y_test > 0), np.mean(y_test < 0)))
    return accuracy, majority


def test_features_predict_the_six_bar_move_on_held_out_bars() -> None:
    accuracy, majority = held_out_accuracy(SimulatorConfig(), fit_seed=101, test_seed=202)
    assert accuracy > majority + 0.04, (accuracy, majority)


def test_without_market_structure_the_same_fit_is_at_chance() -> None:
    # The control: if features leaked the future, this would pass the test above too.
    random_walk = SimulatorConfig(
        trend_drift=0.0,
        trend_autocorrelation=0.0,
        range_reversion=0.0,
        high_volatility_reversion=0.0,
        breakout_impulse=0.0,
    )
    accuracy, majority = held_out_accuracy(random_walk, fit_seed=101, test_seed=202)
    assert abs(accuracy - 0.5) < 0.02 and accuracy < majority + 0.015, (accuracy, majority)


@pytest.mark.parametrize(
    "overrides",
    [{"n_bars": 0}, {"start_price": -1.0}, {"bar_volatility": 0.0}, {"trend_autocorrelation": 1.0}],
)
def test_invalid_configs_are_refused(overrides: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="invalid SimulatorConfig"):
        SimulatorConfig(**overrides)  # type: ignore[arg-type]


def test_a_bad_start_time_names_the_problem() -> None:
    with pytest.raises(ValueError, match="time zone"):
        simulate_bars(SimulatorConfig(n_bars=10, start="2026-01-05T00:00:00"))
