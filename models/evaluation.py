"""Held-out evaluation: the trained bundle against the baselines on markets no policy was trained on.

Held-out data: simulated markets of seeds and regimes that training never sees (`HeldOutConfig`), and the last
`csv_holdout_fraction` of every CSV given (training uses only the bars before that slice; see
`models.environment.market_events`). Every policy answers every held-out synergy event with three agents' votes;
`worker.aggregator.aggregate_batch` turns them into the trade or none, exactly as in the worker, and
`models.environment` scores each trade per contract, net of spread and commission.

Policies:
  marl        the MAPPO-trained bundle (TorchScript, as the worker loads it)
  supervised  the supervised pre-training the MAPPO run started from
  hold        every agent votes hold: never trades
  random      every agent votes a uniformly random action (seeded): the vote trades when enough weight agrees
  rule_fvg    a fair-value-gap rule, all three agents voting it: long when the nearest active gap is a bullish
              one below the price, short when it is a bearish one above, hold when no gap is active

Metrics (per policy, over all held-out events, markets one after another in a fixed order):
  pnl             net price points per contract, summed over executed trades
  sharpe          annualised (√252) mean / standard deviation of daily PnL, a day being a calendar day on which the
                  market produced events (0 PnL when nothing traded); 0 when the PnL never varies
  max_drawdown    the largest fall of cumulative PnL from its running peak, in price points (>= 0)
  execution_rate  executed trades / events
  accuracy        directional accuracy of the vote: on events after which the market moved (label long or
                  short, `LabelConfig`), the share where the vote leaned (score long − score short) the right way,
                  over the events where it leaned at all; null when it never leaned on such an event
Per agent, the same directional accuracy of p_long − p_short ("agent_accuracy").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from models.bars import read_bars_csv
from models.environment import (
    N_ACTIONS,
    N_AGENTS,
    EnvironmentConfig,
    MarketEvents,
    market_events,
    one_hot_votes,
    settle,
    simulated_market_events,
)
from models.features import FEATURE_INDEX
from models.simulator import SimulatorConfig
from worker.actions import AGENT_NAMES, Action

POLICY_NAMES: tuple[str, ...] = ("marl", "hold", "random", "rule_fvg", "supervised")
HEADLINE_METRICS: tuple[str, ...] = ("pnl", "sharpe", "accuracy", "max_drawdown", "execution_rate")
TRADING_DAYS_PER_YEAR = 252
REPORT_FILE = "report.md"
EQUITY_PLOT = "equity.png"
ACCURACY_PLOT = "agent_accuracy.png"

# Simulator regimes for held-out markets: the default market and three that lean one way.
REGIMES: Mapping[str, SimulatorConfig] = {
    "default": SimulatorConfig(),
    "trending": SimulatorConfig(mean_trend_bars=300.0, mean_range_bars=100.0),
    "ranging": SimulatorConfig(mean_trend_bars=80.0, mean_range_bars=400.0),
    "volatile": SimulatorConfig(bar_volatility=0.0016, mean_high_volatility_bars=120.0),
}


class EvaluationError(ValueError):
    """The held-out data or a policy cannot be evaluated; the message says what to change."""


@dataclass(frozen=True)
class HeldOutConfig:
    seeds: tuple[int, ...] = (301, 302, 303)
    regimes: tuple[str, ...] = ("default", "trending", "ranging", "volatile")
    n_bars: int = 20_000
    csv: tuple[Path, ...] = ()
    csv_holdout_fraction: float = 0.3
    random_seed: int = 0

    def __post_init__(self) -> None:
        unknown = [r for r in self.regimes if r not in REGIMES]
        if unknown:
            raise EvaluationError(f"unknown regime(s) {unknown}; known: {sorted(REGIMES)}")
        if not 0.0 < self.csv_holdout_fraction < 1.0:
            raise EvaluationError(f"csv_holdout_fraction must be in (0, 1), got {self.csv_holdout_fraction}")
        if not (self.seeds and self.regimes) and not self.csv:
            raise EvaluationError("held-out data is empty: give simulator seeds and regimes, or a CSV")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HeldOutConfig:
        """The held-out data a manifest's evaluation recorded (`as_json`, possibly with extra keys)."""
        try:
            return cls(
                seeds=tuple(int(s) for s in data["seeds"]),
                regimes=tuple(data["regimes"]),
                n_bars=int(data["n_bars"]),
                csv=tuple(Path(p) for p in data["csv"]),
                csv_holdout_fraction=float(data["csv_holdout_fraction"]),
                random_seed=int(data["random_seed"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EvaluationError(f"recorded held-out data {dict(data)!r} is incomplete ({exc})") from None

    def as_json(self) -> dict[str, Any]:
        return {
            "seeds": list(self.seeds),
            "regimes": {name: _regime_overrides(name) for name in self.regimes},
            "n_bars": self.n_bars,
            "csv": [str(path) for path in self.csv],
            "csv_holdout_fraction": self.csv_holdout_fraction,
            "random_seed": self.random_seed,
        }


def _regime_overrides(name: str) -> dict[str, Any]:
    default, regime = SimulatorConfig(), REGIMES[name]
    return {k: v for k, v in regime.__dict__.items() if getattr(default, k) != v}


def csv_split(n_bars: int, holdout_fraction: float) -> int:
    """First bar of a CSV's held-out slice; training uses the bars before it."""
    return round(n_bars * (1.0 - holdout_fraction))


def held_out_markets(config: HeldOutConfig, environment: EnvironmentConfig) -> list[MarketEvents]:
    """The events the policies are scored on. Made once per process for the same settings (and CSV files unchanged
    since): 12 markets of 20,000 bars take seconds, and a promotion's dry run and its --yes, or a comparison of several
    bundles, score on the same ones."""
    key = _held_out_key(config, environment)
    if key is None:
        return list(_make_held_out_markets(config, environment))
    if key not in _last_held_out:
        markets = _make_held_out_markets(config, environment)
        for market in markets:  # shared by every later caller: one that wrote into them would corrupt the rest
            for value in vars(market).values():
                if isinstance(value, np.ndarray):
                    value.setflags(write=False)
        _last_held_out.clear()  # one set kept: they weigh tens of MB
        _last_held_out[key] = markets
    return list(_last_held_out[key])


_last_held_out: dict[tuple[HeldOutConfig, str, tuple[tuple[str, int, int, int], ...]], tuple[MarketEvents, ...]] = {}


def _held_out_key(config: HeldOutConfig, environment: EnvironmentConfig) -> tuple | None:
    """What the markets are made from; None when they cannot be kept: a CSV that cannot be read (read_bars_csv then
    says what is wrong with it), or a config built with lists, not tuples."""
    try:
        csv_stamps = tuple(_file_stamp(Path(path)) for path in config.csv)
        key = (config, repr(environment), csv_stamps)  # the environment holds a mapping proxy: its repr is hashable
        hash(key)
    except (OSError, TypeError):
        return None
    return key


def _file_stamp(path: Path) -> tuple[str, int, int, int]:
    """What tells a file apart from its earlier self or another file: a copy that kept the mtime differs in inode."""
    stat = path.stat()
    return str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns


def _make_held_out_markets(config: HeldOutConfig, environment: EnvironmentConfig) -> tuple[MarketEvents, ...]:
    markets = [
        simulated_market_events(seed, config.n_bars, environment, simulator=REGIMES[regime], name=f"{regime}-{seed}")
        for regime in config.regimes
        for seed in config.seeds
    ]
    for path in config.csv:
        bars = read_bars_csv(path)
        split = csv_split(len(bars), config.csv_holdout_fraction)
        markets.append(market_events(bars, f"csv-{Path(path).stem}-heldout", environment, first_bar=split))
    if not any(len(m) for m in markets):
        raise EvaluationError("the held-out data has no scorable synergy event; use more bars")
    return tuple(markets)


def markets_sha256(markets: Sequence[MarketEvents]) -> str:
    """Content hash of what the policies see and are scored on."""
    digest = hashlib.sha256()
    for market in markets:
        digest.update(market.name.encode())
        for array in (market.matrices, market.context, market.price, market.atr, market.following, market.labels):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class Policy(Protocol):
    @property
    def name(self) -> str: ...

    def votes(self, market: MarketEvents) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N, agents, actions) and confidence (N, agents) for every event of `market`."""
        ...


AgentCallable = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class AgentPolicy:
    """Three agents (eager modules, TorchScript modules or a loaded bundle's) voting their probabilities."""

    name: str
    agents: Mapping[str, AgentCallable]
    batch_size: int = 4096

    def votes(self, market: MarketEvents) -> tuple[np.ndarray, np.ndarray]:
        count = len(market)
        probabilities = np.empty((count, N_AGENTS, N_ACTIONS), dtype=np.float32)
        confidence = np.empty((count, N_AGENTS), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, count, self.batch_size):
                rows = slice(start, start + self.batch_size)
                # Contiguous and writable (torch warns on a read-only array, as held-out markets are): copied if not.
                batch = torch.from_numpy(np.require(market.matrices[rows], requirements=["C", "W"]))
                for position, name in enumerate(AGENT_NAMES):
                    p, c = self.agents[name](batch)
                    probabilities[rows, position] = p.numpy()
                    confidence[rows, position] = c.numpy()
        return probabilities, confidence


def bundle_policy(name: str, bundle_dir: Path) -> AgentPolicy:
    """The agents of a verified bundle, loaded exactly as the worker loads them."""
    from models.compile import load_verified_agents

    return AgentPolicy(name, load_verified_agents(Path(bundle_dir))[1])


def module_policy(name: str, agents: Mapping[str, nn.Module]) -> AgentPolicy:
    for agent in agents.values():
        agent.eval()
    return AgentPolicy(name, dict(agents))


@dataclass(frozen=True)
class HoldPolicy:
    name: str = "hold"

    def votes(self, market: MarketEvents) -> tuple[np.ndarray, np.ndarray]:
        return one_hot_votes(np.full((len(market), N_AGENTS), Action.HOLD.index))


@dataclass(frozen=True)
class RandomPolicy:
    """Uniform random votes; the same seed and market always give the same votes."""

    seed: int = 0
    name: str = "random"

    def votes(self, market: MarketEvents) -> tuple[np.ndarray, np.ndarray]:
        market_key = int.from_bytes(hashlib.sha256(market.name.encode()).digest()[:4], "little")
        rng = np.random.default_rng([self.seed, market_key])
        return one_hot_votes(rng.integers(0, N_ACTIONS, size=(len(market), N_AGENTS)))


@dataclass(frozen=True)
class RuleFVGPolicy:
    """Trade toward the nearest active fair value gap (module doc); every agent votes the rule."""

    name: str = "rule_fvg"

    def votes(self, market: MarketEvents) -> tuple[np.ndarray, np.ndarray]:
        return one_hot_votes(np.repeat(rule_fvg_actions(market.matrices)[:, None], N_AGENTS, axis=1))


def rule_fvg_actions(matrices: np.ndarray) -> np.ndarray:
    """Action index per (60, 7) matrix from its latest bar's gap columns."""
    latest = matrices[:, -1, :]
    level = latest[:, FEATURE_INDEX["fvg_nearest_level"]]
    bullish = latest[:, FEATURE_INDEX["fvg_bullish_active"]] > 0.5
    bearish = latest[:, FEATURE_INDEX["fvg_bearish_active"]] > 0.5
    actions = np.full(matrices.shape[0], Action.HOLD.index, dtype=np.int64)
    actions[bullish & (level < 0)] = Action.LONG.index
    actions[bearish & (level > 0)] = Action.SHORT.index
    return actions


@dataclass(frozen=True, eq=False)
class PolicyResult:
    """One policy's figures over the held-out markets, plus what the plots need."""

    name: str
    pnl: float
    sharpe: float
    accuracy: float | None
    max_drawdown: float
    execution_rate: float
    trades: int
    events: int
    agent_accuracy: Mapping[str, float | None]
    per_market: Mapping[str, Mapping[str, float]]
    equity: np.ndarray = field(repr=False)  # cumulative PnL after each event

    def headline(self) -> dict[str, float | None]:
        return {
            "pnl": round(self.pnl, 2),
            "sharpe": round(self.sharpe, 3),
            "accuracy": None if self.accuracy is None else round(self.accuracy, 4),
            "max_drawdown": round(self.max_drawdown, 2),
            "execution_rate": round(self.execution_rate, 4),
        }

    def as_json(self) -> dict[str, Any]:
        return {
            **self.headline(),
            "trades": self.trades,
            "events": self.events,
            "agent_accuracy": dict(self.agent_accuracy),
            "per_market": {name: dict(values) for name, values in self.per_market.items()},
        }


def directional_accuracy(lean: np.ndarray, labels: np.ndarray) -> float | None:
    """Share of right-way leans on moved events where there was a lean; None when there is none."""
    counted = (labels >= 0) & (labels != Action.HOLD.index) & (lean != 0)
    if not counted.any():
        return None
    return float(((lean[counted] > 0) == (labels[counted] == Action.LONG.index)).mean())


def sharpe_ratio(daily_pnl: np.ndarray) -> float:
    if daily_pnl.size < 2:
        return 0.0
    spread = float(daily_pnl.std(ddof=1))
    if spread <= 1e-12:
        return 0.0
    return float(daily_pnl.mean()) / spread * float(np.sqrt(TRADING_DAYS_PER_YEAR))


def max_drawdown(equity: np.ndarray) -> float:
    if equity.size == 0:
        return 0.0
    curve = np.concatenate([[0.0], equity])
    return float((np.maximum.accumulate(curve) - curve).max())


def daily_pnl(pnl: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """PnL per calendar day (UTC) on which events occurred, in day order."""
    if pnl.size == 0:
        return np.zeros(0)
    days = timestamps.astype("datetime64[D]")
    _, day_index = np.unique(days, return_inverse=True)
    return np.bincount(day_index, weights=pnl)


def evaluate_policy(
    policy: Policy, markets: Sequence[MarketEvents], environment: EnvironmentConfig
) -> PolicyResult:
    pnl_parts, daily_parts, lean_parts, label_parts = [], [], [], []
    agent_leans: list[np.ndarray] = []
    per_market: dict[str, dict[str, float]] = {}
    trades = 0
    for market in markets:
        if len(market) == 0:
            continue
        probabilities, confidence = policy.votes(market)
        settled = settle(market, np.arange(len(market)), probabilities, confidence, environment, policy.name)
        market_trades = int((settled.side != 0).sum())
        trades += market_trades
        pnl_parts.append(settled.pnl)
        daily = daily_pnl(settled.pnl, market.timestamps)
        daily_parts.append(daily)
        lean_parts.append(settled.scores[:, Action.LONG.index] - settled.scores[:, Action.SHORT.index])
        label_parts.append(market.labels)
        agent_leans.append(probabilities[:, :, Action.LONG.index] - probabilities[:, :, Action.SHORT.index])
        per_market[market.name] = {
            "events": len(market),
            "trades": market_trades,
            "pnl": round(float(settled.pnl.sum()), 2),
            "sharpe": round(sharpe_ratio(daily), 3),
        }
    if not pnl_parts:
        raise EvaluationError("no held-out events to evaluate on")
    pnl = np.concatenate(pnl_parts)
    labels = np.concatenate(label_parts)
    leans = np.concatenate(agent_leans)
    equity = np.cumsum(pnl)
    return PolicyResult(
        name=policy.name,
        pnl=float(pnl.sum()),
        sharpe=sharpe_ratio(np.concatenate(daily_parts)),
        accuracy=directional_accuracy(np.concatenate(lean_parts), labels),
        max_drawdown=max_drawdown(equity),
        execution_rate=trades / pnl.size,
        trades=trades,
        events=int(pnl.size),
        agent_accuracy={
            name: _rounded(directional_accuracy(leans[:, position], labels))
            for position, name in enumerate(AGENT_NAMES)
        },
        per_market=per_market,
        equity=equity,
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass(frozen=True, eq=False)
class Evaluation:
    results: Mapping[str, PolicyResult]
    held_out: Mapping[str, Any]  # HeldOutConfig.as_json() plus events and data hash
    environment: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        """What `tacticalctl models eval --json` prints: the five headline figures of every policy."""
        return {"policies": {name: result.headline() for name, result in self.results.items()}}

    def details(self) -> dict[str, Any]:
        """Everything, for the manifest and the report."""
        return {
            "policies": {name: result.as_json() for name, result in self.results.items()},
            "held_out": dict(self.held_out),
            "environment": dict(self.environment),
        }

    def beats(self, challenger: str, others: Sequence[str] | None = None) -> dict[str, bool]:
        """For each other policy: does `challenger` have strictly more PnL and a strictly higher Sharpe?"""
        mine = self.results[challenger]
        names = [n for n in (others or self.results) if n != challenger]
        return {n: mine.pnl > self.results[n].pnl and mine.sharpe > self.results[n].sharpe for n in names}


def baseline_policies(random_seed: int) -> list[Policy]:
    return [HoldPolicy(), RandomPolicy(seed=random_seed), RuleFVGPolicy()]


def evaluate_policies(
    policies: Sequence[Policy],
    held_out: HeldOutConfig,
    environment: EnvironmentConfig,
    *,
    markets: Sequence[MarketEvents] | None = None,
) -> Evaluation:
    """Every policy on the same held-out markets (built from `held_out` unless given)."""
    markets = list(markets) if markets is not None else held_out_markets(held_out, environment)
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise EvaluationError(f"policy names must be unique, got {names}")
    results = {policy.name: evaluate_policy(policy, markets, environment) for policy in policies}
    description = {
        **held_out.as_json(),
        "markets": {m.name: len(m) for m in markets},
        "events": int(sum(len(m) for m in markets)),
        "sha256": markets_sha256(markets),
    }
    return Evaluation(results=results, held_out=description, environment=environment.as_json())


def order_policies(results: Mapping[str, PolicyResult]) -> list[str]:
    known = [n for n in POLICY_NAMES if n in results]
    return known + [n for n in results if n not in known]


def format_table(evaluation: Evaluation) -> str:
    lines = [f"{'policy':<12}{'pnl':>11}{'sharpe':>9}{'accuracy':>10}{'max dd':>10}{'exec rate':>11}{'trades':>8}"]
    for name in order_policies(evaluation.results):
        r = evaluation.results[name]
        accuracy = "-" if r.accuracy is None else f"{r.accuracy:.3f}"
        lines.append(
            f"{name:<12}{r.pnl:>11.1f}{r.sharpe:>9.2f}{accuracy:>10}{r.max_drawdown:>10.1f}"
            f"{r.execution_rate:>11.3f}{r.trades:>8}"
        )
    return "\n".join(lines)


def write_report(
    evaluation: Evaluation, directory: Path, *, title: str, notes: Sequence[str] = ()
) -> Path:
    """`report.md` with an equity-curve plot and a per-agent accuracy plot, in `directory`; returns the report."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        _plot_equity(evaluation, directory / EQUITY_PLOT)
        _plot_agent_accuracy(evaluation, directory / ACCURACY_PLOT)
        plotted = True
    except ImportError:
        notes = [*notes, "Plots skipped: matplotlib is not installed (pip install matplotlib)."]
        plotted = False
    names = order_policies(evaluation.results)
    held_out = evaluation.held_out
    lines = [
        f"# {title}",
        "",
        *notes,
        *([""] if notes else []),
        f"Held-out data: {held_out['events']} synergy events in {len(held_out['markets'])} markets "
        f"(simulator seeds {held_out['seeds']} × regimes {list(held_out['regimes'])}"
        + (f"; held-out slice of {', '.join(held_out['csv'])}" if held_out["csv"] else "")
        + f"), sha256 `{held_out['sha256'][:16]}…`.",
        f"Trades per contract, net of spread {evaluation.environment['spread']} and commission "
        f"{evaluation.environment['commission']} price points; exit at stop-loss "
        f"{evaluation.environment['stop_loss_atr']}×ATR, take-profit {evaluation.environment['take_profit_atr']}×ATR "
        f"or after {evaluation.environment['max_holding_bars']} bars.",
        "",
        "| policy | PnL (points) | Sharpe | accuracy | max drawdown | execution rate | trades |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        r = evaluation.results[name]
        accuracy = "n/a" if r.accuracy is None else f"{r.accuracy:.3f}"
        lines.append(
            f"| {name} | {r.pnl:.1f} | {r.sharpe:.2f} | {accuracy} | {r.max_drawdown:.1f} | "
            f"{r.execution_rate:.3f} | {r.trades} |"
        )
    lines += ["", f"![equity curves]({EQUITY_PLOT})" if plotted else "", "", "## Per-agent directional accuracy", ""]
    lines += ["| policy | " + " | ".join(AGENT_NAMES) + " |", "|---|" + "---:|" * len(AGENT_NAMES)]
    for name in names:
        values = evaluation.results[name].agent_accuracy
        cells = ["n/a" if values[a] is None else f"{values[a]:.3f}" for a in AGENT_NAMES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"![per-agent accuracy]({ACCURACY_PLOT})" if plotted else "", "",
              "## Per market (PnL / Sharpe / trades)", ""]
    markets = list(held_out["markets"])
    lines += ["| market | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for market in markets:
        cells = []
        for name in names:
            figures = evaluation.results[name].per_market.get(market)
            cells.append("-" if figures is None else f"{figures['pnl']:.0f} / {figures['sharpe']:.2f} / "
                         f"{int(figures['trades'])}")
        lines.append(f"| {market} | " + " | ".join(cells) + " |")
    lines += ["", "```json", json.dumps(evaluation.as_json(), indent=2), "```", ""]
    report = directory / REPORT_FILE
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_equity(evaluation: Evaluation, path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 3.6), dpi=80)
    for name in order_policies(evaluation.results):
        equity = evaluation.results[name].equity
        step = max(1, equity.size // 800)  # a few hundred points draw the same curve in a much smaller file
        axes.plot(np.arange(0, equity.size, step), equity[::step], label=name, linewidth=1.2)
    axes.set_xlabel("held-out synergy events (markets one after another)")
    axes.set_ylabel("cumulative PnL (points / contract)")
    axes.axhline(0.0, color="grey", linewidth=0.6)
    axes.legend(fontsize=8, loc="upper left")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _plot_agent_accuracy(evaluation: Evaluation, path: Path) -> None:
    plt = _pyplot()
    names = order_policies(evaluation.results)
    figure, axes = plt.subplots(figsize=(7, 3.2), dpi=80)
    width = 0.8 / len(AGENT_NAMES)
    for position, agent in enumerate(AGENT_NAMES):
        values = [evaluation.results[n].agent_accuracy[agent] for n in names]
        heights = [np.nan if v is None else v for v in values]
        axes.bar(np.arange(len(names)) + (position - 1) * width, heights, width, label=agent)
    axes.axhline(0.5, color="grey", linewidth=0.6, linestyle="--")
    axes.set_xticks(np.arange(len(names)), names)
    axes.set_ylim(0.3, 1.0)
    axes.set_ylabel("directional accuracy")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def recorded_settings(metrics: Mapping[str, Any]) -> tuple[HeldOutConfig, EnvironmentConfig]:
    """The held-out data and environment a bundle's manifest metrics were evaluated with; defaults when absent."""
    recorded = metrics.get("evaluation", {})
    held_out = HeldOutConfig.from_json(recorded["held_out"]) if "held_out" in recorded else HeldOutConfig()
    environment = (
        EnvironmentConfig.from_json(recorded["environment"]) if "environment" in recorded else EnvironmentConfig()
    )
    return held_out, environment
