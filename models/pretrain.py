"""Supervised pre-training of the three agents on simulated markets, evaluated on markets they never saw.

    python -m models.pretrain --out models/tactical --seed 7

Training markets and held-out markets are different simulator seeds. Labels are in `models.dataset`.
Each agent learns on its own (Adam, cross-entropy, one CPU thread), then the held-out metrics are
computed — per agent, and for the weighted vote the worker runs on synergy events — next to the
majority-class baseline, the agents are compiled into a bundle, and the bundle becomes CURRENT.
The same config gives the same weights and metrics (recorded in the manifest as `weights_sha256`), and in a
fresh process byte-identical agent files.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.architectures import (
    AGENT_CLASSES,
    InputNormalization,
    build_agents,
    parameter_count,
    weights_sha256,
)
from models.bundle import read_current_version, set_current
from models.compile import compile_bundle
from models.dataset import (
    SYNERGY_TYPES,
    LabelConfig,
    WindowDataset,
    build_dataset,
    describe_dataset,
)
from worker.actions import ACTION_ORDER, AGENT_NAMES, Action
from worker.aggregator import AggregatorConfig, aggregate_batch
from worker.records import SynergyEvent
from worker.settings import default_models_dir

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PretrainConfig:
    out: Path = field(default_factory=default_models_dir)
    seed: int = 7
    train_seeds: tuple[int, ...] = (101, 102, 103, 104)
    eval_seeds: tuple[int, ...] = (201, 202)
    n_bars: int = 20_000
    horizon: int = LabelConfig.horizon
    atr_multiple: float = LabelConfig.atr_multiple
    epochs: int = 6
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    max_steps_per_epoch: int | None = None  # cap for quick runs (tests); None = the whole training set
    set_current: bool = True  # only a directory without CURRENT: a trained bundle replaces one through promotion

    def __post_init__(self) -> None:
        if set(self.train_seeds) & set(self.eval_seeds):
            raise ValueError(
                f"train seeds {self.train_seeds} and eval seeds {self.eval_seeds} overlap: "
                "held-out markets must be unseen"
            )
        if self.epochs < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ValueError("epochs and batch_size must be >= 1 and learning_rate > 0")

    @property
    def labels(self) -> LabelConfig:
        return LabelConfig(horizon=self.horizon, atr_multiple=self.atr_multiple)

    def as_json(self) -> dict[str, Any]:
        """What shaped the weights (not where they were written)."""
        values = asdict(self)
        del values["out"], values["set_current"]
        values["train_seeds"] = list(self.train_seeds)
        values["eval_seeds"] = list(self.eval_seeds)
        return values


def train_agent(
    agent: nn.Module, dataset: WindowDataset, config: PretrainConfig, progress: Progress, name: str
) -> list[float]:
    """Fit one agent with cross-entropy; returns the mean training loss of each epoch."""
    normalization = agent.get_submodule("normalize")
    assert isinstance(normalization, InputNormalization)
    normalization.fit(torch.from_numpy(dataset.features))
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    # One generator per agent, from the run seed and the agent's position: each agent's batches are reproducible.
    generator = torch.Generator().manual_seed(config.seed * 1000 + AGENT_NAMES.index(name))
    labels = torch.from_numpy(dataset.labels)
    epoch_losses = []
    for epoch in range(config.epochs):
        agent.train()
        order = torch.randperm(len(dataset), generator=generator).numpy()
        batches = range(0, len(order), config.batch_size)
        if config.max_steps_per_epoch is not None:
            batches = batches[: config.max_steps_per_epoch]
        total, count = 0.0, 0
        for start in batches:
            rows = order[start : start + config.batch_size]
            probabilities, _ = agent(torch.from_numpy(dataset.windows(rows)))
            loss = nn.functional.nll_loss(torch.log(probabilities.clamp_min(1e-7)), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
            count += len(rows)
        epoch_losses.append(total / count)
        progress(f"  {name}: epoch {epoch + 1}/{config.epochs} loss {epoch_losses[-1]:.4f}")
    agent.eval()
    return epoch_losses


def predict(
    agents: dict[str, nn.Module], dataset: WindowDataset, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (N, agent, action) and confidence (N, agent) of every sample, agents in AGENT_NAMES order."""
    probabilities = np.empty((len(dataset), len(AGENT_NAMES), len(ACTION_ORDER)), dtype=np.float32)
    confidence = np.empty((len(dataset), len(AGENT_NAMES)), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            rows = slice(start, start + batch_size)
            batch = torch.from_numpy(dataset.windows(rows))
            for position, name in enumerate(AGENT_NAMES):
                p, c = agents[name](batch)
                probabilities[rows, position] = p.numpy()
                confidence[rows, position] = c.numpy()
    return probabilities, confidence


def _rate(hits: np.ndarray) -> float | None:
    return round(float(hits.mean()), 4) if hits.size else None


def directional_hits(long_minus_short: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """On bars that really moved (label long or short): did the output lean the right way?"""
    moved = labels != Action.HOLD.index
    return (long_minus_short[moved] > 0) == (labels[moved] == Action.LONG.index)


def evaluate(
    agents: dict[str, nn.Module], held_out: WindowDataset, majority_class: int
) -> dict[str, Any]:
    """Held-out metrics per agent and of the worker's weighted vote on synergy events, with baselines."""
    probabilities, confidence = predict(agents, held_out)
    labels = held_out.labels
    synergy = held_out.is_synergy
    metrics: dict[str, Any] = {"agents": {}}
    for position, name in enumerate(AGENT_NAMES):
        p = probabilities[:, position]
        predicted = p.argmax(axis=1)
        metrics["agents"][name] = {
            "accuracy": _rate(predicted == labels),
            "synergy_accuracy": _rate(predicted[synergy] == labels[synergy]),
            "directional_accuracy": _rate(directional_hits(p[:, 2] - p[:, 0], labels)),
            "mean_confidence": round(float(confidence[:, position].mean()), 4),
        }

    events = _evaluation_events(held_out.subset(synergy))
    decisions = aggregate_batch(
        events, probabilities[synergy], confidence[synergy], AggregatorConfig(), model_version="evaluation"
    )
    synergy_labels = labels[synergy]
    scores = np.array([d.scores for d in decisions]).reshape(-1, len(ACTION_ORDER))
    executed = np.array([d.execute for d in decisions], dtype=bool)
    executed_action = np.array([d.action.index for d in decisions], dtype=np.int64)[executed]
    metrics["vote"] = {
        "samples": int(synergy.sum()),
        "accuracy": _rate(scores.argmax(axis=1) == synergy_labels),
        "directional_accuracy": _rate(directional_hits(scores[:, 2] - scores[:, 0], synergy_labels)),
        "executed": int(executed.sum()),
        "executed_hit_rate": _rate(executed_action == synergy_labels[executed]),
    }

    moved = synergy_labels != Action.HOLD.index
    long_share = float((synergy_labels[moved] == Action.LONG.index).mean()) if moved.any() else 0.5
    metrics["baseline"] = {
        "majority_class": ACTION_ORDER[majority_class],
        "accuracy": _rate(labels == majority_class),
        "synergy_accuracy": _rate(synergy_labels == majority_class),
        # The best constant direction, chosen in hindsight on the held-out moves: a generous bar to clear.
        "directional_accuracy": round(max(long_share, 1.0 - long_share), 4),
        "synergy_direction_accuracy": _rate(
            directional_hits(held_out.direction[synergy].astype(np.float64), synergy_labels)
        ),
    }
    return metrics


def _evaluation_events(synergies: WindowDataset) -> list[SynergyEvent]:
    """Held-out synergy bars as the events the vote sees (the matrix is already scored, so left empty)."""
    return [
        SynergyEvent(
            correlation_id=f"held-out-{row}",
            synergy_type=SYNERGY_TYPES[int(synergies.synergy_type[row])],
            direction=int(synergies.direction[row]),
            confidence=1.0,
            symbol="SIM",
            timestamp="",
            price=float(synergies.price[row]),
            atr=float(synergies.atr[row]),
            matrix=np.empty(0, dtype=np.float32),
        )
        for row in range(len(synergies))
    ]


def pretrain(config: PretrainConfig, *, progress: Progress | None = None) -> Path:
    """Train, evaluate, compile and publish a bundle under `config.out`; returns the bundle directory."""
    say = progress or (lambda message: None)
    torch.set_num_threads(1)
    started = time.perf_counter()
    say(f"simulating {len(config.train_seeds)} training and {len(config.eval_seeds)} held-out markets")
    train = build_dataset(config.train_seeds, n_bars=config.n_bars, labels=config.labels)
    held_out = build_dataset(config.eval_seeds, n_bars=config.n_bars, labels=config.labels)
    say(f"  {len(train)} training samples, {len(held_out)} held-out ({int(held_out.is_synergy.sum())} synergies)")

    agents = build_agents(config.seed)
    losses = {}
    for name in AGENT_NAMES:
        say(f"training {name} ({parameter_count(agents[name])} parameters)")
        losses[name] = [round(loss, 5) for loss in train_agent(agents[name], train, config, say, name)]

    majority_class = int(np.argmax(train.class_counts()))
    metrics = evaluate(agents, held_out, majority_class)
    metrics["held_out"] = describe_dataset(held_out, config.eval_seeds, config.n_bars, config.labels)
    training = {
        "config": config.as_json(),
        "data": describe_dataset(train, config.train_seeds, config.n_bars, config.labels),
        "data_sha256": train.sha256(),
        "seed": config.seed,
        "architectures": {name: AGENT_CLASSES[name].__name__ for name in AGENT_NAMES},
        "epoch_losses": losses,
        "weights_sha256": {name: weights_sha256(agents[name]) for name in AGENT_NAMES},
        "optimizer": "Adam",
        "loss": "cross-entropy",
        "threads": torch.get_num_threads(),
        "duration_seconds": round(time.perf_counter() - started, 1),
    }
    say("compiling TorchScript bundle")
    bundle_dir = compile_bundle(agents, config.out, training=training, metrics=metrics)
    first = config.set_current and read_current_version(config.out) is None
    if first:
        set_current(config.out, bundle_dir.name)
    say(f"bundle {bundle_dir.name} written to {bundle_dir}" + (
        " and set CURRENT (the directory had none)" if first else
        f"; CURRENT unchanged: `tacticalctl models promote {bundle_dir.name} --models-dir {config.out}` to judge it"))
    return bundle_dir


def format_metrics(metrics: dict[str, Any]) -> str:
    baseline = metrics["baseline"]
    lines = [
        f"held-out: {metrics['held_out']['samples']} bars, {metrics['vote']['samples']} synergy events",
        f"{'':<10}{'accuracy':>10}{'synergy':>10}{'direction':>11}{'confidence':>12}",
    ]
    for name, agent in metrics["agents"].items():
        lines.append(
            f"{name:<10}{agent['accuracy']:>10.3f}{agent['synergy_accuracy']:>10.3f}"
            f"{agent['directional_accuracy']:>11.3f}{agent['mean_confidence']:>12.3f}"
        )
    vote = metrics["vote"]
    lines.append(f"{'vote':<10}{'':>10}{vote['accuracy']:>10.3f}{vote['directional_accuracy']:>11.3f}")
    lines.append(
        f"{'baseline':<10}{baseline['accuracy']:>10.3f}{baseline['synergy_accuracy']:>10.3f}"
        f"{baseline['directional_accuracy']:>11.3f}   (majority class: {baseline['majority_class']})"
    )
    lines.append(f"synergy direction alone: {baseline['synergy_direction_accuracy']:.3f} directional accuracy")
    hit_rate = vote["executed_hit_rate"]
    lines.append(
        f"vote would execute {vote['executed']} of {vote['samples']} events"
        + (f", hit rate {hit_rate:.3f}" if hit_rate is not None else "")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.pretrain", description=__doc__.splitlines()[0])
    defaults = PretrainConfig()
    parser.add_argument("--out", type=Path, default=defaults.out, help="models directory to write the bundle to")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of weights and batch order")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--horizon", type=int, default=defaults.horizon, help="label horizon in bars")
    parser.add_argument(
        "--atr-multiple", type=float, default=defaults.atr_multiple, help="label move threshold in ATRs"
    )
    parser.add_argument("--n-bars", type=int, default=defaults.n_bars, help="bars per simulated market")
    parser.add_argument(
        "--train-seeds", type=int, nargs="+", default=list(defaults.train_seeds), help="simulator seeds to train on"
    )
    parser.add_argument(
        "--eval-seeds", type=int, nargs="+", default=list(defaults.eval_seeds), help="held-out simulator seeds"
    )
    parser.add_argument("--no-set-current", action="store_true",
                        help="leave CURRENT alone even in a directory without one (one with CURRENT always keeps it)")
    args = parser.parse_args(argv)
    config = PretrainConfig(
        out=args.out,
        seed=args.seed,
        epochs=args.epochs,
        horizon=args.horizon,
        atr_multiple=args.atr_multiple,
        n_bars=args.n_bars,
        train_seeds=tuple(args.train_seeds),
        eval_seeds=tuple(args.eval_seeds),
        set_current=not args.no_set_current,
    )
    bundle_dir = pretrain(config, progress=lambda message: print(message, flush=True))
    from models.bundle import read_manifest

    print(format_metrics(read_manifest(bundle_dir).metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
