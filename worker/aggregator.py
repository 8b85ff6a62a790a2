"""The weighted vote: three agents' probabilities in, one decision (and maybe an execution command) out.

Score of an action = Σ weightᵢ·pᵢ(action) over the agents [FVG, Momentum, Entry], with the weights of the event's
synergy type. The decision executes iff the top action is long or short, is alone at the top, its score reaches
`execution_threshold`, and it agrees with the event's direction — against it only at `counter_direction_threshold`.

Float care: every comparison of a score with a threshold or with another score allows `SCORE_TOLERANCE` (1e-9),
so a score that is 0.65 in exact arithmetic (e.g. .5·.7 + .3·.6 + .2·.6) executes although its float may be
0.6499999999999999, and two scores within 1e-9 of each other are a tie. Agents' probabilities are float32 at
best (~1e-7), so nothing meaningful is lost.

Quantity: linear in how far the score clears the bar it had to clear (`execution_threshold` with the direction,
`counter_direction_threshold` against it): `min_quantity` at the bar, `max_quantity` at a score of 1, rounded
down in between — a barely convincing vote trades the minimum, an unanimous one the configured maximum risk.
Executed orders therefore never have quantity 0.

`Decision.reason` starts with a stable category an operator can group by — `executed:`, `hold:`, `tie:`,
`below threshold:`, `against direction:`, `invalid risk:` — followed by the numbers that decided it. Every score in a
reason is `shown_score`: cut to 3 decimals, never rounded up, so a score that did not reach its bar never reads as
if it met it, and a view that shows the score beside its reason (`tacticalctl up`) shows the same figure.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NoReturn

import numpy as np

from worker.actions import ACTION_ORDER, AGENT_NAMES, Action
from worker.records import AgentVote, Decision, ExecutionCommand, SynergyEvent, SynergyType

SCORE_TOLERANCE = 1e-9
WEIGHT_SUM_TOLERANCE = 1e-6

DEFAULT_WEIGHTS: Mapping[SynergyType, tuple[float, float, float]] = MappingProxyType(
    {
        SynergyType.TYPE_1: (0.5, 0.3, 0.2),
        SynergyType.TYPE_2: (0.4, 0.4, 0.2),
        SynergyType.TYPE_3: (0.3, 0.5, 0.2),
        SynergyType.TYPE_4: (0.35, 0.35, 0.3),
        SynergyType.MANUAL: (1 / 3, 1 / 3, 1 / 3),
    }
)

# The order tied actions are named in, each with its index into the scores.
_TIE_ORDER = tuple((action, action.index) for action in (Action.LONG, Action.SHORT, Action.HOLD))


class AggregatorConfigError(ValueError):
    """The vote's configuration is unusable; `setting` names the field (or environment variable) at fault."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.detail = message


class AggregationError(ValueError):
    """The agents' output cannot be aggregated (missing agent, wrong shape, non-finite probability)."""


@dataclass(frozen=True)
class AggregatorConfig:
    weights: Mapping[SynergyType, tuple[float, float, float]] = field(default_factory=lambda: DEFAULT_WEIGHTS)
    execution_threshold: float = 0.65
    counter_direction_threshold: float = 0.95
    max_quantity: int = 10
    min_quantity: int = 1
    stop_loss_atr: float = 2.0
    take_profit_atr: float = 3.0
    _weight_table: np.ndarray = field(init=False, repr=False, compare=False)
    _weight_row: Mapping[SynergyType, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        weights = _validated_weights(self.weights)
        object.__setattr__(self, "weights", MappingProxyType(weights))
        object.__setattr__(self, "_weight_row", MappingProxyType({t: i for i, t in enumerate(SynergyType)}))
        table = np.array([weights[t] for t in SynergyType], dtype=np.float64)
        table.setflags(write=False)
        object.__setattr__(self, "_weight_table", table)

        for name in ("execution_threshold", "counter_direction_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 < value <= 1.0):
                raise AggregatorConfigError(name, f"{value!r} must be in (0, 1]")
        if self.counter_direction_threshold < self.execution_threshold:
            raise AggregatorConfigError(
                "counter_direction_threshold",
                f"{self.counter_direction_threshold!r} is below execution_threshold {self.execution_threshold!r}:"
                " trading against the synergy direction must need more agreement, not less",
            )
        for name in ("min_quantity", "max_quantity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AggregatorConfigError(name, f"{value!r} must be an integer >= 1")
        if self.max_quantity < self.min_quantity:
            raise AggregatorConfigError(
                "max_quantity", f"{self.max_quantity} is below min_quantity {self.min_quantity}"
            )
        for name in ("stop_loss_atr", "take_profit_atr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise AggregatorConfigError(name, f"{value!r} must be a finite number > 0 (multiples of ATR)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AggregatorConfig:
        """Defaults overridden by `TACTICAL_WEIGHTS_<TYPE>="fvg,momentum,entry"` and the scalar variables below."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        weights = dict(DEFAULT_WEIGHTS)
        for synergy_type in SynergyType:
            variable = weights_variable(synergy_type)
            raw = environ.get(variable)
            if raw:
                weights[synergy_type] = _parse_weights(variable, raw)
        values["weights"] = weights
        for name, (variable, kind) in _SCALAR_VARIABLES.items():
            raw = environ.get(variable)
            if raw:
                values[name] = _parse_scalar(variable, raw, kind)
        try:
            return cls(**values)  # type: ignore[arg-type]
        except AggregatorConfigError as error:
            raise AggregatorConfigError(_variable_for(error.setting), error.detail) from None

    def weights_for(self, synergy_type: SynergyType) -> tuple[float, float, float]:
        return self.weights[synergy_type]

    def weight_matrix(self, synergy_types: Sequence[SynergyType]) -> np.ndarray:
        """(len(synergy_types), agents) float64: each row the weights of that synergy type."""
        rows = np.fromiter((self._weight_row[t] for t in synergy_types), dtype=np.intp, count=len(synergy_types))
        return self._weight_table[rows]


def weights_variable(synergy_type: SynergyType) -> str:
    return f"TACTICAL_WEIGHTS_{synergy_type.value.upper()}"


_SCALAR_VARIABLES: Mapping[str, tuple[str, type]] = MappingProxyType(
    {
        "execution_threshold": ("TACTICAL_EXECUTION_THRESHOLD", float),
        "counter_direction_threshold": ("TACTICAL_COUNTER_DIRECTION_THRESHOLD", float),
        "max_quantity": ("TACTICAL_MAX_QUANTITY", int),
        "min_quantity": ("TACTICAL_MIN_QUANTITY", int),
        "stop_loss_atr": ("TACTICAL_STOP_LOSS_ATR", float),
        "take_profit_atr": ("TACTICAL_TAKE_PROFIT_ATR", float),
    }
)


def _variable_for(setting: str) -> str:
    if setting in _SCALAR_VARIABLES:
        return _SCALAR_VARIABLES[setting][0]
    if setting.startswith("weights["):
        return weights_variable(SynergyType(setting[len("weights[") : -1]))
    return setting


def _parse_scalar(variable: str, raw: str, kind: type) -> float | int:
    try:
        return kind(raw.strip())
    except ValueError:
        raise AggregatorConfigError(variable, f"{raw!r} is not a valid {kind.__name__}") from None


def _parse_weights(variable: str, raw: str) -> tuple[float, float, float]:
    parts = raw.split(",")
    if len(parts) != len(AGENT_NAMES):
        raise AggregatorConfigError(
            variable, f"{raw!r} must be {len(AGENT_NAMES)} comma-separated weights ({','.join(AGENT_NAMES)})"
        )
    try:
        a, b, c = (float(part) for part in parts)
    except ValueError:
        raise AggregatorConfigError(variable, f"{raw!r} has a weight that is not a number") from None
    return (a, b, c)


def _validated_weights(
    weights: Mapping[SynergyType, Sequence[float]] | Mapping[str, Sequence[float]],
) -> dict[SynergyType, tuple[float, float, float]]:
    result: dict[SynergyType, tuple[float, float, float]] = {}
    for key, row in weights.items():
        try:
            synergy_type = SynergyType(key)
        except ValueError:
            raise AggregatorConfigError("weights", f"unknown synergy type {key!r}") from None
        setting = f"weights[{synergy_type.value}]"
        values = tuple(float(w) for w in row)
        if len(values) != len(AGENT_NAMES):
            raise AggregatorConfigError(setting, f"{values} must have one weight per agent {AGENT_NAMES}")
        if not all(math.isfinite(w) and w >= 0.0 for w in values):
            raise AggregatorConfigError(setting, f"{values} must all be finite and >= 0")
        total = math.fsum(values)
        if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise AggregatorConfigError(setting, f"{values} sum to {total!r}, expected 1 (±{WEIGHT_SUM_TOLERANCE:g})")
        result[synergy_type] = (values[0], values[1], values[2])
    missing = [t.value for t in SynergyType if t not in result]
    if missing:
        raise AggregatorConfigError("weights", f"no weights for synergy type(s) {', '.join(missing)}")
    return result


# Batches up to this size are scored in Python floats: at batch 1 that is 3x cheaper than numpy's per-call overhead.
PYTHON_SCORING_MAX_BATCH = 4


def aggregate(
    event: SynergyEvent, votes: Sequence[AgentVote], config: AggregatorConfig, model_version: str
) -> Decision:
    """The decision for one event from its three agents' votes (any order, one per agent)."""
    ordered = _votes_in_agent_order(votes)
    w_fvg, w_momentum, w_entry = config.weights_for(event.synergy_type)
    p_fvg, p_momentum, p_entry = (_finite_probabilities(vote) for vote in ordered)
    scores = _weighted_scores((w_fvg, w_momentum, w_entry), p_fvg, p_momentum, p_entry)
    return _decide(event, scores, ordered, config, model_version)


def _weighted_scores(
    weights: tuple[float, float, float], p_fvg: Sequence[float], p_momentum: Sequence[float], p_entry: Sequence[float]
) -> tuple[float, float, float]:
    # Same operations in the same order as aggregate_batch's vectorised scoring, so both give bit-identical scores.
    w_fvg, w_momentum, w_entry = weights
    return (
        w_fvg * p_fvg[0] + w_momentum * p_momentum[0] + w_entry * p_entry[0],
        w_fvg * p_fvg[1] + w_momentum * p_momentum[1] + w_entry * p_entry[1],
        w_fvg * p_fvg[2] + w_momentum * p_momentum[2] + w_entry * p_entry[2],
    )


def aggregate_batch(
    events: Sequence[SynergyEvent],
    probabilities: np.ndarray,
    confidence: np.ndarray,
    config: AggregatorConfig,
    model_version: str,
) -> list[Decision]:
    """Decisions for a batch: probabilities (B, agents in AGENT_NAMES order, actions), confidence (B, agents).

    Gives exactly the decisions `aggregate` gives event by event; the scoring is vectorised above
    PYTHON_SCORING_MAX_BATCH events.
    """
    count = len(events)
    n_agents, n_actions = len(AGENT_NAMES), len(ACTION_ORDER)
    probs = np.asarray(probabilities, dtype=np.float64)
    conf = np.asarray(confidence, dtype=np.float64)
    if probs.shape != (count, n_agents, n_actions):
        raise AggregationError(
            f"probabilities have shape {probs.shape}, expected {(count, n_agents, n_actions)} for {count} events"
        )
    if conf.shape != (count, n_agents):
        raise AggregationError(f"confidence has shape {conf.shape}, expected {(count, n_agents)}")
    if count == 0:
        return []
    prob_rows = probs.tolist()
    conf_rows = conf.tolist()
    if count <= PYTHON_SCORING_MAX_BATCH:
        # A few events: Python floats, same arithmetic (same bits), without a dozen numpy calls' fixed cost.
        if not all(math.isfinite(p) for row in prob_rows for agent in row for p in agent):
            _refuse_non_finite(events, probs)
        score_rows = [
            _weighted_scores(config.weights_for(event.synergy_type), *rows)
            for event, rows in zip(events, prob_rows, strict=True)
        ]
    else:
        if not np.isfinite(probs).all():
            _refuse_non_finite(events, probs)
        weights = config.weight_matrix([event.synergy_type for event in events])
        scores = (weights[:, 0:1] * probs[:, 0, :] + weights[:, 1:2] * probs[:, 1, :]
                  + weights[:, 2:3] * probs[:, 2, :])
        score_rows = scores.tolist()
    fvg, momentum, entry = AGENT_NAMES
    decisions = []
    for event, score_row, (p_fvg, p_momentum, p_entry), (c_fvg, c_momentum, c_entry) in zip(
        events, score_rows, prob_rows, conf_rows, strict=True
    ):
        votes = (
            AgentVote(fvg, tuple(p_fvg), c_fvg),  # type: ignore[arg-type]
            AgentVote(momentum, tuple(p_momentum), c_momentum),  # type: ignore[arg-type]
            AgentVote(entry, tuple(p_entry), c_entry),  # type: ignore[arg-type]
        )
        decisions.append(_decide(event, tuple(score_row), votes, config, model_version))  # type: ignore[arg-type]
    return decisions


def _refuse_non_finite(events: Sequence[SynergyEvent], probs: np.ndarray) -> NoReturn:
    bad = int(np.flatnonzero(~np.isfinite(probs).reshape(len(events), -1).all(axis=1))[0])
    raise AggregationError(f"non-finite probability for event {events[bad].correlation_id!r}: {probs[bad].tolist()}")


def _votes_in_agent_order(votes: Sequence[AgentVote]) -> tuple[AgentVote, ...]:
    by_agent: dict[str, AgentVote] = {}
    for vote in votes:
        if vote.agent not in AGENT_NAMES:
            raise AggregationError(f"vote from unknown agent {vote.agent!r}; agents are {AGENT_NAMES}")
        if vote.agent in by_agent:
            raise AggregationError(f"two votes from agent {vote.agent!r}")
        by_agent[vote.agent] = vote
    missing = [name for name in AGENT_NAMES if name not in by_agent]
    if missing:
        raise AggregationError(f"no vote from agent(s) {', '.join(missing)}")
    return tuple(by_agent[name] for name in AGENT_NAMES)


def _finite_probabilities(vote: AgentVote) -> tuple[float, float, float]:
    if len(vote.probabilities) != len(ACTION_ORDER):
        raise AggregationError(f"agent {vote.agent!r} gave {len(vote.probabilities)} probabilities, expected 3")
    values = (float(vote.probabilities[0]), float(vote.probabilities[1]), float(vote.probabilities[2]))
    if not all(math.isfinite(p) for p in values):
        raise AggregationError(f"agent {vote.agent!r} gave non-finite probabilities {values}")
    return values


def _decide(
    event: SynergyEvent,
    scores: tuple[float, float, float],
    votes: tuple[AgentVote, ...],
    config: AggregatorConfig,
    model_version: str,
) -> Decision:
    def decision(action: Action, execute: bool, reason: str, command: ExecutionCommand | None = None) -> Decision:
        return Decision(
            correlation_id=event.correlation_id,
            synergy_type=event.synergy_type,
            direction=event.direction,
            action=action,
            score=scores[action.index],
            scores=scores,
            execute=execute,
            reason=reason,
            votes=votes,
            command=command,
        )

    best = max(scores)
    top = [action for action, index in _TIE_ORDER if scores[index] >= best - SCORE_TOLERANCE]
    if len(top) > 1:
        names = " = ".join(action.label for action in top)
        return decision(Action.HOLD, False, f"tie: {names} at {shown_score(best)}")
    action = top[0]
    score = scores[action.index]
    name = action.label
    if action is Action.HOLD:
        return decision(action, False, f"hold: top action is hold ({shown_score(score)})")

    with_direction = action == event.direction  # an IntEnum: its value is the direction it trades in
    bar = config.execution_threshold if with_direction else config.counter_direction_threshold
    if score < bar - SCORE_TOLERANCE:
        category = "below threshold" if with_direction else "against direction"
        return decision(action, False, f"{category}: {name} {shown_score(score)} < {bar:g}")

    stop_loss, take_profit = _risk_levels(action, event.price, event.atr, config)
    if not _risk_levels_valid(action, event.price, stop_loss, take_profit):
        return decision(
            action,
            False,
            f"invalid risk: {name} at price {event.price!r} atr {event.atr!r} gives stop-loss {stop_loss!r}"
            f" take-profit {take_profit!r}",
        )
    command = ExecutionCommand(
        correlation_id=event.correlation_id,
        symbol=event.symbol,
        side="BUY" if action is Action.LONG else "SELL",
        quantity=order_quantity(score, bar, config),
        price=event.price,
        stop_loss=stop_loss,
        take_profit=take_profit,
        model_version=model_version,
        order_type="MARKET",
        time_in_force="IOC",
    )
    relation = "with direction" if with_direction else "against direction"
    return decision(action, True, f"executed: {name} {shown_score(score)} >= {bar:g} {relation}", command)


def order_quantity(score: float, bar: float, config: AggregatorConfig) -> int:
    """`min_quantity` at the bar, `max_quantity` at score 1, linear and rounded down in between."""
    span = config.max_quantity - config.min_quantity
    fraction = 1.0 if bar >= 1.0 else (score - bar) / (1.0 - bar)
    fraction = min(max(fraction, 0.0), 1.0)
    return config.min_quantity + math.floor(fraction * span + SCORE_TOLERANCE)


def _risk_levels(action: Action, price: float, atr: float, config: AggregatorConfig) -> tuple[float, float]:
    """(stop-loss, take-profit): long stops below and takes profit above the price; short the reverse."""
    stop_distance = config.stop_loss_atr * atr
    profit_distance = config.take_profit_atr * atr
    if action is Action.LONG:
        return price - stop_distance, price + profit_distance
    return price + stop_distance, price - profit_distance


def _risk_levels_valid(action: Action, price: float, stop_loss: float, take_profit: float) -> bool:
    """Both levels above 0 and on their own side of the price: a long stops below it and takes profit above it, a
    short the reverse. An ATR too small to move the price in floating point (1e-13 at 4,500) puts both on the entry
    price: an order whose stop fills at once."""
    if not (0.0 < stop_loss < math.inf and 0.0 < take_profit < math.inf):  # 3 ATR can overflow a finite price
        return False
    if action is Action.LONG:
        return stop_loss < price < take_profit
    return take_profit < price < stop_loss


def shown_score(score: float) -> str:
    """A score as reasons and views show it: 3 decimals, cut. The vote's own tolerance is added first, so a score that
    executed at the bar within it (0.6499999999999999 for 0.65) reads as the bar, while one below the bar — below it
    by more than the tolerance — still reads below it."""
    return cut_decimals(score + SCORE_TOLERANCE, 3)


def cut_decimals(value: float, decimals: int) -> str:
    """A non-negative `value` with `decimals` decimals, cut rather than rounded: never more than it is."""
    text = f"{value:.12f}"
    return text[: text.index(".") + 1 + decimals]
