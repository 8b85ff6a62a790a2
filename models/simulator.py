"""A seeded market simulator: 5-minute OHLCV bars with regimes and structure the agents can learn.

The market switches between four regimes by a Markov chain: each regime's expected length is in
`SimulatorConfig`, where it goes next in `_NEXT_REGIME`; a new trend leans back toward the start price
(`long_run_reversion`) so months of bars stay in a plausible range. Per bar, the log return is driven by
the regime:

* trending up / down: a drift in the trend's direction plus positive autocorrelation of returns, so
  momentum persists; a trend that starts out of a range is a **breakout**: its first bars get an extra
  impulse and a volume surge (volume spikes accompany breakouts).
* ranging: an Ornstein–Uhlenbeck pull toward the price where the range began, so impulses (and the
  fair value gaps they leave) tend to be retraced and filled.
* high volatility: wider bars, heavier volume, a weak pull toward the regime's anchor, no drift.

Volatility and volume follow an intraday (UTC) profile of an index future: quiet overnight, London open,
a surge at the US cash open, a lunch lull and a closing push. Bars exist Monday–Friday only. High and
low come from the exact distribution of a Brownian bridge's extremes between open and close, then all
prices are rounded to the tick (high up, low down), so every bar satisfies low <= open, close <= high.
The same seed always gives the same bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from models.bars import Bars, parse_timestamp

BAR_SECONDS = 300


class Regime(IntEnum):
    TRENDING_UP = 0
    TRENDING_DOWN = 1
    RANGING = 2
    HIGH_VOLATILITY = 3


@dataclass(frozen=True)
class SimulatorConfig:
    seed: int = 0
    n_bars: int = 20_000
    start: str = "2026-01-05T00:00:00Z"  # open of the first bar; its close (timestamp) is 5 minutes later
    symbol: str = "SIM"
    start_price: float = 4500.0
    tick_size: float = 0.25
    base_volume: float = 1_500.0
    bar_volatility: float = 0.0011  # std of a 5-minute log return at a normal time of day
    # Regime dynamics.
    mean_trend_bars: float = 150.0
    mean_range_bars: float = 180.0
    mean_high_volatility_bars: float = 50.0
    trend_drift: float = 0.3  # per-bar drift in a trend, in units of that bar's volatility
    trend_autocorrelation: float = 0.2  # AR(1) of standardised returns while trending
    range_reversion: float = 0.15  # share of the distance to the range anchor closed per bar
    high_volatility_multiplier: float = 2.2
    high_volatility_reversion: float = 0.02
    long_run_reversion: float = 3.0  # how strongly a new trend leans back toward start_price (per unit log drift)
    breakout_bars: int = 6
    breakout_impulse: float = 0.9  # extra drift (volatility units) on a breakout's first bar, fading linearly
    breakout_volume: float = 2.8  # volume multiplier on a breakout's first bar, fading linearly
    trend_volume: float = 1.25  # volume multiplier while trending (ranges trade lighter than trends)
    range_volume: float = 0.85
    high_volatility_volume: float = 1.6
    move_volume_sensitivity: float = 0.25  # volume grows as exp(sensitivity·|standardised return|)
    volume_noise: float = 0.3  # std of the log-normal noise on volume

    def __post_init__(self) -> None:
        problems = []
        if self.n_bars < 1:
            problems.append(f"n_bars must be >= 1, got {self.n_bars}")
        if self.start_price <= 0 or self.tick_size <= 0 or self.base_volume <= 0:
            problems.append("start_price, tick_size and base_volume must be > 0")
        if self.bar_volatility <= 0:
            problems.append(f"bar_volatility must be > 0, got {self.bar_volatility}")
        for name in ("mean_trend_bars", "mean_range_bars", "mean_high_volatility_bars"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.trend_autocorrelation < 1:
            problems.append(f"trend_autocorrelation must be in [0, 1), got {self.trend_autocorrelation}")
        if problems:
            raise ValueError("invalid SimulatorConfig: " + "; ".join(problems))


# Where a regime goes when it ends: probabilities of (a trend, ranging, high volatility).
# A new trend's direction is drawn separately (see `trend_up_probability`).
_NEXT_REGIME: dict[Regime, tuple[float, float, float]] = {
    Regime.TRENDING_UP: (0.1, 0.7, 0.2),
    Regime.TRENDING_DOWN: (0.1, 0.7, 0.2),
    Regime.RANGING: (0.8, 0.0, 0.2),
    Regime.HIGH_VOLATILITY: (0.4, 0.6, 0.0),
}
_TRENDS = (Regime.TRENDING_UP, Regime.TRENDING_DOWN)


@dataclass(frozen=True, eq=False)
class SimulatedMarket:
    bars: Bars
    regimes: np.ndarray  # int8 Regime value per bar


def simulate_bars(config: SimulatorConfig) -> Bars:
    """Deterministic for a config (seed included)."""
    return simulate_market(config).bars


def bar_close_times(start: str, n_bars: int) -> np.ndarray:
    """Close times of n consecutive 5-minute bars opening at `start`, skipping Saturdays and Sundays."""
    first_open = parse_timestamp(start)
    times: list[np.ndarray] = []
    found = 0
    chunk_start = first_open
    while found < n_bars:
        opens = chunk_start + np.arange(2 * n_bars + 2016) * np.timedelta64(BAR_SECONDS, "s")
        # 1970-01-01 was a Thursday: day 0 → weekday 3 (Monday = 0).
        weekday = (opens.astype("datetime64[D]").astype(np.int64) + 3) % 7
        weekday_opens = opens[weekday < 5][: n_bars - found]
        times.append(weekday_opens + np.timedelta64(BAR_SECONDS, "s"))
        found += weekday_opens.shape[0]
        chunk_start = opens[-1] + np.timedelta64(BAR_SECONDS, "s")
    return np.concatenate(times).astype("datetime64[s]")


def intraday_activity(close_times: np.ndarray) -> np.ndarray:
    """Relative activity (≈1 during the US session) by UTC time of day of each bar's open."""
    opens = close_times - np.timedelta64(BAR_SECONDS, "s")
    seconds_of_day = (opens.astype(np.int64) % 86_400).astype(np.float64)
    hour = seconds_of_day / 3600.0

    def bump(center: float, width: float) -> np.ndarray:
        return np.exp(-0.5 * ((hour - center) / width) ** 2)

    us_session = ((hour >= 14.5) & (hour < 21.0)).astype(np.float64)
    return (
        0.45
        + 0.25 * bump(8.0, 1.0)  # London open
        + 0.45 * us_session
        + 0.9 * bump(14.6, 0.35)  # US cash open
        - 0.15 * bump(17.0, 0.8) * us_session  # lunch lull
        + 0.5 * bump(20.8, 0.25)  # closing push
    )


def trend_up_probability(config: SimulatorConfig, log_price: float) -> float:
    """Trends lean back toward the start price, so months of bars stay in a plausible price range."""
    drift_from_start = log_price - float(np.log(config.start_price))
    return float(np.clip(0.5 - config.long_run_reversion * drift_from_start, 0.1, 0.9))


def next_regime(config: SimulatorConfig, current: Regime, log_price: float, kind_draw: float, up_draw: float) -> Regime:
    to_trend, to_range, _ = _NEXT_REGIME[current]
    if kind_draw < to_trend:
        return Regime.TRENDING_UP if up_draw < trend_up_probability(config, log_price) else Regime.TRENDING_DOWN
    return Regime.RANGING if kind_draw < to_trend + to_range else Regime.HIGH_VOLATILITY


@dataclass(frozen=True, eq=False)
class _PricePath:
    regimes: np.ndarray
    log_open: np.ndarray
    log_close: np.ndarray
    sigma: np.ndarray  # per-bar volatility of the log return
    standardised: np.ndarray  # log return / sigma
    surge: np.ndarray  # breakout volume surge, 1 on a breakout's first bar fading to 0


def _simulate_price_path(config: SimulatorConfig, activity: np.ndarray, rng: np.random.Generator) -> _PricePath:
    n = config.n_bars
    leave = {
        Regime.TRENDING_UP: 1.0 / config.mean_trend_bars,
        Regime.TRENDING_DOWN: 1.0 / config.mean_trend_bars,
        Regime.RANGING: 1.0 / config.mean_range_bars,
        Regime.HIGH_VOLATILITY: 1.0 / config.mean_high_volatility_bars,
    }
    switch_draws, kind_draws, up_draws = rng.random((3, n)).tolist()
    shocks = rng.standard_normal(n).tolist()
    sigmas = (config.bar_volatility * activity).tolist()

    regimes = np.empty(n, dtype=np.int8)
    log_open, log_close, standardised, surge = np.empty(n), np.empty(n), np.empty(n), np.zeros(n)
    sigma_out = np.empty(n)
    log_price = float(np.log(config.start_price))
    regime = Regime.RANGING
    anchor = log_price  # where the current range (or volatile spell) began
    deviation = 0.0  # AR(1) state of a trend's returns around its drift
    bars_in_regime = 0
    breakout = 0  # direction of a trend that broke out of a range, else 0
    for i in range(n):
        if i and switch_draws[i] < leave[regime]:
            previous, regime = regime, next_regime(config, regime, log_price, kind_draws[i], up_draws[i])
            anchor, deviation, bars_in_regime = log_price, 0.0, 0
            if previous == Regime.RANGING and regime in _TRENDS:
                breakout = 1 if regime == Regime.TRENDING_UP else -1
            else:
                breakout = 0
        sigma = sigmas[i] * (config.high_volatility_multiplier if regime == Regime.HIGH_VOLATILITY else 1.0)
        if regime in _TRENDS:
            deviation = config.trend_autocorrelation * deviation + shocks[i]
            z = deviation + (config.trend_drift if regime == Regime.TRENDING_UP else -config.trend_drift)
            if breakout and bars_in_regime < config.breakout_bars:
                fade = 1.0 - bars_in_regime / config.breakout_bars
                z += breakout * config.breakout_impulse * fade
                surge[i] = fade
            log_return = sigma * z
        else:
            pull = config.range_reversion if regime == Regime.RANGING else config.high_volatility_reversion
            log_return = -pull * (log_price - anchor) + sigma * shocks[i]
        regimes[i] = regime
        log_open[i] = log_price
        log_price += log_return
        log_close[i] = log_price
        sigma_out[i] = sigma
        standardised[i] = log_return / sigma
        bars_in_regime += 1
    return _PricePath(regimes, log_open, log_close, sigma_out, standardised, surge)


def simulate_market(config: SimulatorConfig) -> SimulatedMarket:
    rng = np.random.default_rng(config.seed)
    close_times = bar_close_times(config.start, config.n_bars)
    activity = intraday_activity(close_times)
    path = _simulate_price_path(config, activity, rng)
    high_draws, low_draws = rng.random((2, config.n_bars))
    volume_noise = rng.standard_normal(config.n_bars)

    # Extremes of a Brownian bridge from a to b with variance s²: (a + b ± sqrt((b − a)² − 2s²·ln U)) / 2.
    spread = (path.log_close - path.log_open) ** 2
    middle = (path.log_open + path.log_close) / 2.0
    high_excursion = np.sqrt(spread - 2.0 * path.sigma**2 * np.log1p(-high_draws)) / 2.0
    low_excursion = np.sqrt(spread - 2.0 * path.sigma**2 * np.log1p(-low_draws)) / 2.0
    tick = config.tick_size
    close = np.round(np.exp(path.log_close) / tick) * tick
    open_ = np.concatenate([[np.round(config.start_price / tick) * tick], close[:-1]])
    high = np.maximum(np.ceil(np.exp(middle + high_excursion) / tick) * tick, np.maximum(open_, close))
    low = np.minimum(np.floor(np.exp(middle - low_excursion) / tick) * tick, np.minimum(open_, close))

    regime_volume = np.array(
        [config.trend_volume, config.trend_volume, config.range_volume, config.high_volatility_volume]
    )[path.regimes]
    volume = (
        config.base_volume
        * activity**1.3
        * regime_volume
        * (1.0 + (config.breakout_volume - 1.0) * path.surge)
        * np.exp(config.move_volume_sensitivity * np.abs(path.standardised) + config.volume_noise * volume_noise)
    )
    bars = Bars(
        timestamps=close_times,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=np.maximum(np.round(volume), 1.0),
        symbol=config.symbol,
    )
    return SimulatedMarket(bars=bars, regimes=path.regimes)
