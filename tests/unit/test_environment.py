from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.bars import read_bars_csv
from models.environment import (
    CONTEXT_WIDTH,
    EnvironmentConfig,
    EnvironmentConfigError,
    MarketEvents,
    TacticalEnvironment,
    market_events,
    one_hot_votes,
    settle,
    simulated_market_events,
    trade_outcomes,
)
from models.simulator import SimulatorConfig, simulate_bars
from models.synergy import synergy_events
from worker.actions import Action
from worker.aggregator import AggregatorConfig

SAMPLE_CSV = Path(__file__).resolve().parents[2] / "models" / "data" / "sample_bars.csv"
SHORT, HOLD, LONG = Action.SHORT.index, Action.HOLD.index, Action.LONG.index
COST = 0.35


def bars_after(*ohlc: tuple[float, float, float, float]) -> np.ndarray:
    return np.array([ohlc], dtype=np.float64)


def outcome(side: float, following: np.ndarray, entry: float = 100.0, stop: float = 98.0, take: float = 103.0) -> float:
    result = trade_outcomes(following, np.array([side]), np.array([entry]), np.array([stop]), np.array([take]), COST)
    return float(result[0])


@pytest.fixture(scope="module")
def market() -> MarketEvents:
    return simulated_market_events(5, 3_000, EnvironmentConfig())


def test_long_trade_exits_at_take_profit_when_reached_first() -> None:
    following = bars_after((100, 101, 99.5, 100.5), (100.5, 103.5, 100, 103), (103, 104, 97, 98))
    assert outcome(1, following) == pytest.approx(3.0 - COST)


def test_long_trade_exits_at_stop_loss_when_reached_first() -> None:
    following = bars_after((100, 100.5, 99, 99.5), (99.5, 99.6, 97.5, 98.5), (98.5, 104, 98.4, 103.5))
    assert outcome(1, following) == pytest.approx(-2.0 - COST)


def test_a_bar_reaching_both_levels_counts_as_the_stop() -> None:
    assert outcome(1, bars_after((100, 104, 97, 101))) == pytest.approx(-2.0 - COST)


def test_a_gap_through_the_stop_fills_at_the_open() -> None:
    following = bars_after((100, 100.5, 99.5, 100), (96.0, 96.5, 95.5, 96.0))
    assert outcome(1, following) == pytest.approx(-4.0 - COST)


def test_a_trade_reaching_neither_level_exits_at_the_last_close() -> None:
    following = bars_after((100, 101, 99, 100.5), (100.5, 102, 99.5, 101.25))
    assert outcome(1, following) == pytest.approx(1.25 - COST)
    assert outcome(-1, following, stop=102.5, take=97.0) == pytest.approx(-1.25 - COST)


def test_short_trade_mirrors_the_long_one() -> None:
    following = bars_after((100, 100.5, 99, 99.5), (99.5, 99.6, 96.5, 97))
    assert outcome(-1, following, stop=102.0, take=97.0) == pytest.approx(3.0 - COST)
    assert outcome(-1, bars_after((100, 102.5, 99, 102)), stop=102.0, take=97.0) == pytest.approx(-2.0 - COST)


def test_events_are_the_ones_the_feed_publishes_with_scorable_trades(market: MarketEvents) -> None:
    bars = simulate_bars(SimulatorConfig(seed=5, n_bars=3_000))
    published = {e.timestamp: e for e in synergy_events(bars)}
    assert 0 < len(market) <= len(published)
    for event in market.events:
        original = published[event.timestamp]
        np.testing.assert_array_equal(event.matrix, original.matrix)
        assert (event.synergy_type, event.direction, event.price, event.atr) == (
            original.synergy_type, original.direction, original.price, original.atr
        )
    last_close_time = bars.timestamps[-1]
    assert all(t + np.timedelta64(24 * 300, "s") <= last_close_time for t in market.timestamps)
    assert market.context.shape == (len(market), CONTEXT_WIDTH)
    np.testing.assert_array_equal(market.context[:, -1], market.direction)
    np.testing.assert_array_equal(market.context[:, :-1].sum(axis=1), 1.0)


def test_a_slice_keeps_its_trades_inside_it() -> None:
    bars = read_bars_csv(SAMPLE_CSV)
    config = EnvironmentConfig(max_holding_bars=6)
    split = 250
    train = market_events(bars, "train", config, end_bar=split)
    held_out = market_events(bars, "held-out", config, first_bar=split)
    whole = market_events(bars, "whole", config)
    index_of = {t: i for i, t in enumerate(bars.timestamps)}
    assert all(index_of[t] + 6 < split for t in train.timestamps)
    assert all(index_of[t] >= split for t in held_out.timestamps)
    assert len(train) + len(held_out) <= len(whole)
    assert set(train.timestamps) | set(held_out.timestamps) <= set(whole.timestamps)


def test_settle_runs_the_worker_vote_and_scores_its_command(market: MarketEvents) -> None:
    config = EnvironmentConfig()
    rows = np.arange(len(market))
    with_direction = np.where(market.direction > 0, LONG, SHORT)
    probabilities, confidence = one_hot_votes(np.repeat(with_direction[:, None], 3, axis=1))
    settled = settle(market, rows, probabilities, confidence, config)

    assert all(d.execute for d in settled.decisions)
    np.testing.assert_array_equal(settled.side, market.direction)
    for row in (0, len(market) // 2, len(market) - 1):
        command = settled.decisions[row].command
        assert command is not None and command.price == market.price[row]
        expected = trade_outcomes(
            market.following[row : row + 1], np.array([float(market.direction[row])]), np.array([command.price]),
            np.array([command.stop_loss]), np.array([command.take_profit]), config.cost_per_trade,
        )[0]
        assert settled.pnl[row] == pytest.approx(expected)
        assert settled.reward[row] == pytest.approx(expected / (2.0 * market.atr[row]))


def test_no_trade_when_the_vote_does_not_execute(market: MarketEvents) -> None:
    rows = np.arange(len(market))
    # fvg long alone: its weight is at most 0.5, below the 0.65 bar for every synergy type.
    votes = np.tile(np.array([LONG, HOLD, HOLD]), (len(market), 1))
    settled = settle(market, rows, *one_hot_votes(votes), EnvironmentConfig())
    assert not any(d.execute for d in settled.decisions)
    assert not settled.side.any() and not settled.pnl.any() and not settled.reward.any()


def test_costs_lower_every_trade_by_the_same_amount(market: MarketEvents) -> None:
    rows = np.arange(len(market))
    votes = np.repeat(np.where(market.direction > 0, LONG, SHORT)[:, None], 3, axis=1)
    free = settle(market, rows, *one_hot_votes(votes), EnvironmentConfig(spread=0.0, commission=0.0))
    costly = settle(market, rows, *one_hot_votes(votes), EnvironmentConfig(spread=0.5, commission=0.25))
    np.testing.assert_allclose(free.pnl - costly.pnl, 0.75)


def test_environment_steps_through_each_market_in_order_and_wraps(market: MarketEvents) -> None:
    short_market = replace_events(market, 3)
    environment = TacticalEnvironment([short_market, market], EnvironmentConfig(), seed=0)
    environment.cursor[:] = [1, 0]
    matrices, context = environment.observation()
    np.testing.assert_array_equal(matrices[0], short_market.matrices[1])
    np.testing.assert_array_equal(context[1], market.context[0])

    all_long = np.full((2, 3), LONG)
    first = environment.step(all_long)
    expected = settle(short_market, np.array([1]), *one_hot_votes(all_long[:1]), EnvironmentConfig())
    assert first.reward[0] == pytest.approx(expected.reward[0])
    assert first.done.tolist() == [False, False]
    second = environment.step(all_long)
    assert second.done.tolist() == [True, False]
    assert environment.cursor.tolist() == [0, 2]


def test_environment_refuses_wrong_shapes_and_empty_markets(market: MarketEvents) -> None:
    environment = TacticalEnvironment([market], EnvironmentConfig(), seed=0)
    with pytest.raises(EnvironmentConfigError, match="shape"):
        environment.step(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(EnvironmentConfigError, match="needs synergy events"):
        TacticalEnvironment([replace_events(market, 0)], EnvironmentConfig(), seed=0)


def test_config_is_validated_and_round_trips_through_json() -> None:
    with pytest.raises(EnvironmentConfigError, match="spread"):
        EnvironmentConfig(spread=-0.1)
    with pytest.raises(EnvironmentConfigError, match="max_holding_bars"):
        EnvironmentConfig(max_holding_bars=0)
    config = EnvironmentConfig(max_holding_bars=12, spread=0.5, commission=0.2,
                               aggregator=AggregatorConfig(stop_loss_atr=1.5, take_profit_atr=2.5))
    again = EnvironmentConfig.from_json(config.as_json())
    assert again.as_json() == config.as_json()
    with pytest.raises(EnvironmentConfigError, match="incomplete"):
        EnvironmentConfig.from_json({"spread": 1})


def replace_events(market: MarketEvents, count: int) -> MarketEvents:
    keep = slice(0, count)
    return replace(
        market,
        name=f"{market.name}-first-{count}",
        events=market.events[keep],
        matrices=market.matrices[keep],
        synergy_index=market.synergy_index[keep],
        direction=market.direction[keep],
        price=market.price[keep],
        atr=market.atr[keep],
        timestamps=market.timestamps[keep],
        following=market.following[keep],
        labels=market.labels[keep],
        context=market.context[keep],
    )
