from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.actions import AGENT_NAMES, Action
from worker.aggregator import (
    DEFAULT_WEIGHTS,
    PYTHON_SCORING_MAX_BATCH,
    AggregationError,
    AggregatorConfig,
    AggregatorConfigError,
    aggregate,
    aggregate_batch,
    order_quantity,
)
from worker.records import AgentVote, SynergyEvent, SynergyType

CONFIG = AggregatorConfig()


def make_event(
    synergy_type: SynergyType = SynergyType.TYPE_1,
    direction: int = 1,
    *,
    price: float = 4500.0,
    atr: float = 5.0,
    correlation_id: str = "cid-1",
) -> SynergyEvent:
    return SynergyEvent(
        correlation_id=correlation_id,
        synergy_type=synergy_type,
        direction=direction,
        confidence=0.8,
        symbol="ES",
        timestamp="2024-03-01T14:30:00Z",
        price=price,
        atr=atr,
        matrix=np.zeros((60, 7), dtype=np.float32),
    )


def long_votes(fvg: float, momentum: float, entry: float) -> list[AgentVote]:
    """Each agent gives `p` to long and the rest to hold."""
    return [
        AgentVote(agent, (0.0, 1.0 - p, p), 0.9) for agent, p in zip(AGENT_NAMES, (fvg, momentum, entry), strict=True)
    ]


def short_votes(fvg: float, momentum: float, entry: float) -> list[AgentVote]:
    return [
        AgentVote(agent, (p, 1.0 - p, 0.0), 0.9) for agent, p in zip(AGENT_NAMES, (fvg, momentum, entry), strict=True)
    ]


# Probabilities whose TYPE_1 score is exactly 0.65 in exact arithmetic, and 0.6499999999999999 as a naive float sum.
EXACTLY_065 = [(0.30, 1.00, 1.00), (0.35, 0.95, 0.95), (0.45, 0.75, 1.00), (0.70, 0.60, 0.60)]


@pytest.mark.parametrize("probabilities", EXACTLY_065)
def test_a_score_of_exactly_the_threshold_executes(probabilities: tuple[float, float, float]) -> None:
    decision = aggregate(make_event(), long_votes(*probabilities), CONFIG, "v1")

    assert decision.execute
    assert decision.action is Action.LONG
    assert math.isclose(decision.score, 0.65, abs_tol=1e-12)
    assert decision.reason == "executed: long 0.650 >= 0.65 with direction"


def test_just_below_the_threshold_holds_and_says_why() -> None:
    decision = aggregate(make_event(), long_votes(0.6998, 0.6, 0.6), CONFIG, "v1")  # 0.6499

    assert not decision.execute
    assert decision.command is None
    assert decision.action is Action.LONG
    assert decision.reason == "below threshold: long 0.649 < 0.65"


def test_a_score_just_under_the_bar_never_reads_as_reaching_it() -> None:
    decision = aggregate(make_event(), long_votes(0.69999, 0.6, 0.6), CONFIG, "v1")  # 0.649995

    assert not decision.execute
    assert decision.reason == "below threshold: long 0.649 < 0.65"


def test_counter_direction_trade_executes_at_exactly_095() -> None:
    decision = aggregate(make_event(direction=-1), long_votes(0.90, 1.0, 1.0), CONFIG, "v1")

    assert decision.execute
    assert decision.command is not None and decision.command.side == "BUY"
    assert decision.reason == "executed: long 0.950 >= 0.95 against direction"


def test_counter_direction_trade_below_095_does_not_execute() -> None:
    decision = aggregate(make_event(direction=1), short_votes(0.8998, 1.0, 1.0), CONFIG, "v1")  # 0.9499

    assert not decision.execute
    assert decision.action is Action.SHORT
    assert decision.reason == "against direction: short 0.949 < 0.95"


def test_short_with_direction_executes_as_sell() -> None:
    decision = aggregate(make_event(direction=-1), short_votes(0.8, 0.7, 0.7), CONFIG, "v1")

    assert decision.execute
    assert decision.command is not None and decision.command.side == "SELL"
    assert decision.reason == "executed: short 0.750 >= 0.65 with direction"


def test_hold_on_top_never_executes_even_when_certain() -> None:
    votes = [AgentVote(agent, (0.0, 1.0, 0.0), 0.99) for agent in AGENT_NAMES]

    decision = aggregate(make_event(), votes, CONFIG, "v1")

    assert not decision.execute
    assert decision.action is Action.HOLD
    assert decision.score == pytest.approx(1.0)
    assert decision.reason == "hold: top action is hold (1.000)"


def test_a_tie_between_long_and_short_holds() -> None:
    votes = [AgentVote(agent, (0.5, 0.0, 0.5), 0.9) for agent in AGENT_NAMES]

    decision = aggregate(make_event(), votes, CONFIG, "v1")

    assert not decision.execute
    assert decision.action is Action.HOLD
    assert decision.reason == "tie: long = short at 0.500"


def test_a_tie_between_hold_and_long_holds() -> None:
    votes = [AgentVote(agent, (0.0, 0.5, 0.5), 0.9) for agent in AGENT_NAMES]

    decision = aggregate(make_event(), votes, CONFIG, "v1")

    assert not decision.execute
    assert decision.action is Action.HOLD
    assert decision.reason == "tie: long = hold at 0.500"


def test_scores_that_differ_only_by_float_rounding_are_a_tie() -> None:
    # TYPE_1: long = .5*0 + .3*.55 + .2*.85 and short = .5*.55 + .3*.1 + .2*.15 are both 0.335 exactly,
    # but the floats differ in the last bit.
    votes = [
        AgentVote("fvg", (0.55, 0.45, 0.0), 0.9),
        AgentVote("momentum", (0.10, 0.35, 0.55), 0.9),
        AgentVote("entry", (0.15, 0.0, 0.85), 0.9),
    ]

    decision = aggregate(make_event(), votes, CONFIG, "v1")

    short, _, long = decision.scores
    assert short != long
    assert decision.action is Action.HOLD
    assert decision.reason == "tie: long = short at 0.335"


@pytest.mark.parametrize("synergy_type", list(SynergyType))
def test_each_synergy_type_weighs_agents_as_configured(synergy_type: SynergyType) -> None:
    # FVG says long, Momentum short, Entry hold, each with certainty: each action's score is one agent's weight.
    votes = [
        AgentVote("fvg", (0.0, 0.0, 1.0), 1.0),
        AgentVote("momentum", (1.0, 0.0, 0.0), 1.0),
        AgentVote("entry", (0.0, 1.0, 0.0), 1.0),
    ]
    w_fvg, w_momentum, w_entry = DEFAULT_WEIGHTS[synergy_type]

    decision = aggregate(make_event(synergy_type), votes, CONFIG, "v1")

    assert decision.scores == pytest.approx((w_momentum, w_entry, w_fvg), abs=1e-12)
    assert decision.synergy_type is synergy_type


def test_default_weights_are_the_designed_ones() -> None:
    assert DEFAULT_WEIGHTS[SynergyType.TYPE_1] == (0.5, 0.3, 0.2)
    assert DEFAULT_WEIGHTS[SynergyType.TYPE_2] == (0.4, 0.4, 0.2)
    assert DEFAULT_WEIGHTS[SynergyType.TYPE_3] == (0.3, 0.5, 0.2)
    assert DEFAULT_WEIGHTS[SynergyType.TYPE_4] == (0.35, 0.35, 0.3)


def test_manual_events_weigh_agents_equally() -> None:
    votes = long_votes(0.9, 0.6, 0.45)  # equal weights: 0.65 → executes; TYPE_1 would give 0.72, TYPE_3 0.66

    decision = aggregate(make_event(SynergyType.MANUAL), votes, CONFIG, "v1")

    assert DEFAULT_WEIGHTS[SynergyType.MANUAL] == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert decision.scores[2] == pytest.approx(0.65, abs=1e-12)
    assert decision.execute


def test_the_synergy_type_changes_the_outcome() -> None:
    votes = long_votes(0.9, 0.5, 0.5)  # TYPE_1: .45+.15+.1 = .70; TYPE_3: .27+.25+.1 = .62

    assert aggregate(make_event(SynergyType.TYPE_1), votes, CONFIG, "v1").execute
    assert not aggregate(make_event(SynergyType.TYPE_3), votes, CONFIG, "v1").execute


def test_long_command_stops_below_and_takes_profit_above() -> None:
    decision = aggregate(make_event(price=4500.0, atr=5.0), long_votes(0.9, 0.9, 0.9), CONFIG, "model-7")

    command = decision.command
    assert command is not None
    assert (command.side, command.price, command.stop_loss, command.take_profit) == ("BUY", 4500.0, 4490.0, 4515.0)
    assert (command.order_type, command.time_in_force) == ("MARKET", "IOC")
    assert command.correlation_id == "cid-1"
    assert command.symbol == "ES"
    assert command.model_version == "model-7"


def test_short_command_stops_above_and_takes_profit_below() -> None:
    decision = aggregate(make_event(direction=-1, price=100.0, atr=1.5), short_votes(0.9, 0.9, 0.9), CONFIG, "m")

    command = decision.command
    assert command is not None
    assert (command.side, command.stop_loss, command.take_profit) == ("SELL", 103.0, 95.5)


def test_risk_multiples_are_configurable() -> None:
    config = AggregatorConfig(stop_loss_atr=1.0, take_profit_atr=4.0)

    command = aggregate(make_event(price=200.0, atr=2.0), long_votes(0.9, 0.9, 0.9), config, "m").command

    assert command is not None
    assert (command.stop_loss, command.take_profit) == (198.0, 208.0)


def test_zero_atr_cannot_place_a_stop_and_does_not_trade() -> None:
    decision = aggregate(make_event(atr=0.0), long_votes(0.9, 0.9, 0.9), CONFIG, "m")

    assert not decision.execute
    assert decision.command is None
    assert decision.reason.startswith("invalid risk: ")


def test_levels_that_overflow_to_infinity_do_not_trade() -> None:
    """A finite price and ATR whose 3 ATR overflows: a take-profit of inf is no order to send (a QA helper's)."""
    for direction, votes in ((1, long_votes), (-1, short_votes)):
        event = make_event(direction=direction, price=1.7e308, atr=5e307)
        decision = aggregate(event, votes(0.9, 0.9, 0.9), CONFIG, "m")
        assert not decision.execute and decision.command is None
        assert decision.reason.startswith("invalid risk: ")


@pytest.mark.parametrize("atr", [1e-320, 1e-14, 1e-13])
@pytest.mark.parametrize(("direction", "votes"), [(1, long_votes), (-1, short_votes)])
def test_an_atr_too_small_to_move_the_price_does_not_trade(
    atr: float, direction: int, votes: Callable[[float, float, float], list[AgentVote]]
) -> None:
    """At 4,500 an ATR below ~1e-13 leaves price ± 2·ATR equal to the price: an order whose stop-loss and take-profit
    are its own entry price. It holds instead, as a zero ATR does."""
    decision = aggregate(make_event(direction=direction, price=4500.0, atr=atr), votes(0.9, 0.9, 0.9), CONFIG, "m")

    assert not decision.execute
    assert decision.command is None
    assert decision.reason.startswith("invalid risk: ")


@given(price=st.floats(1e-6, 1e9), atr=st.floats(1e-300, 1e6), direction=st.sampled_from([1, -1]))
def test_every_command_stops_on_the_losing_side_and_takes_profit_on_the_winning_one(
    price: float, atr: float, direction: int
) -> None:
    votes = long_votes(0.9, 0.9, 0.9) if direction == 1 else short_votes(0.9, 0.9, 0.9)
    command = aggregate(make_event(direction=direction, price=price, atr=atr), votes, CONFIG, "m").command

    if command is not None:
        if command.side == "BUY":
            assert 0 < command.stop_loss < command.price < command.take_profit
        else:
            assert 0 < command.take_profit < command.price < command.stop_loss


def test_quantity_runs_from_min_at_the_bar_to_max_at_certainty() -> None:
    assert order_quantity(0.65, 0.65, CONFIG) == 1
    assert order_quantity(0.6499999999999999, 0.65, CONFIG) == 1
    assert order_quantity(1.0, 0.65, CONFIG) == 10
    assert order_quantity(0.825, 0.65, CONFIG) == 5  # halfway: 1 + floor(4.5)
    assert order_quantity(0.95, 0.95, CONFIG) == 1
    assert order_quantity(1.0, 1.0, CONFIG) == 10
    quantities = [order_quantity(s, 0.65, CONFIG) for s in np.linspace(0.65, 1.0, 200)]
    assert quantities == sorted(quantities)


@pytest.mark.parametrize("probabilities", [*EXACTLY_065, (1.0, 1.0, 1.0), (0.8, 0.7, 0.66)])
def test_executed_orders_never_have_quantity_zero(probabilities: tuple[float, float, float]) -> None:
    for config in (CONFIG, AggregatorConfig(min_quantity=1, max_quantity=1), AggregatorConfig(max_quantity=3)):
        decision = aggregate(make_event(), long_votes(*probabilities), config, "m")
        assert decision.command is not None
        assert config.min_quantity <= decision.command.quantity <= config.max_quantity


def test_a_certain_vote_trades_the_configured_maximum() -> None:
    config = AggregatorConfig(min_quantity=2, max_quantity=7)

    command = aggregate(make_event(), long_votes(1.0, 1.0, 1.0), config, "m").command

    assert command is not None and command.quantity == 7


def test_decision_records_votes_scores_and_event_fields() -> None:
    votes = [
        AgentVote("entry", (0.1, 0.2, 0.7), 0.5),
        AgentVote("fvg", (0.1, 0.1, 0.8), 0.7),
        AgentVote("momentum", (0.2, 0.2, 0.6), 0.6),
    ]

    decision = aggregate(make_event(SynergyType.TYPE_2, correlation_id="abc"), votes, CONFIG, "m")

    assert [v.agent for v in decision.votes] == list(AGENT_NAMES)
    assert decision.scores == pytest.approx((0.14, 0.16, 0.70))
    assert decision.correlation_id == "abc"
    assert decision.direction == 1
    assert decision.score == decision.scores[Action.LONG.index]


def test_missing_or_unknown_agents_are_refused() -> None:
    votes = long_votes(0.9, 0.9, 0.9)
    with pytest.raises(AggregationError, match=r"no vote from agent.*entry"):
        aggregate(make_event(), votes[:2], CONFIG, "m")
    with pytest.raises(AggregationError, match="unknown agent 'risk'"):
        aggregate(make_event(), [*votes, AgentVote("risk", (0, 1, 0), 1.0)], CONFIG, "m")
    with pytest.raises(AggregationError, match="two votes from agent 'fvg'"):
        aggregate(make_event(), [*votes, votes[0]], CONFIG, "m")


def test_non_finite_probabilities_are_refused() -> None:
    votes = long_votes(0.9, 0.9, 0.9)
    votes[1] = AgentVote("momentum", (float("nan"), 0.5, 0.5), 0.9)
    with pytest.raises(AggregationError, match="momentum"):
        aggregate(make_event(), votes, CONFIG, "m")
    for size in (1, PYTHON_SCORING_MAX_BATCH + 1):  # scored in Python floats, then with numpy
        probabilities = np.full((size, 3, 3), 1 / 3)
        probabilities[-1, 2, 1] = np.inf
        events = [make_event(correlation_id=f"cid-{i}") for i in range(size)]
        with pytest.raises(AggregationError, match=f"non-finite probability for event 'cid-{size - 1}'"):
            aggregate_batch(events, probabilities, np.ones((size, 3)), CONFIG, "m")


def test_batch_shapes_are_checked() -> None:
    with pytest.raises(AggregationError, match=r"expected \(2, 3, 3\)"):
        aggregate_batch([make_event(), make_event()], np.zeros((1, 3, 3)), np.zeros((1, 3)), CONFIG, "m")
    with pytest.raises(AggregationError, match="confidence"):
        aggregate_batch([make_event()], np.zeros((1, 3, 3)), np.zeros((1, 2)), CONFIG, "m")
    assert aggregate_batch([], np.zeros((0, 3, 3)), np.zeros((0, 3)), CONFIG, "m") == []


def _random_batch(rng: np.random.Generator, size: int) -> tuple[list[SynergyEvent], np.ndarray, np.ndarray]:
    types = list(SynergyType)
    events = [
        make_event(
            types[int(rng.integers(len(types)))],
            int(rng.choice([-1, 1])),
            price=float(rng.uniform(10, 5000)),
            atr=float(rng.uniform(0.1, 20)),
            correlation_id=f"cid-{i}",
        )
        for i in range(size)
    ]
    kind = rng.integers(3, size=size)
    dirichlet = rng.dirichlet([0.3, 0.3, 0.3], size=(size, 3))
    # Coarse probabilities (multiples of 0.05) make exact thresholds and ties common.
    coarse = rng.integers(0, 21, size=(size, 3, 3)).astype(np.float64)
    coarse = np.round(coarse / np.maximum(coarse.sum(axis=2, keepdims=True), 1) * 20) / 20
    confident = np.zeros((size, 3, 3))
    confident[np.arange(size)[:, None], np.arange(3)[None, :], rng.integers(3, size=(size, 3))] = 1.0
    probabilities = np.where(
        (kind == 0)[:, None, None], dirichlet, np.where((kind == 1)[:, None, None], coarse, confident)
    )
    confidence = rng.uniform(0, 1, size=(size, 3))
    return events, probabilities, confidence


def _votes_of(probabilities: np.ndarray, confidence: np.ndarray, row: int) -> list[AgentVote]:
    return [
        AgentVote(agent, tuple(float(p) for p in probabilities[row, a]), float(confidence[row, a]))  # type: ignore[arg-type]
        for a, agent in enumerate(AGENT_NAMES)
    ]


@pytest.mark.parametrize("seed", range(4))
def test_batch_gives_exactly_the_per_event_decisions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    events, probabilities, confidence = _random_batch(rng, 100)
    config = AggregatorConfig(counter_direction_threshold=0.8) if seed % 2 else CONFIG

    batch = aggregate_batch(events, probabilities, confidence, config, "m")
    one_by_one = [
        aggregate(event, _votes_of(probabilities, confidence, i), config, "m") for i, event in enumerate(events)
    ]

    assert batch == one_by_one
    outcomes = {d.reason.split(":")[0] for d in batch}
    assert {"executed", "below threshold", "tie"} <= outcomes  # the random inputs reach the interesting branches


def test_small_batches_scored_in_python_match_the_vectorised_scoring_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    events, probabilities, confidence = _random_batch(rng, 64)
    p32, c32 = probabilities.astype(np.float32), confidence.astype(np.float32)  # as the agents give them
    vectorised = aggregate_batch(events, p32, c32, CONFIG, "m")

    small = []
    for start in range(0, 64, PYTHON_SCORING_MAX_BATCH):
        end = start + PYTHON_SCORING_MAX_BATCH
        small += aggregate_batch(events[start:end], p32[start:end], c32[start:end], CONFIG, "m")

    assert small == vectorised
    assert [d.scores for d in small] == [d.scores for d in vectorised]


def test_batch_accepts_float32_agent_output() -> None:
    rng = np.random.default_rng(11)
    events, probabilities, confidence = _random_batch(rng, 50)
    p32, c32 = probabilities.astype(np.float32), confidence.astype(np.float32)

    batch = aggregate_batch(events, p32, c32, CONFIG, "m")

    assert batch == [aggregate(e, _votes_of(p32, c32, i), CONFIG, "m") for i, e in enumerate(events)]


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"weights": {**DEFAULT_WEIGHTS, SynergyType.TYPE_2: (0.5, 0.5, 0.5)}}, "weights[TYPE_2]"),
        ({"weights": {**DEFAULT_WEIGHTS, SynergyType.TYPE_1: (1.2, -0.2, 0.0)}}, "weights[TYPE_1]"),
        ({"weights": {**DEFAULT_WEIGHTS, SynergyType.TYPE_1: (0.5, 0.5)}}, "weights[TYPE_1]"),
        ({"weights": {**DEFAULT_WEIGHTS, SynergyType.TYPE_4: (float("nan"), 0.5, 0.5)}}, "weights[TYPE_4]"),
        ({"weights": {t: w for t, w in DEFAULT_WEIGHTS.items() if t is not SynergyType.MANUAL}}, "weights"),
        ({"weights": dict(DEFAULT_WEIGHTS) | {"TYPE_9": (1.0, 0.0, 0.0)}}, "weights"),
        ({"execution_threshold": 0.0}, "execution_threshold"),
        ({"execution_threshold": 1.01}, "execution_threshold"),
        ({"execution_threshold": float("nan")}, "execution_threshold"),
        ({"counter_direction_threshold": 1.5}, "counter_direction_threshold"),
        ({"counter_direction_threshold": 0.6}, "counter_direction_threshold"),
        ({"min_quantity": 0}, "min_quantity"),
        ({"max_quantity": 0}, "max_quantity"),
        ({"min_quantity": 5, "max_quantity": 4}, "max_quantity"),
        ({"stop_loss_atr": 0.0}, "stop_loss_atr"),
        ({"take_profit_atr": -3.0}, "take_profit_atr"),
        ({"take_profit_atr": float("inf")}, "take_profit_atr"),
    ],
)
def test_invalid_configs_are_rejected_naming_the_setting(changes: dict, setting: str) -> None:
    with pytest.raises(AggregatorConfigError) as raised:
        AggregatorConfig(**changes)
    assert raised.value.setting == setting
    assert str(raised.value).startswith(f"{setting}: ")


def test_weights_within_the_sum_tolerance_are_accepted() -> None:
    config = AggregatorConfig(weights={**DEFAULT_WEIGHTS, SynergyType.TYPE_1: (0.5, 0.3, 0.2000005)})
    assert config.weights_for(SynergyType.TYPE_1) == (0.5, 0.3, 0.2000005)


def test_weights_can_be_keyed_by_the_wire_name() -> None:
    weights = {t.value: w for t, w in DEFAULT_WEIGHTS.items()}
    # The field's type is the validated table (keyed by SynergyType); the constructor also takes wire names.
    assert AggregatorConfig(weights=weights) == CONFIG  # type: ignore[arg-type]


def test_config_weights_cannot_be_changed_after_construction() -> None:
    with pytest.raises(TypeError):
        CONFIG.weights[SynergyType.TYPE_1] = (1.0, 0.0, 0.0)  # type: ignore[index]


def test_from_env_without_variables_is_the_default() -> None:
    assert AggregatorConfig.from_env({}) == CONFIG


def test_from_env_reads_every_variable() -> None:
    config = AggregatorConfig.from_env(
        {
            "TACTICAL_WEIGHTS_TYPE_1": "0.6, 0.2, 0.2",
            "TACTICAL_WEIGHTS_MANUAL": "0.5,0.25,0.25",
            "TACTICAL_EXECUTION_THRESHOLD": "0.7",
            "TACTICAL_COUNTER_DIRECTION_THRESHOLD": "0.9",
            "TACTICAL_MAX_QUANTITY": "4",
            "TACTICAL_MIN_QUANTITY": "2",
            "TACTICAL_STOP_LOSS_ATR": "1.5",
            "TACTICAL_TAKE_PROFIT_ATR": "2.5",
        }
    )

    assert config.weights_for(SynergyType.TYPE_1) == (0.6, 0.2, 0.2)
    assert config.weights_for(SynergyType.MANUAL) == (0.5, 0.25, 0.25)
    assert config.weights_for(SynergyType.TYPE_2) == DEFAULT_WEIGHTS[SynergyType.TYPE_2]
    assert (config.execution_threshold, config.counter_direction_threshold) == (0.7, 0.9)
    assert (config.min_quantity, config.max_quantity) == (2, 4)
    assert (config.stop_loss_atr, config.take_profit_atr) == (1.5, 2.5)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TACTICAL_WEIGHTS_TYPE_3", "0.3,0.5"),
        ("TACTICAL_WEIGHTS_TYPE_3", "0.3,0.5,x"),
        ("TACTICAL_WEIGHTS_TYPE_3", "0.3,0.5,0.5"),
        ("TACTICAL_EXECUTION_THRESHOLD", "high"),
        ("TACTICAL_EXECUTION_THRESHOLD", "1.5"),
        ("TACTICAL_COUNTER_DIRECTION_THRESHOLD", "0.5"),
        ("TACTICAL_MAX_QUANTITY", "2.5"),
        ("TACTICAL_MAX_QUANTITY", "0"),
        ("TACTICAL_STOP_LOSS_ATR", "-1"),
        ("TACTICAL_TAKE_PROFIT_ATR", "nan"),
    ],
)
def test_from_env_names_the_variable_at_fault(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"^{variable}: ") as raised:
        AggregatorConfig.from_env({variable: value})
    assert isinstance(raised.value, AggregatorConfigError)
