"""MAPPO: the three agents trained together, by PPO, on the PnL of the trades their joint vote makes.

    python -m models.mappo            (or `tacticalctl models train`)

* Actors: the three agent architectures, decentralised — each sees only the event's matrix, as in the worker —
  starting from the weights of a supervised bundle. Those weights are rebuilt by re-running the bundle's recorded
  pre-training and checked against its `weights_sha256` (TorchScript files hold frozen constants, not weights). On
  a CPU with other vector kernels the re-run rounds differently: training then starts from the rebuilt weights,
  warns, and records them (`starting_weights_sha256`, `starting_weights_reproduced`).
* Critic: centralised, V(joint observation): the latest bars of the whole matrix, its averages, and the event's
  synergy type and direction — what the vote knows that no single agent sees.
* Environment (`models.environment`): one lane per training market, events in time order; each agent samples an
  action from its softmax and votes it; the worker's aggregator executes or not; reward = the trade's net PnL in
  units of its risk.
* Advantages by GAE(γ, λ) over each lane's event sequence, normalised per rollout; the clipped PPO objective per
  agent with an entropy bonus; a shared team advantage (every agent is credited with the vote's outcome).
  The market does not react to the votes, so the default γ = 0 credits each vote with its own trade only; γ > 0
  would add later trades' noise to every advantage without any action having influenced them.
* Model selection on validation markets (simulator seeds of their own, never the held-out ones): every
  `validate_every` iterations the deterministic vote the worker runs (softmax probabilities, not samples) is
  scored on them, and the best iterate — the starting weights included — is the one shipped.
* Seeded and reproducible: one torch generator drives sampling and minibatch order, one thread; the same config
  gives the same weights on the same CPU. Checkpoints (every `checkpoint_every` iterations and at the end) hold
  everything the run needs — weights, optimisers, generator, lane positions, best iterate, history — so a resumed
  run continues exactly where it stopped, and a run resumed with more `iterations` trains longer.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.architectures import AGENT_CLASSES, InputNormalization, build_agents, weights_sha256
from models.bars import read_bars_csv
from models.bundle import BundleError, current_bundle_dir, read_manifest
from models.compile import compile_agent, compile_bundle
from models.dataset import build_dataset
from models.environment import (
    CONTEXT_WIDTH,
    N_ACTIONS,
    N_AGENTS,
    EnvironmentConfig,
    MarketEvents,
    TacticalEnvironment,
    market_events,
    settle,
    simulated_market_events,
)
from models.evaluation import (
    Evaluation,
    HeldOutConfig,
    baseline_policies,
    bundle_policy,
    csv_split,
    evaluate_policies,
    held_out_markets,
    markets_sha256,
    module_policy,
    write_report,
)
from models.pretrain import PretrainConfig, train_agent
from worker.actions import AGENT_NAMES
from worker.records import MATRIX_COLS
from worker.settings import default_models_dir

TRAINING_KIND = "mappo"
CHECKPOINT_FORMAT = "tactical-mappo-checkpoint/1"
CHECKPOINT_FILE = "checkpoint.pt"
REPORT_DIR = "evaluation"


class MappoError(RuntimeError):
    """Training cannot start or continue; the message says what to change."""


@dataclass(frozen=True)
class MappoConfig:
    out: Path = field(default_factory=default_models_dir)
    # A supervised bundle's version in `out`; None = the CURRENT bundle, or the one CURRENT started from (MAPPO's)
    initial_bundle: str | None = None
    seed: int = 11
    train_seeds: tuple[int, ...] = (101, 102, 103, 104, 105, 106, 107, 108)
    validation_seeds: tuple[int, ...] = (151, 152, 153)  # empty: no selection, the last iterate is the result
    n_bars: int = 20_000
    csv: tuple[Path, ...] = ()  # bars to train on too; their last csv_holdout_fraction is held out
    iterations: int = 200
    rollout_steps: int = 128  # steps per lane per iteration
    update_epochs: int = 4
    minibatch_size: int = 256
    actor_learning_rate: float = 1e-4
    critic_learning_rate: float = 1e-3
    clip_ratio: float = 0.2
    gamma: float = 0.0
    gae_lambda: float = 0.95
    entropy_coef: float = 0.003
    max_grad_norm: float = 0.5
    validate_every: int = 5
    checkpoint_every: int = 10
    checkpoint_dir: Path | None = None  # None: a directory per config fingerprint under the user's cache
    held_out: HeldOutConfig = field(default_factory=HeldOutConfig)
    environment: EnvironmentConfig = field(default_factory=EnvironmentConfig)

    def __post_init__(self) -> None:
        problems = []
        if not self.train_seeds and not self.csv:
            problems.append("nothing to train on: give train_seeds or a CSV")
        simulated_held_out = set(self.held_out.seeds) if self.held_out.regimes else set()
        overlap = (set(self.train_seeds) | set(self.validation_seeds)) & simulated_held_out
        if overlap:
            problems.append(f"seeds {sorted(overlap)} are both trained/validated on and held out")
        if set(self.train_seeds) & set(self.validation_seeds):
            problems.append("train_seeds and validation_seeds overlap")
        if tuple(self.csv) != tuple(self.held_out.csv):
            problems.append("csv and held_out.csv must name the same files (their held-out slices are evaluated)")
        for name in ("iterations", "rollout_steps", "update_epochs", "minibatch_size", "validate_every",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            problems.append("gamma and gae_lambda must be in [0, 1]")
        if not 0.0 < self.clip_ratio < 1.0:
            problems.append(f"clip_ratio must be in (0, 1), got {self.clip_ratio}")
        if problems:
            raise MappoError("invalid MAPPO config: " + "; ".join(problems))

    def as_json(self) -> dict[str, Any]:
        """What shaped the weights (not where files go)."""
        skipped = ("out", "checkpoint_dir", "held_out", "environment")
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skipped}
        values["csv"] = [str(path) for path in self.csv]
        values["train_seeds"] = list(self.train_seeds)
        values["validation_seeds"] = list(self.validation_seeds)
        values["environment"] = self.environment.as_json()
        return values

    def fingerprint(self, initial_version: str) -> str:
        """Identifies a run for checkpoints: everything that shapes the weights except the iteration count."""
        values = self.as_json()
        del values["iterations"], values["checkpoint_every"]
        values["initial_bundle"] = initial_version
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ProgressReport:
    """A phase message (`iteration` None) or the figures of one finished iteration."""

    message: str
    iteration: int | None = None
    iterations: int | None = None
    figures: Mapping[str, float] = field(default_factory=dict)


Progress = Callable[[ProgressReport], None]


class CentralCritic(nn.Module):
    """V(joint observation): the latest bars of the whole matrix, the window's averages, synergy type, direction."""

    def __init__(self, lookback: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.normalize = InputNormalization()
        self.lookback = lookback
        self.net = nn.Sequential(
            nn.Linear(lookback * MATRIX_COLS + MATRIX_COLS + CONTEXT_WIDTH, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, matrix: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        matrix = self.normalize(matrix)
        recent = torch.flatten(matrix[:, -self.lookback :, :], 1)
        return self.net(torch.cat([recent, matrix.mean(dim=1), context], dim=1)).squeeze(-1)


def generalized_advantages(
    rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, last_value: np.ndarray, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """GAE over (steps, lanes): advantages and returns (= advantages + values). `dones[t]` ends the episode after
    step t, so nothing after it is credited to it."""
    steps = rewards.shape[0]
    advantages = np.zeros_like(rewards, dtype=np.float64)
    running = np.zeros(rewards.shape[1:], dtype=np.float64)
    for t in reversed(range(steps)):
        continues = 1.0 - dones[t].astype(np.float64)
        next_value = last_value if t == steps - 1 else values[t + 1]
        delta = rewards[t] + gamma * next_value * continues - values[t]
        running = delta + gamma * lam * continues * running
        advantages[t] = running
    return advantages, advantages + values


@dataclass(frozen=True)
class StartingWeights:
    """The eager agents a run starts from: a supervised bundle's pre-training, re-run here."""

    agents: dict[str, nn.Module]
    sha256: dict[str, str]  # of the rebuilt weights
    bundle_sha256: dict[str, str]  # the bundle's own, as its manifest records them

    @property
    def reproduced(self) -> bool:
        return self.sha256 == self.bundle_sha256


def pretrained_agents(bundle_dir: Path, progress: Progress | None = None) -> StartingWeights:
    """The eager agents of a supervised bundle, rebuilt from its recorded pre-training and checked by hash. On
    another CPU (other vector kernels: AVX-512 against AVX2, say) the same torch build rounds differently and the
    rebuilt weights differ from the bundle's in the last bits: training then starts from them, says so, and the
    manifest records which weights it started from (a run is reproducible on the CPU it ran on)."""
    say = progress or (lambda report: None)
    manifest = read_manifest(bundle_dir)
    training = manifest.training
    if training.get("kind") == TRAINING_KIND:
        raise MappoError(
            f"bundle {manifest.version} was trained by MAPPO: start from its supervised bundle "
            f"{training.get('initial_bundle')!r} (--initial-bundle), or resume its run from a checkpoint"
        )
    try:
        recorded = training["config"]
        expected = training["weights_sha256"]
        # JSON gave lists where the config has tuples; the types are checked by PretrainConfig and the weights' hash
        restored: dict[str, Any] = {key: tuple(value) if isinstance(value, list) else value
                                    for key, value in recorded.items()}
        config = PretrainConfig(**restored, set_current=False)
    except (KeyError, TypeError) as exc:
        raise MappoError(
            f"bundle {manifest.version} does not record a supervised pre-training to rebuild ({exc}); "
            "start from a bundle written by `python -m models.pretrain`"
        ) from None
    say(ProgressReport(f"rebuilding the pre-trained weights of {manifest.version} ({config.epochs} epochs)"))
    data = build_dataset(config.train_seeds, n_bars=config.n_bars, labels=config.labels)
    agents = build_agents(config.seed)
    rebuilt: dict[str, str] = {}
    for name in AGENT_NAMES:
        train_agent(agents[name], data, config, lambda message: None, name)
        rebuilt[name] = weights_sha256(agents[name])
    start = StartingWeights(agents, rebuilt, {name: str(expected.get(name)) for name in AGENT_NAMES})
    if not start.reproduced:
        differing = ", ".join(name for name in AGENT_NAMES if rebuilt[name] != start.bundle_sha256[name])
        why = ("the same torch build, on a CPU with other kernels" if manifest.torch_version == torch.__version__
               else f"torch {manifest.torch_version} made it, {torch.__version__} rebuilt it")
        say(ProgressReport(
            f"warning: the rebuilt {differing} weights differ from bundle {manifest.version}'s in floating point "
            f"({why}): training starts from the rebuilt ones, and the new bundle's manifest says so "
            "(training.starting_weights_sha256); evaluation still compares with the bundle itself"
        ))
    return start


def training_markets(config: MappoConfig) -> list[MarketEvents]:
    environment = config.environment
    markets = [simulated_market_events(seed, config.n_bars, environment) for seed in config.train_seeds]
    for path in config.csv:
        bars = read_bars_csv(path)
        split = csv_split(len(bars), config.held_out.csv_holdout_fraction)
        markets.append(market_events(bars, f"csv-{Path(path).stem}-train", environment, end_bar=split))
    return markets


def validation_markets(config: MappoConfig) -> list[MarketEvents]:
    return [
        simulated_market_events(seed, config.n_bars, config.environment, name=f"validation-{seed}")
        for seed in config.validation_seeds
    ]


def validation_score(
    agents: Mapping[str, nn.Module], markets: Sequence[MarketEvents], environment: EnvironmentConfig
) -> dict[str, float]:
    """The worker's deterministic vote on the validation markets: total reward (R), PnL and trades."""
    policy = module_policy("validation", agents)
    reward = pnl = 0.0
    trades = 0
    for market in markets:
        probabilities, confidence = policy.votes(market)
        settled = settle(market, np.arange(len(market)), probabilities, confidence, environment)
        reward += float(settled.reward.sum())
        pnl += float(settled.pnl.sum())
        trades += int((settled.side != 0).sum())
    for agent in agents.values():
        agent.train()
    return {"reward": reward, "pnl": pnl, "trades": float(trades)}


@dataclass
class Rollout:
    matrices: np.ndarray  # (T, L, 60, 7)
    context: np.ndarray  # (T, L, C)
    actions: np.ndarray  # (T, L, agents)
    log_probs: np.ndarray  # (T, L, agents)
    values: np.ndarray  # (T, L)
    rewards: np.ndarray  # (T, L)
    dones: np.ndarray  # (T, L)
    executed: np.ndarray  # (T, L) bool
    last_value: np.ndarray  # (L,)


def _joint_probabilities(agents: Mapping[str, nn.Module], matrices: torch.Tensor) -> torch.Tensor:
    """(B, agents, actions)."""
    return torch.stack([agents[name](matrices)[0] for name in AGENT_NAMES], dim=1)


def collect_rollout(
    environment: TacticalEnvironment,
    agents: Mapping[str, nn.Module],
    critic: CentralCritic,
    steps: int,
    generator: torch.Generator,
) -> Rollout:
    lanes = environment.lanes
    matrices_t, context_t, actions_t, log_probs_t, values_t = [], [], [], [], []
    rewards, dones, executed = np.zeros((steps, lanes)), np.zeros((steps, lanes), dtype=bool), []
    with torch.no_grad():
        for t in range(steps):
            matrices, context = environment.observation()
            observation = torch.from_numpy(matrices)
            probabilities = _joint_probabilities(agents, observation)
            actions = torch.multinomial(probabilities.reshape(-1, N_ACTIONS), 1, generator=generator).reshape(
                lanes, N_AGENTS
            )
            chosen = probabilities.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
            values_t.append(critic(observation, torch.from_numpy(context)).numpy())
            step = environment.step(actions.numpy())
            matrices_t.append(matrices)
            context_t.append(context)
            actions_t.append(actions.numpy())
            log_probs_t.append(torch.log(chosen.clamp_min(1e-8)).numpy())
            rewards[t], dones[t] = step.reward, step.done
            executed.append(step.side != 0)
        matrices, context = environment.observation()
        last_value = critic(torch.from_numpy(matrices), torch.from_numpy(context)).numpy()
    return Rollout(
        matrices=np.stack(matrices_t),
        context=np.stack(context_t),
        actions=np.stack(actions_t),
        log_probs=np.stack(log_probs_t),
        values=np.stack(values_t).astype(np.float64),
        rewards=rewards,
        dones=dones,
        executed=np.stack(executed),
        last_value=last_value.astype(np.float64),
    )


def ppo_update(
    rollout: Rollout,
    agents: Mapping[str, nn.Module],
    critic: CentralCritic,
    actor_optimizer: torch.optim.Optimizer,
    critic_optimizer: torch.optim.Optimizer,
    config: MappoConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    advantages, returns = generalized_advantages(
        rollout.rewards, rollout.values, rollout.dones, rollout.last_value, config.gamma, config.gae_lambda
    )
    count = advantages.size
    flat_advantages = advantages.reshape(count)
    normalised = (flat_advantages - flat_advantages.mean()) / (flat_advantages.std() + 1e-8)
    matrices = torch.from_numpy(rollout.matrices.reshape(count, *rollout.matrices.shape[2:]))
    context = torch.from_numpy(rollout.context.reshape(count, -1))
    actions = torch.from_numpy(rollout.actions.reshape(count, N_AGENTS)).long()
    old_log_probs = torch.from_numpy(rollout.log_probs.reshape(count, N_AGENTS)).float()
    advantage = torch.from_numpy(normalised).float()
    target = torch.from_numpy(returns.reshape(count)).float()
    actor_parameters = [p for name in AGENT_NAMES for p in agents[name].parameters()]
    totals = {"actor_loss": 0.0, "critic_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0}
    updates = 0
    for _ in range(config.update_epochs):
        order = torch.randperm(count, generator=generator)
        for start in range(0, count, config.minibatch_size):
            rows = order[start : start + config.minibatch_size]
            probabilities = _joint_probabilities(agents, matrices[rows])
            log_all = torch.log(probabilities.clamp_min(1e-8))
            log_probs = log_all.gather(-1, actions[rows].unsqueeze(-1)).squeeze(-1)
            log_ratio = log_probs - old_log_probs[rows]
            ratio = torch.exp(log_ratio)
            team_advantage = advantage[rows].unsqueeze(-1)
            surrogate = torch.minimum(
                ratio * team_advantage,
                torch.clamp(ratio, 1.0 - config.clip_ratio, 1.0 + config.clip_ratio) * team_advantage,
            )
            entropy = -(probabilities * log_all).sum(dim=-1)
            actor_loss = -surrogate.mean(dim=0).sum() - config.entropy_coef * entropy.mean(dim=0).sum()
            actor_optimizer.zero_grad()
            actor_loss.backward()
            nn.utils.clip_grad_norm_(actor_parameters, config.max_grad_norm)
            actor_optimizer.step()

            value = critic(matrices[rows], context[rows])
            critic_loss = nn.functional.mse_loss(value, target[rows])
            critic_optimizer.zero_grad()
            critic_loss.backward()
            nn.utils.clip_grad_norm_(critic.parameters(), config.max_grad_norm)
            critic_optimizer.step()

            with torch.no_grad():
                totals["actor_loss"] += float(actor_loss)
                totals["critic_loss"] += float(critic_loss)
                totals["entropy"] += float(entropy.mean())
                totals["approx_kl"] += float(((ratio - 1.0) - log_ratio).mean())
                totals["clip_fraction"] += float(((ratio - 1.0).abs() > config.clip_ratio).float().mean())
            updates += 1
    return {key: value / updates for key, value in totals.items()}


@dataclass
class _RunState:
    iteration: int
    best_score: float
    best_iteration: int
    best_weights: dict[str, dict[str, torch.Tensor]]
    history: list[dict[str, float]]
    starting_weights_sha256: dict[str, str] | None  # None: resumed from a checkpoint that did not record them


def default_checkpoint_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "tactical-marl" / "mappo"


def checkpoint_path(config: MappoConfig, initial_version: str) -> Path:
    root = config.checkpoint_dir or default_checkpoint_root()
    return Path(root) / config.fingerprint(initial_version) / CHECKPOINT_FILE


def _state_dicts(agents: Mapping[str, nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    return {name: copy.deepcopy(agents[name].state_dict()) for name in AGENT_NAMES}


def save_checkpoint(
    path: Path,
    *,
    fingerprint: str,
    agents: Mapping[str, nn.Module],
    critic: CentralCritic,
    actor_optimizer: torch.optim.Optimizer,
    critic_optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    environment: TacticalEnvironment,
    state: _RunState,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "iteration": state.iteration,
        "agents": _state_dicts(agents),
        "critic": critic.state_dict(),
        "actor_optimizer": actor_optimizer.state_dict(),
        "critic_optimizer": critic_optimizer.state_dict(),
        "generator": generator.get_state(),
        "cursor": torch.from_numpy(environment.cursor.copy()),
        "best_score": state.best_score,
        "best_iteration": state.best_iteration,
        "best_weights": state.best_weights,
        "history": json.dumps(state.history),
        "starting_weights_sha256": json.dumps(state.starting_weights_sha256),
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise MappoError(f"checkpoint {path} cannot be read ({exc}); delete it to start over") from None
    if payload.get("format") != CHECKPOINT_FORMAT or payload.get("fingerprint") != fingerprint:
        raise MappoError(f"checkpoint {path} belongs to another run or format; delete it to start over")
    return payload


@dataclass(frozen=True, eq=False)
class TrainedAgents:
    agents: dict[str, nn.Module]
    initial_bundle: Path
    best_iteration: int
    history: list[dict[str, float]]
    training_sha256: str
    validation_sha256: str
    starting_weights_sha256: dict[str, str] | None
    resumed_from: int | None
    checkpoint: Path


def train_agents(config: MappoConfig, *, resume: bool = False, progress: Progress | None = None) -> TrainedAgents:
    """The MAPPO loop alone: returns the best validation iterate (eager modules) and the run's history."""
    say = progress or (lambda report: None)
    torch.set_num_threads(1)
    initial_dir = _initial_bundle_dir(config)
    fingerprint = config.fingerprint(initial_dir.name)
    checkpoint = checkpoint_path(config, initial_dir.name)
    payload = load_checkpoint(checkpoint, fingerprint) if resume and checkpoint.is_file() else None
    if resume and payload is None:
        say(ProgressReport(f"no checkpoint at {checkpoint}: starting a new run"))

    say(ProgressReport(f"simulating {len(config.train_seeds)} training and {len(config.validation_seeds)} "
                       "validation markets"))
    markets = training_markets(config)
    validation = validation_markets(config)
    if payload is None:
        start = pretrained_agents(initial_dir, say)
        agents, starting_sha256 = start.agents, start.sha256
    else:
        agents, starting_sha256 = build_agents(config.seed), json.loads(payload.get("starting_weights_sha256", "null"))
    critic = _seeded_critic(config.seed)
    critic.normalize.fit(torch.from_numpy(np.concatenate([m.matrices.reshape(-1, MATRIX_COLS) for m in markets])))
    actor_optimizer = torch.optim.Adam(
        [p for name in AGENT_NAMES for p in agents[name].parameters()], lr=config.actor_learning_rate
    )
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=config.critic_learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    environment = TacticalEnvironment(markets, config.environment, seed=config.seed)

    if payload is None:
        score = validation_score(agents, validation, config.environment) if validation else {}
        best = score.get("reward", float("-inf"))
        state = _RunState(0, best, 0, _state_dicts(agents), [{"iteration": 0, **_prefixed(score)}], starting_sha256)
        say(ProgressReport("starting weights", 0, config.iterations, _prefixed(score)))
    else:
        for name in AGENT_NAMES:
            agents[name].load_state_dict(payload["agents"][name])
        critic.load_state_dict(payload["critic"])
        actor_optimizer.load_state_dict(payload["actor_optimizer"])
        critic_optimizer.load_state_dict(payload["critic_optimizer"])
        generator.set_state(payload["generator"])
        environment.cursor = payload["cursor"].numpy().astype(np.int64).copy()
        state = _RunState(
            int(payload["iteration"]),
            float(payload["best_score"]),
            int(payload["best_iteration"]),
            payload["best_weights"],
            json.loads(payload["history"]),
            starting_sha256,
        )
        say(ProgressReport(f"resumed from {checkpoint} at iteration {state.iteration}", state.iteration,
                           config.iterations))
    resumed_from = None if payload is None else state.iteration

    def checkpoint_now() -> None:
        save_checkpoint(
            checkpoint, fingerprint=fingerprint, agents=agents, critic=critic, actor_optimizer=actor_optimizer,
            critic_optimizer=critic_optimizer, generator=generator, environment=environment, state=state,
        )

    for agent in agents.values():
        agent.train()
    while state.iteration < config.iterations:
        rollout = collect_rollout(environment, agents, critic, config.rollout_steps, generator)
        figures = ppo_update(rollout, agents, critic, actor_optimizer, critic_optimizer, config, generator)
        state.iteration += 1
        figures = {
            "iteration": state.iteration,
            "reward_per_event": float(rollout.rewards.mean()),
            "execution_rate": float(rollout.executed.mean()),
            **figures,
        }
        if not validation:
            state.best_iteration = state.iteration  # nothing to select on: the latest iterate is the result
        elif state.iteration % config.validate_every == 0 or state.iteration == config.iterations:
            score = validation_score(agents, validation, config.environment)
            figures.update(_prefixed(score))
            if score["reward"] > state.best_score:
                state.best_score, state.best_iteration = score["reward"], state.iteration
                state.best_weights = _state_dicts(agents)
        state.history.append(figures)
        say(ProgressReport("training", state.iteration, config.iterations, figures))
        if state.iteration % config.checkpoint_every == 0 or state.iteration == config.iterations:
            checkpoint_now()

    if validation:
        for name in AGENT_NAMES:
            agents[name].load_state_dict(state.best_weights[name])
    for agent in agents.values():
        agent.eval()
    return TrainedAgents(
        agents=dict(agents),
        initial_bundle=initial_dir,
        best_iteration=state.best_iteration,
        history=state.history,
        training_sha256=markets_sha256(markets),
        validation_sha256=markets_sha256(validation),
        starting_weights_sha256=state.starting_weights_sha256,
        resumed_from=resumed_from,
        checkpoint=checkpoint,
    )


def _prefixed(score: Mapping[str, float]) -> dict[str, float]:
    return {f"validation_{key}": round(value, 4) for key, value in score.items()}


def _seeded_critic(seed: int) -> CentralCritic:
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed + 7919)
        return CentralCritic()
    finally:
        torch.random.set_rng_state(state)


def _initial_bundle_dir(config: MappoConfig) -> Path:
    """The supervised bundle to start from: the one asked for, else CURRENT, else — CURRENT being a MAPPO bundle —
    the supervised bundle CURRENT itself started from (so the default retrains what is served)."""
    try:
        version = config.initial_bundle
        if version is None:
            current = current_bundle_dir(config.out)
            training = read_manifest(current).training
            if training.get("kind") != TRAINING_KIND:
                return current
            version = training.get("initial_bundle")
            if not isinstance(version, str) or not version:
                raise MappoError(f"CURRENT bundle {current.name} was trained by MAPPO but names no supervised bundle "
                                 "it started from: pass --initial-bundle")
        bundle_dir = Path(config.out) / version
        read_manifest(bundle_dir)
        return bundle_dir
    except BundleError as exc:
        raise MappoError(f"no supervised bundle to start from: {exc}") from None


@dataclass(frozen=True, eq=False)
class TrainingResult:
    bundle_dir: Path
    evaluation: Evaluation
    report: Path
    trained: TrainedAgents

    @property
    def beats_baselines(self) -> dict[str, bool]:
        return self.evaluation.beats("marl")


def train(config: MappoConfig, *, resume: bool = False, progress: Progress | None = None) -> TrainingResult:
    """Train, evaluate on held-out data against the baselines, and write a bundle (CURRENT is left alone:
    `models.promotion` decides). Returns the bundle and its evaluation."""
    say = progress or (lambda report: None)
    started = time.perf_counter()
    trained = train_agents(config, resume=resume, progress=say)
    say(ProgressReport("evaluating on held-out markets"))
    compiled = {name: compile_agent(trained.agents[name]) for name in AGENT_NAMES}
    policies = [
        module_policy("marl", compiled),
        *baseline_policies(config.held_out.random_seed),
        bundle_policy("supervised", trained.initial_bundle),
    ]
    markets = held_out_markets(config.held_out, config.environment)
    evaluation = evaluate_policies(policies, config.held_out, config.environment, markets=markets)
    initial_manifest = read_manifest(trained.initial_bundle)
    training = {
        "kind": TRAINING_KIND,
        "algorithm": "MAPPO: decentralised actors, centralised critic V(joint observation), GAE, clipped PPO",
        "config": config.as_json(),
        "seed": config.seed,
        "initial_bundle": initial_manifest.version,
        "data": {
            "train_markets": [f"sim-{s}" for s in config.train_seeds] + [str(p) for p in config.csv],
            "validation_markets": [f"validation-{s}" for s in config.validation_seeds],
            "n_bars_per_market": config.n_bars,
        },
        "data_sha256": trained.training_sha256,
        "validation_sha256": trained.validation_sha256,
        "best_iteration": trained.best_iteration,
        "history": _thinned_history(trained.history),
        "architectures": {name: AGENT_CLASSES[name].__name__ for name in AGENT_NAMES},
        "weights_sha256": {name: weights_sha256(trained.agents[name]) for name in AGENT_NAMES},
        # The supervised bundle's own weights, or (on another CPU) its pre-training re-run here: see
        # pretrained_agents. None when resumed from a checkpoint older than this record.
        "starting_weights_sha256": trained.starting_weights_sha256,
        "starting_weights_reproduced": (
            None if trained.starting_weights_sha256 is None
            else trained.starting_weights_sha256 == initial_manifest.training.get("weights_sha256")
        ),
        "threads": torch.get_num_threads(),
        "resumed_from_iteration": trained.resumed_from,
        "duration_seconds": round(time.perf_counter() - started, 1),
    }
    metrics = {"evaluation": evaluation.details(), "beats": evaluation.beats("marl")}
    say(ProgressReport("compiling the TorchScript bundle"))
    bundle_dir = compile_bundle(trained.agents, config.out, training=training, metrics=metrics)
    report = write_report(
        evaluation, bundle_dir / REPORT_DIR, title=f"Held-out evaluation of bundle {bundle_dir.name}",
        notes=[describe_training(training)],
    )
    say(ProgressReport(f"bundle {bundle_dir.name} written to {bundle_dir}"))
    return TrainingResult(bundle_dir=bundle_dir, evaluation=evaluation, report=report, trained=trained)


def describe_training(training: Mapping[str, Any]) -> str:
    """One line on how a MAPPO bundle was trained, for its report."""
    return (
        f"MAPPO from supervised bundle {training.get('initial_bundle')}, seed {training.get('seed')}, "
        f"{training.get('config', {}).get('iterations')} iterations (best validation iterate: "
        f"{training.get('best_iteration')}); the supervised baseline is that bundle."
    )


def _thinned_history(history: list[dict[str, float]], keep: int = 60) -> list[dict[str, float]]:
    """At most `keep` rows (the validated ones when there are any), rounded: the manifest stays small."""
    validated = [row for row in history if "validation_reward" in row] or history
    rows = validated if len(validated) <= keep else validated[:: -(-len(validated) // keep)]
    return [{k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.mappo", description=__doc__.splitlines()[0])
    defaults = MappoConfig()
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--initial-bundle", default=None,
                        help="supervised bundle to start from (default: CURRENT, or the supervised bundle CURRENT was "
                        "trained from when MAPPO made it)")
    parser.add_argument("--resume", action="store_true", help="continue from this configuration's checkpoint")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="default: ~/.cache/tactical-marl/mappo")
    args = parser.parse_args(argv)
    config = MappoConfig(
        out=args.out,
        seed=args.seed,
        iterations=args.iterations,
        initial_bundle=args.initial_bundle,
        checkpoint_dir=args.checkpoint_dir,
    )

    def show(report: ProgressReport) -> None:
        if report.iteration is None:
            print(report.message, flush=True)
        elif "validation_reward" in report.figures:
            figures = ", ".join(f"{k} {v:.4g}" for k, v in report.figures.items() if k != "iteration")
            print(f"iteration {report.iteration}/{report.iterations}: {figures}", flush=True)

    try:
        result = train(config, resume=args.resume, progress=show)
    except MappoError as exc:
        print(f"python -m models.mappo: {exc}", file=sys.stderr)
        return 1
    from models.evaluation import format_table

    print(format_table(result.evaluation))
    print(f"report: {result.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
