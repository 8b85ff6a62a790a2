from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.bundle import current_bundle_dir, list_bundles, read_manifest, verify_bundle
from models.dataset import NO_SYNERGY, SYNERGY_TYPES, LabelConfig, build_dataset, forward_labels
from models.features import average_true_range, build_features, feature_window
from models.pretrain import PretrainConfig, directional_hits, main, pretrain
from models.simulator import SimulatorConfig, simulate_bars
from models.synergy import detect_synergies
from worker.inference import AgentEnsemble
from worker.settings import default_models_dir

torch.set_num_threads(1)

SHORT, HOLD, LONG, UNKNOWN = 0, 1, 2, -1


def tiny_config(out: Path, seed: int = 3) -> PretrainConfig:
    return PretrainConfig(
        out=out,
        seed=seed,
        train_seeds=(11,),
        eval_seeds=(12,),
        n_bars=1_500,
        epochs=2,
        batch_size=64,
        max_steps_per_epoch=4,
    )


def test_label_is_the_forward_move_measured_in_atr() -> None:
    close = np.array([100.0, 101.0, 103.0, 100.0, 98.0, 98.5])
    atr = np.ones(6)
    labels = forward_labels(close, atr, LabelConfig(horizon=2, atr_multiple=1.5))
    # 100→103 (+3 > 1.5) long; 101→100 hold; 103→98 short; 100→98.5 exactly -1.5 is not beyond: hold.
    assert labels.tolist() == [LONG, HOLD, SHORT, HOLD, UNKNOWN, UNKNOWN]


def test_label_threshold_scales_with_atr() -> None:
    close = np.array([100.0, 100.0, 103.0])
    assert forward_labels(close, np.full(3, 1.0), LabelConfig(horizon=2, atr_multiple=1.0))[0] == LONG
    assert forward_labels(close, np.full(3, 4.0), LabelConfig(horizon=2, atr_multiple=1.0))[0] == HOLD


def test_dataset_samples_are_the_worker_windows_with_future_labels_and_synergies() -> None:
    labels = LabelConfig(horizon=24, atr_multiple=1.5)
    dataset = build_dataset([5], n_bars=2_000, labels=labels)
    bars = simulate_bars(SimulatorConfig(seed=5, n_bars=2_000))
    features = build_features(bars)
    expected_labels = forward_labels(bars.close, average_true_range(bars), labels)

    assert dataset.ends.min() == 59 and dataset.ends.max() == 2_000 - 24 - 1
    rows = np.array([0, 7, len(dataset) - 1])
    for row, window in zip(rows, dataset.windows(rows), strict=True):
        end = int(dataset.ends[row])
        np.testing.assert_array_equal(window, feature_window(features, end))
        assert dataset.labels[row] == expected_labels[end]
        assert dataset.price[row] == bars.close[end]

    synergies = {s.index: s for s in detect_synergies(bars, features)}
    marked = {int(end): row for row, end in enumerate(dataset.ends) if dataset.synergy_type[row] != NO_SYNERGY}
    assert set(marked) == {i for i in synergies if i <= dataset.ends.max()}
    for index, row in marked.items():
        assert SYNERGY_TYPES[dataset.synergy_type[row]] == synergies[index].synergy_type
        assert dataset.direction[row] == synergies[index].direction


def test_dataset_hash_identifies_its_content() -> None:
    labels = LabelConfig()
    first = build_dataset([5], n_bars=800, labels=labels)
    assert first.sha256() == build_dataset([5], n_bars=800, labels=labels).sha256()
    assert first.sha256() != build_dataset([6], n_bars=800, labels=labels).sha256()
    assert first.sha256() != build_dataset([5], n_bars=800, labels=LabelConfig(horizon=12)).sha256()


def test_directional_hits_only_count_bars_that_moved() -> None:
    lean = np.array([0.3, -0.2, 0.1, 0.5])
    labels = np.array([LONG, LONG, HOLD, SHORT])
    assert directional_hits(lean, labels).tolist() == [True, False, False]


def test_train_and_held_out_markets_must_differ(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="overlap"):
        PretrainConfig(out=tmp_path, train_seeds=(1, 2), eval_seeds=(2,))


def test_a_tiny_pretrain_is_reproducible_and_publishes_a_verified_current_bundle(tmp_path: Path) -> None:
    first = read_manifest(pretrain(tiny_config(tmp_path / "a")))
    again = read_manifest(pretrain(tiny_config(tmp_path / "b")))
    other = read_manifest(pretrain(tiny_config(tmp_path / "c", seed=4)))

    assert first.training["weights_sha256"] == again.training["weights_sha256"]
    assert first.training["epoch_losses"] == again.training["epoch_losses"]
    assert first.metrics == again.metrics
    assert first.training["data_sha256"] == other.training["data_sha256"]
    assert first.training["weights_sha256"] != other.training["weights_sha256"]

    assert first.bundle_dir is not None
    assert current_bundle_dir(tmp_path / "a") == first.bundle_dir
    # A directory that has a CURRENT keeps it: a new bundle replaces it only through the promotion gate.
    second = pretrain(tiny_config(tmp_path / "a", seed=4))
    assert second != first.bundle_dir and current_bundle_dir(tmp_path / "a") == first.bundle_dir
    assert verify_bundle(first.bundle_dir).version == first.version
    assert first.training["config"]["train_seeds"] == [11]
    assert first.training["data"]["label"]["horizon"] == 24
    for name in ("fvg", "momentum", "entry"):
        assert 0.0 <= first.metrics["agents"][name]["accuracy"] <= 1.0
    assert first.metrics["baseline"]["majority_class"] in ("short", "hold", "long")
    assert first.metrics["vote"]["samples"] == first.metrics["held_out"]["synergy_samples"]


def test_the_command_line_trains_and_prints_the_metrics(tmp_path: Path, capsys) -> None:
    argv = ["--out", str(tmp_path), "--seed", "1", "--epochs", "1", "--n-bars", "900"]
    assert main([*argv, "--train-seeds", "21", "--eval-seeds", "22", "--no-set-current"]) == 0
    printed = capsys.readouterr().out
    assert "training momentum" in printed
    assert "baseline" in printed and "vote" in printed
    assert not (tmp_path / "CURRENT").exists()
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1


def test_the_shipped_agents_beat_the_baselines_on_a_market_nobody_trained_or_evaluated_on() -> None:
    # The supervised bundle shipped beside the MAPPO one (CURRENT), which started from it.
    manifest = next(m for m in list_bundles(default_models_dir()) if m.training.get("kind") != "mappo")
    config = manifest.training["config"]
    unseen_seed = 9_001
    assert unseen_seed not in config["train_seeds"] + config["eval_seeds"]
    labels = LabelConfig(horizon=config["horizon"], atr_multiple=config["atr_multiple"])
    market = build_dataset([unseen_seed], n_bars=6_000, labels=labels)
    assert manifest.bundle_dir is not None
    probabilities, _ = AgentEnsemble.load(manifest.bundle_dir, warmup_batch_sizes=(1,)).infer(market.windows())

    majority_rate = float(np.bincount(market.labels, minlength=3).max() / len(market))
    moved = market.labels != HOLD
    best_constant_direction = max(np.mean(market.labels[moved] == LONG), np.mean(market.labels[moved] == SHORT))
    for agent in range(3):
        p = probabilities[:, agent]
        assert np.mean(p.argmax(axis=1) == market.labels) > majority_rate + 0.05
        assert np.mean(directional_hits(p[:, 2] - p[:, 0], market.labels)) > best_constant_direction + 0.05
