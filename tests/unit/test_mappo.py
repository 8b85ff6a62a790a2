from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from models.architectures import build_agents, weights_sha256
from models.bundle import read_current_version, read_manifest, verify_bundle
from models.evaluation import HEADLINE_METRICS, POLICY_NAMES, HeldOutConfig
from models.mappo import (
    CentralCritic,
    MappoConfig,
    MappoError,
    Rollout,
    generalized_advantages,
    ppo_update,
    pretrained_agents,
    train,
    train_agents,
)
from models.pretrain import PretrainConfig, pretrain
from worker.actions import AGENT_NAMES, Action

torch.set_num_threads(1)

LONG, HOLD = Action.LONG.index, Action.HOLD.index


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory whose CURRENT is a tiny supervised bundle."""
    out = tmp_path_factory.mktemp("models")
    pretrain(PretrainConfig(out=out, seed=3, train_seeds=(11,), eval_seeds=(12,), n_bars=1_500, epochs=2,
                            batch_size=64, max_steps_per_epoch=4))
    return out


def tiny_config(models_dir: Path, checkpoints: Path, **overrides: object) -> MappoConfig:
    config = MappoConfig(
        out=models_dir, seed=5, train_seeds=(21, 22), validation_seeds=(23,), n_bars=3_000, iterations=4,
        rollout_steps=16, minibatch_size=32, validate_every=2, checkpoint_every=2, checkpoint_dir=checkpoints,
        held_out=HeldOutConfig(seeds=(31,), regimes=("default",), n_bars=3_000),
    )
    return replace(config, **overrides)  # type: ignore[arg-type]


def fingerprint(agents: dict[str, torch.nn.Module]) -> dict[str, str]:
    return {name: weights_sha256(agents[name]) for name in AGENT_NAMES}


def test_gae_matches_a_hand_computation_and_stops_at_episode_ends() -> None:
    rewards = np.array([[1.0], [0.0], [2.0]])
    values = np.array([[0.5], [1.0], [0.2]])
    dones = np.array([[False], [True], [False]])
    advantages, returns = generalized_advantages(rewards, values, dones, np.array([0.4]), gamma=0.9, lam=0.8)
    delta2 = 2.0 + 0.9 * 0.4 - 0.2
    delta1 = 0.0 - 1.0  # the episode ends after step 1: nothing after it counts
    delta0 = 1.0 + 0.9 * 1.0 - 0.5
    expected = [delta0 + 0.9 * 0.8 * delta1, delta1, delta2]
    np.testing.assert_allclose(advantages[:, 0], expected)
    np.testing.assert_allclose(returns, advantages + values)


def test_gae_with_gamma_zero_credits_each_step_with_its_own_reward() -> None:
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    advantages, returns = generalized_advantages(rewards, values, np.zeros((5, 3), bool), rng.normal(size=3), 0.0,
                                                 0.95)
    np.testing.assert_allclose(advantages, rewards - values)
    np.testing.assert_allclose(returns, rewards)


def test_clipped_update_makes_rewarded_votes_more_likely() -> None:
    agents = build_agents(0)
    critic = CentralCritic()
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    steps, lanes = 16, 8
    matrices = rng.normal(size=(steps, lanes, 60, 7)).astype(np.float32)
    actions = rng.integers(0, 3, size=(steps, lanes, 3))
    with torch.no_grad():
        flat = torch.from_numpy(matrices.reshape(-1, 60, 7))
        probabilities = torch.stack([agents[n](flat)[0] for n in AGENT_NAMES], dim=1).numpy()
    chosen = np.take_along_axis(probabilities, actions.reshape(-1, 3)[..., None], axis=-1)[..., 0]
    rollout = Rollout(
        matrices=matrices, context=np.zeros((steps, lanes, 6), np.float32), actions=actions,
        log_probs=np.log(chosen).reshape(steps, lanes, 3), values=np.zeros((steps, lanes)),
        rewards=np.where(actions[..., 0] == LONG, 1.0, -1.0),  # the team is paid when fvg votes long
        dones=np.zeros((steps, lanes), bool), executed=np.zeros((steps, lanes), bool), last_value=np.zeros(lanes),
    )
    config = MappoConfig(actor_learning_rate=1e-2, update_epochs=4, minibatch_size=32, train_seeds=(1,))
    actor = torch.optim.Adam([p for n in AGENT_NAMES for p in agents[n].parameters()], lr=config.actor_learning_rate)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
    before = probabilities[:, 0, LONG].mean()
    figures = ppo_update(rollout, agents, critic, actor, critic_optimizer, config, generator)
    with torch.no_grad():
        after = agents["fvg"](flat)[0][:, LONG].mean().item()
    assert after > before + 0.05
    assert figures["clip_fraction"] > 0  # the ratio did hit the clip: the objective is the clipped one


def test_actors_start_from_the_supervised_weights(models_dir: Path) -> None:
    current = read_current_version(models_dir)
    assert current is not None
    bundle = models_dir / current
    start = pretrained_agents(bundle)
    assert start.reproduced
    assert fingerprint(start.agents) == read_manifest(bundle).training["weights_sha256"]


def test_a_bundle_pretrained_on_another_cpu_still_trains_and_says_from_what(
    models_dir: Path, tmp_path: Path
) -> None:
    # Another CPU's kernels round the same pre-training differently: its bundle records weights this host cannot
    # rebuild bit for bit. Training must still run (warned), and record the weights it really started from.
    elsewhere = tmp_path / "models"
    shutil.copytree(models_dir, elsewhere)
    current = read_current_version(elsewhere)
    assert current is not None
    bundle = elsewhere / current
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    rebuilt_here = dict(manifest["training"]["weights_sha256"])
    manifest["training"]["weights_sha256"]["momentum"] = "f" * 64
    manifest_path.write_text(json.dumps(manifest))

    said: list[str] = []
    partial = train_agents(tiny_config(elsewhere, tmp_path / "checkpoints", iterations=2),
                           progress=lambda report: said.append(report.message))
    warnings = [message for message in said if message.startswith("warning:")]
    assert len(warnings) == 1 and "momentum" in warnings[0] and "fvg" not in warnings[0]
    assert partial.starting_weights_sha256 == rebuilt_here
    resumed = train_agents(tiny_config(elsewhere, tmp_path / "checkpoints"), resume=True)
    assert resumed.resumed_from == 2 and resumed.starting_weights_sha256 == rebuilt_here  # kept by the checkpoint


def test_same_seed_same_weights_and_history(models_dir: Path, tmp_path: Path) -> None:
    first = train_agents(tiny_config(models_dir, tmp_path / "a"))
    second = train_agents(tiny_config(models_dir, tmp_path / "b"))
    assert fingerprint(first.agents) == fingerprint(second.agents)
    assert first.history == second.history
    assert first.training_sha256 == second.training_sha256
    other_seed = train_agents(tiny_config(models_dir, tmp_path / "c", seed=6))
    assert other_seed.history != first.history


def test_resuming_a_checkpoint_continues_exactly(models_dir: Path, tmp_path: Path) -> None:
    straight = train_agents(tiny_config(models_dir, tmp_path / "straight", validate_every=1))
    partial = train_agents(tiny_config(models_dir, tmp_path / "resumed", iterations=2, validate_every=1))
    assert partial.checkpoint.is_file()
    resumed = train_agents(tiny_config(models_dir, tmp_path / "resumed", validate_every=1), resume=True)
    assert resumed.resumed_from == 2
    assert fingerprint(resumed.agents) == fingerprint(straight.agents)
    assert resumed.history == straight.history


def test_a_checkpoint_of_another_run_is_refused(models_dir: Path, tmp_path: Path) -> None:
    done = train_agents(tiny_config(models_dir, tmp_path, iterations=2))
    other = tiny_config(models_dir, tmp_path, seed=99)
    done.checkpoint.parent.rename(done.checkpoint.parent.with_name(other.fingerprint(done.initial_bundle.name)))
    with pytest.raises(MappoError, match="another run"):
        train_agents(other, resume=True)


def test_config_refuses_training_on_held_out_markets(models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(MappoError, match="held out"):
        tiny_config(models_dir, tmp_path, train_seeds=(21, 31))
    with pytest.raises(MappoError, match="overlap"):
        tiny_config(models_dir, tmp_path, validation_seeds=(22,))


def test_train_writes_a_bundle_recording_config_data_seed_and_evaluation(models_dir: Path, tmp_path: Path) -> None:
    current = read_current_version(models_dir)
    assert current is not None
    result = train(tiny_config(models_dir, tmp_path, iterations=2))
    manifest = verify_bundle(result.bundle_dir)
    training = manifest.training
    assert training["kind"] == "mappo" and training["seed"] == 5 and training["initial_bundle"] == current
    assert training["config"]["iterations"] == 2 and training["config"]["train_seeds"] == [21, 22]
    assert training["data_sha256"] == result.trained.training_sha256
    assert training["weights_sha256"] == fingerprint(result.trained.agents)
    assert training["starting_weights_reproduced"] is True
    assert training["starting_weights_sha256"] == read_manifest(models_dir / current).training["weights_sha256"]
    policies = manifest.metrics["evaluation"]["policies"]
    assert set(policies) == set(POLICY_NAMES)
    assert all(set(HEADLINE_METRICS) <= set(figures) for figures in policies.values())
    assert manifest.metrics["evaluation"]["held_out"]["seeds"] == [31]
    assert (result.bundle_dir / "evaluation" / "report.md").is_file()
    assert read_current_version(models_dir) == current  # promotion decides, not training


def test_models_train_cli_trains_and_reports(models_dir: Path, tmp_path: Path) -> None:
    from tacticalctl.app import app

    result = CliRunner().invoke(app, [
        "models", "train", "--models-dir", str(models_dir), "--iterations", "1", "--n-bars", "3000",
        "--train-seeds", "21,22", "--validation-seeds", "", "--held-out-seeds", "31", "--regimes", "default",
        "--checkpoint-dir", str(tmp_path), "--json",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert set(printed["policies"]) == set(POLICY_NAMES)
    assert printed["promoted"] is False and printed["best_iteration"] == 1
    assert read_manifest(Path(printed["bundle_dir"])).training["config"]["validation_seeds"] == []


def test_models_train_cli_refuses_force_without_promote(models_dir: Path) -> None:
    from tacticalctl.app import app

    result = CliRunner().invoke(app, ["models", "train", "--models-dir", str(models_dir), "--force"])
    assert result.exit_code == 3 and "--force only makes sense with --promote" in result.output


def test_by_default_training_starts_where_the_served_mappo_bundle_started() -> None:
    # The shipped CURRENT was made by MAPPO; `tacticalctl models train` with no --initial-bundle retrains from its
    # supervised bundle, as the README's commands assume.
    from models.bundle import current_bundle_dir, read_manifest
    from models.mappo import _initial_bundle_dir
    from worker.settings import default_models_dir

    current = read_manifest(current_bundle_dir(default_models_dir()))
    assert current.training["kind"] == "mappo"
    assert _initial_bundle_dir(MappoConfig()).name == current.training["initial_bundle"]


def test_a_training_that_cannot_start_is_one_line_and_exit_1(tmp_path: Path, capsys) -> None:
    from models.mappo import main

    assert main(["--out", str(tmp_path), "--initial-bundle", "20990101T000000Z-deadbeef"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m models.mappo: no supervised bundle to start from") and err.count("\n") == 1


def test_models_train_cli_says_when_its_promotion_could_not_run(models_dir: Path, tmp_path: Path,
                                                               redis_url: str) -> None:
    from models.promotion import promotion_lock
    from tacticalctl.app import app

    with promotion_lock(models_dir):  # another promotion is running
        result = CliRunner().invoke(app, [
            "--redis-url", redis_url, "models", "train", "--models-dir", str(models_dir), "--iterations", "1",
            "--n-bars", "3000",
            "--train-seeds", "21,22", "--validation-seeds", "", "--held-out-seeds", "31", "--regimes", "default",
            "--checkpoint-dir", str(tmp_path), "--promote", "--json",
        ], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    printed = json.loads(result.output)
    assert printed["promoted"] is False and "another promotion of" in printed["refused"]
    assert Path(printed["bundle_dir"]).is_dir(), "the training's bundle is kept and reported"


@pytest.mark.parametrize("as_json", [True, False])
def test_models_train_promote_refused_by_the_gate_exits_1(models_dir: Path, tmp_path: Path, redis_url: str,
                                                          as_json: bool) -> None:
    """One iteration on a short market does not beat the shipped CURRENT: the bundle is kept, CURRENT stays, and the
    exit code says it was not promoted (a script's `train --promote && deploy` stops), as a dry run of `models
    promote` does."""
    from models.bundle import read_current_version
    from tacticalctl.app import app

    before = read_current_version(models_dir)
    result = CliRunner().invoke(app, [
        "--redis-url", redis_url, "models", "train", "--models-dir", str(models_dir), "--iterations", "1",
        "--n-bars", "3000", "--train-seeds", "21,22", "--validation-seeds", "", "--held-out-seeds", "31",
        "--regimes", "default", "--checkpoint-dir", str(tmp_path), "--promote", *(["--json"] if as_json else []),
    ], catch_exceptions=False)
    if read_current_version(models_dir) != before:
        pytest.skip("this one iteration beat CURRENT on its held-out market: nothing refused to see")
    assert result.exit_code == 1, result.output
    if as_json:
        assert json.loads(result.output)["refused"]
    else:
        assert "not promoted" in result.output


def test_models_train_promote_is_refused_before_training_when_the_audit_trail_is_not_a_stream(
    models_dir: Path, tmp_path: Path, redis_url: str, redis_client
) -> None:
    from tacticalctl.app import app

    redis_client.set("tactical_alerts", "not a stream")
    before = sorted(p.name for p in models_dir.iterdir())
    result = CliRunner().invoke(app, [
        "--redis-url", redis_url, "models", "train", "--models-dir", str(models_dir), "--iterations", "1",
        "--n-bars", "3000", "--train-seeds", "21,22", "--validation-seeds", "", "--held-out-seeds", "31",
        "--regimes", "default", "--checkpoint-dir", str(tmp_path), "--promote",
    ], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "tactical_alerts is a string, not a stream" in result.output
    assert sorted(p.name for p in models_dir.iterdir()) == before, "nothing trained, no bundle written"
