"""The training environment: synergy events, the agents' votes, the worker's vote, and what the trade earned.

Each step is one SYNERGY_DETECTED event with its 60×7 matrix, exactly as the worker receives it (from the simulator
or from replayed CSV bars, through `models.synergy`). The three agents vote; `worker.aggregator.aggregate_batch` —
the function the worker runs — turns the votes into a decision, and the decision's execution command (side, price,
stop-loss, take-profit) is the trade. Votes are agents' probability vectors: the worker passes its agents' softmax
outputs; during training each agent samples one action and votes it with probability 1 (a one-hot vote), whose
expected score is the worker's score of the same agents.

The trade, per contract, entered at the event's price (the synergy bar's close):
  * it exits on the first following bar that reaches the stop-loss (at the stop, or at that bar's open if the bar
    opened beyond it) or the take-profit (at the take-profit); a bar that reaches both counts as the stop, since
    5-minute bars do not say which came first;
  * otherwise at the close `max_holding_bars` bars after entry (24 bars = 2 hours, the label horizon of the
    supervised pre-training);
  * gross PnL = side × (exit − entry) price points; costs = `spread` (the full bid-ask spread, paid half on entry
    and half on exit) + `commission` (per contract, round trip, in price points); net PnL = gross − costs.
Reward = net PnL / (the stop-loss distance, `stop_loss_atr` × ATR): the trade's outcome in units of the risk it
took (an "R multiple"), so a quiet market and a wild one weigh alike. No trade, reward 0.

The market does not react to the agents (a decision never changes later bars or events), so consecutive events of
a market are an episode only in time order; `models.mappo` says how it uses that.
Events whose following `max_holding_bars` bars are not all known are left out: their outcome cannot be scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from models.bars import Bars
from models.dataset import SYNERGY_TYPES, LabelConfig, forward_labels
from models.features import average_true_range, build_features
from models.simulator import SimulatorConfig, simulate_bars
from models.synergy import ATR_PERIOD, detected_synergy_events
from worker.actions import ACTION_ORDER, AGENT_NAMES, Action
from worker.aggregator import AggregatorConfig, aggregate_batch
from worker.records import MATRIX_SHAPE, Decision, SynergyEvent

N_AGENTS = len(AGENT_NAMES)
N_ACTIONS = len(ACTION_ORDER)
CONTEXT_WIDTH = len(SYNERGY_TYPES) + 1  # synergy type one-hot, then direction


class EnvironmentConfigError(ValueError):
    """An environment setting is unusable; the message names it and the accepted range."""


@dataclass(frozen=True)
class EnvironmentConfig:
    max_holding_bars: int = 24
    spread: float = 0.25  # price points: one tick of an index future
    commission: float = 0.10  # price points per contract, round trip
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)  # what "the market moved" means for accuracy

    def __post_init__(self) -> None:
        if self.max_holding_bars < 1:
            raise EnvironmentConfigError(f"max_holding_bars must be >= 1, got {self.max_holding_bars}")
        if not (np.isfinite(self.spread) and self.spread >= 0):
            raise EnvironmentConfigError(f"spread must be a finite number of price points >= 0, got {self.spread}")
        if not (np.isfinite(self.commission) and self.commission >= 0):
            raise EnvironmentConfigError(
                f"commission must be a finite number of price points >= 0, got {self.commission}"
            )

    @property
    def cost_per_trade(self) -> float:
        return self.spread + self.commission

    def as_json(self) -> dict:
        aggregator = self.aggregator
        return {
            "max_holding_bars": self.max_holding_bars,
            "spread": self.spread,
            "commission": self.commission,
            "stop_loss_atr": aggregator.stop_loss_atr,
            "take_profit_atr": aggregator.take_profit_atr,
            "execution_threshold": aggregator.execution_threshold,
            "counter_direction_threshold": aggregator.counter_direction_threshold,
            "label": {"horizon": self.labels.horizon, "atr_multiple": self.labels.atr_multiple},
            "reward": "net PnL per contract / (stop_loss_atr x ATR), 0 without a trade",
        }

    @classmethod
    def from_json(cls, data: dict) -> EnvironmentConfig:
        """The config `as_json` recorded (in a manifest), so a bundle is evaluated the way it was trained."""
        try:
            return cls(
                max_holding_bars=int(data["max_holding_bars"]),
                spread=float(data["spread"]),
                commission=float(data["commission"]),
                aggregator=AggregatorConfig(
                    stop_loss_atr=float(data["stop_loss_atr"]),
                    take_profit_atr=float(data["take_profit_atr"]),
                    execution_threshold=float(data["execution_threshold"]),
                    counter_direction_threshold=float(data["counter_direction_threshold"]),
                ),
                labels=LabelConfig(
                    horizon=int(data["label"]["horizon"]), atr_multiple=float(data["label"]["atr_multiple"])
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EnvironmentConfigError(f"recorded environment {data!r} is incomplete or invalid ({exc})") from None


@dataclass(frozen=True, eq=False)
class MarketEvents:
    """The scorable synergy events of one market, in time order, with the bars that follow each of them."""

    name: str
    events: tuple[SynergyEvent, ...]
    matrices: np.ndarray  # (N, 60, 7) float32
    synergy_index: np.ndarray  # (N,) int8 index into SYNERGY_TYPES
    direction: np.ndarray  # (N,) int8 +1 / -1
    price: np.ndarray  # (N,) float64
    atr: np.ndarray  # (N,) float64
    timestamps: np.ndarray  # (N,) datetime64[s] bar close
    following: np.ndarray  # (N, max_holding_bars, 4) float64 open, high, low, close of the bars after the event
    labels: np.ndarray  # (N,) int64 action index of where the market went (LabelConfig), for accuracy
    context: np.ndarray  # (N, CONTEXT_WIDTH) float32: what the critic knows besides the matrix

    def __len__(self) -> int:
        return len(self.events)


def event_context(synergy_index: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Synergy type one-hot and direction: what the event says besides its matrix."""
    context = np.zeros((synergy_index.shape[0], CONTEXT_WIDTH), dtype=np.float32)
    context[np.arange(synergy_index.shape[0]), synergy_index.astype(np.int64)] = 1.0
    context[:, -1] = direction
    return context


def market_events(
    bars: Bars, name: str, config: EnvironmentConfig, *, first_bar: int = 0, end_bar: int | None = None
) -> MarketEvents:
    """The events `models.synergy.synergy_events` sends for `bars` (what `tacticalctl simulate|replay` publishes),
    keeping those whose synergy bar is in [first_bar, end_bar) and whose whole trade lies before end_bar.

    Features and ATR are computed over all of `bars` (they only look back), so a window may reach before
    `first_bar`; the trade never reaches `end_bar`, which is what keeps a training slice apart from a held-out one.
    """
    end_bar = len(bars) if end_bar is None else min(end_bar, len(bars))
    features = build_features(bars)
    atr = average_true_range(bars, ATR_PERIOD)
    labels = forward_labels(bars.close, atr, config.labels)
    horizon = config.max_holding_bars
    kept = [
        (synergy.index, event)
        for synergy, event in detected_synergy_events(bars, features, id_prefix=f"{name}-")
        if first_bar <= synergy.index and synergy.index + horizon < end_bar
    ]
    index = np.array([i for i, _ in kept], dtype=np.int64)
    events = tuple(event for _, event in kept)
    ohlc = np.stack([bars.open, bars.high, bars.low, bars.close], axis=1)
    following = ohlc[index[:, None] + np.arange(1, horizon + 1)] if index.size else np.empty((0, horizon, 4))
    matrices = (
        np.stack([event.matrix for event in events]) if events else np.empty((0, *MATRIX_SHAPE), dtype=np.float32)
    )
    synergy_index = np.array([SYNERGY_TYPES.index(e.synergy_type) for e in events], dtype=np.int8)
    direction = np.array([e.direction for e in events], dtype=np.int8)
    return MarketEvents(
        name=name,
        events=events,
        matrices=matrices,
        synergy_index=synergy_index,
        direction=direction,
        price=np.array([e.price for e in events], dtype=np.float64),
        atr=np.array([e.atr for e in events], dtype=np.float64),
        timestamps=bars.timestamps[index],
        following=following.astype(np.float64),
        labels=labels[index],
        context=event_context(synergy_index, direction),
    )


def simulated_market_events(
    seed: int, n_bars: int, config: EnvironmentConfig, *, simulator: SimulatorConfig | None = None, name: str = ""
) -> MarketEvents:
    """Events of one simulated market; `simulator` sets the regime parameters (its seed and n_bars are replaced)."""
    market = replace(simulator or SimulatorConfig(), seed=seed, n_bars=n_bars)
    return market_events(simulate_bars(market), name or f"sim-{seed}", config)


def trade_outcomes(
    following: np.ndarray,
    side: np.ndarray,
    entry: np.ndarray,
    stop_loss: np.ndarray,
    take_profit: np.ndarray,
    cost: float,
) -> np.ndarray:
    """Net PnL per contract (price points) of trades: side ±1, with the bars that follow each entry (module doc)."""
    count = side.shape[0]
    if count == 0:
        return np.zeros(0)
    opens, highs, lows, closes = (following[:, :, k] for k in range(4))
    is_long = side > 0
    stop = stop_loss[:, None]
    take = take_profit[:, None]
    stopped = np.where(is_long[:, None], lows <= stop, highs >= stop)
    taken = np.where(is_long[:, None], highs >= take, lows <= take)
    horizon = following.shape[1]
    first_stop = np.where(stopped.any(axis=1), stopped.argmax(axis=1), horizon)
    first_take = np.where(taken.any(axis=1), taken.argmax(axis=1), horizon)
    rows = np.arange(count)
    stop_bar = np.minimum(first_stop, horizon - 1)
    gap_open = opens[rows, stop_bar]
    stop_fill = np.where(is_long, np.minimum(stop_loss, gap_open), np.maximum(stop_loss, gap_open))
    exit_price = np.where(
        first_stop <= first_take,
        np.where(first_stop < horizon, stop_fill, closes[:, -1]),
        take_profit,
    )
    return side * (exit_price - entry) - cost


@dataclass(frozen=True, eq=False)
class Settlement:
    """What a batch of decisions did: per event, the side traded (0 none), net PnL per contract and reward."""

    decisions: list[Decision]
    side: np.ndarray  # (B,) int8: +1 long, -1 short, 0 no trade
    pnl: np.ndarray  # (B,) float64 price points per contract, net of costs; 0 without a trade
    reward: np.ndarray  # (B,) float64 pnl / (stop_loss_atr × ATR)
    scores: np.ndarray  # (B, 3) the vote's score per action


def settle(
    market: MarketEvents,
    rows: np.ndarray,
    probabilities: np.ndarray,
    confidence: np.ndarray,
    config: EnvironmentConfig,
    model_version: str = "training",
) -> Settlement:
    """Run the worker's vote on events `rows` of `market` and score every executed command's trade."""
    rows = np.asarray(rows, dtype=np.int64)
    events = [market.events[int(r)] for r in rows]
    decisions = aggregate_batch(events, probabilities, confidence, config.aggregator, model_version)
    side = np.zeros(rows.shape[0], dtype=np.int8)
    entry, stop_loss, take_profit = (np.zeros(rows.shape[0]) for _ in range(3))
    for position, decision in enumerate(decisions):
        command = decision.command
        if decision.execute and command is not None:
            side[position] = Action.LONG.value if command.side == "BUY" else Action.SHORT.value
            entry[position], stop_loss[position], take_profit[position] = (
                command.price,
                command.stop_loss,
                command.take_profit,
            )
    traded = side != 0
    pnl = np.zeros(rows.shape[0])
    pnl[traded] = trade_outcomes(
        market.following[rows[traded]],
        side[traded].astype(np.float64),
        entry[traded],
        stop_loss[traded],
        take_profit[traded],
        config.cost_per_trade,
    )
    risk = config.aggregator.stop_loss_atr * market.atr[rows]
    reward = np.where(traded, pnl / np.where(risk > 0, risk, 1.0), 0.0)
    scores = np.array([d.scores for d in decisions], dtype=np.float64).reshape(-1, N_ACTIONS)
    return Settlement(decisions=decisions, side=side, pnl=pnl, reward=reward, scores=scores)


def one_hot_votes(actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, agents) action indices → the votes the aggregator takes: probabilities (B, agents, 3) and confidence."""
    probabilities = np.zeros((*actions.shape, N_ACTIONS), dtype=np.float32)
    np.put_along_axis(probabilities, actions[..., None].astype(np.int64), 1.0, axis=-1)
    return probabilities, np.ones(actions.shape, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class Step:
    """The result of one environment step over every lane."""

    reward: np.ndarray  # (lanes,) float64
    pnl: np.ndarray  # (lanes,) float64
    side: np.ndarray  # (lanes,) int8
    done: np.ndarray  # (lanes,) bool: the lane's market ran out of events and starts over


class TacticalEnvironment:
    """One lane per market; every step presents each lane's next event, in time order, and settles the votes.

    Lanes start at seeded random positions so that a rollout is not always the first events of every market; a
    lane that reaches its market's last event is done and starts again at its first.
    """

    def __init__(self, markets: Sequence[MarketEvents], config: EnvironmentConfig, seed: int) -> None:
        empty = [m.name for m in markets if len(m) == 0]
        if not markets or empty:
            raise EnvironmentConfigError(
                f"every market needs synergy events to train on; none in {empty or 'an empty list'} "
                "(use more bars)"
            )
        self.markets = tuple(markets)
        self.config = config
        rng = np.random.default_rng(seed)
        self.cursor = np.array([int(rng.integers(len(m))) for m in self.markets], dtype=np.int64)

    @property
    def lanes(self) -> int:
        return len(self.markets)

    def observation(self) -> tuple[np.ndarray, np.ndarray]:
        """The current events: matrices (lanes, 60, 7) float32 and critic context (lanes, CONTEXT_WIDTH)."""
        matrices = np.stack([m.matrices[c] for m, c in zip(self.markets, self.cursor, strict=True)])
        context = np.stack([m.context[c] for m, c in zip(self.markets, self.cursor, strict=True)])
        return matrices, context

    def step(self, actions: np.ndarray) -> Step:
        """`actions` (lanes, agents): each agent's action index for its lane's current event."""
        if actions.shape != (self.lanes, N_AGENTS):
            raise EnvironmentConfigError(f"actions have shape {actions.shape}, expected {(self.lanes, N_AGENTS)}")
        probabilities, confidence = one_hot_votes(actions)
        reward, pnl = np.zeros(self.lanes), np.zeros(self.lanes)
        side = np.zeros(self.lanes, dtype=np.int8)
        for lane, market in enumerate(self.markets):
            settled = settle(
                market, self.cursor[lane : lane + 1], probabilities[lane : lane + 1], confidence[lane : lane + 1],
                self.config,
            )
            reward[lane], pnl[lane], side[lane] = settled.reward[0], settled.pnl[0], settled.side[0]
        self.cursor += 1
        lengths = np.array([len(m) for m in self.markets])
        done = self.cursor >= lengths
        self.cursor[done] = 0
        return Step(reward=reward, pnl=pnl, side=side, done=done)
