from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from models.bars import read_bars_csv
from models.bundle import read_manifest
from models.environment import EnvironmentConfig, MarketEvents, simulated_market_events
from models.evaluation import (
    HEADLINE_METRICS,
    POLICY_NAMES,
    EvaluationError,
    HeldOutConfig,
    HoldPolicy,
    RandomPolicy,
    RuleFVGPolicy,
    csv_split,
    daily_pnl,
    directional_accuracy,
    evaluate_policies,
    held_out_markets,
    max_drawdown,
    rule_fvg_actions,
    sharpe_ratio,
    write_report,
)
from models.features import FEATURE_INDEX
from models.mappo import MappoConfig, train
from models.pretrain import PretrainConfig, pretrain
from worker.actions import Action

torch.set_num_threads(1)

SHORT, HOLD, LONG = Action.SHORT.index, Action.HOLD.index, Action.LONG.index
SAMPLE_CSV = Path(__file__).resolve().parents[2] / "models" / "data" / "sample_bars.csv"
TINY_HELD_OUT = HeldOutConfig(seeds=(31,), regimes=("default",), n_bars=3_000)


@pytest.fixture(scope="module")
def market() -> MarketEvents:
    return simulated_market_events(31, 3_000, EnvironmentConfig())


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny supervised bundle, and a tiny MAPPO bundle trained from it (a few seconds)."""
    out = tmp_path_factory.mktemp("models")
    pretrain(PretrainConfig(out=out, seed=3, train_seeds=(11,), eval_seeds=(12,), n_bars=1_500, epochs=2,
                            batch_size=64, max_steps_per_epoch=4))
    config = MappoConfig(out=out, train_seeds=(21, 22), validation_seeds=(23,), n_bars=3_000, iterations=2,
                         rollout_steps=16, minibatch_size=32, validate_every=1,
                         checkpoint_dir=tmp_path_factory.mktemp("checkpoints"), held_out=TINY_HELD_OUT)
    return train(config).bundle_dir


def test_sharpe_is_annualised_mean_over_standard_deviation_of_daily_pnl() -> None:
    daily = np.array([1.0, 3.0, 2.0, 2.0])
    assert sharpe_ratio(daily) == pytest.approx(2.0 / np.std(daily, ddof=1) * np.sqrt(252))
    assert sharpe_ratio(np.zeros(10)) == 0.0
    assert sharpe_ratio(np.array([5.0])) == 0.0
    assert sharpe_ratio(np.array([-1.0, -3.0])) < 0


def test_max_drawdown_is_the_largest_fall_from_a_running_peak() -> None:
    assert max_drawdown(np.cumsum([5.0, -2.0, 4.0, -6.0, 1.0])) == pytest.approx(6.0)
    assert max_drawdown(np.cumsum([-3.0, 1.0])) == pytest.approx(3.0)  # the start (0) is a peak too
    assert max_drawdown(np.cumsum([1.0, 2.0])) == 0.0
    assert max_drawdown(np.zeros(0)) == 0.0


def test_daily_pnl_sums_each_calendar_day() -> None:
    times = np.array(["2026-01-05T10:00", "2026-01-05T15:00", "2026-01-06T09:00", "2026-01-08T09:00"],
                     dtype="datetime64[s]")
    np.testing.assert_allclose(daily_pnl(np.array([1.0, 2.0, -4.0, 0.0]), times), [3.0, -4.0, 0.0])


def test_directional_accuracy_counts_leaning_votes_on_moved_events_only() -> None:
    lean = np.array([0.4, -0.2, 0.3, 0.0, 0.5, -0.1])
    labels = np.array([LONG, LONG, SHORT, LONG, HOLD, SHORT])
    # counted: rows 0 (right), 1 (wrong), 2 (wrong), 5 (right); row 3 never leaned, row 4 did not move.
    assert directional_accuracy(lean, labels) == pytest.approx(0.5)
    assert directional_accuracy(np.zeros(4), np.array([LONG, SHORT, LONG, SHORT])) is None


def test_rule_fvg_trades_toward_the_nearest_active_gap() -> None:
    matrices = np.zeros((4, 60, 7), dtype=np.float32)
    bullish, bearish, level = (FEATURE_INDEX[n] for n in ("fvg_bullish_active", "fvg_bearish_active",
                                                          "fvg_nearest_level"))
    matrices[0, -1, [bullish, level]] = [1.0, -0.3]  # bullish gap below price: long
    matrices[1, -1, [bearish, level]] = [1.0, 0.4]  # bearish gap above: short
    matrices[2, -1, [bullish, bearish, level]] = [1.0, 1.0, 0.2]  # nearest is the bearish one above: short
    assert rule_fvg_actions(matrices).tolist() == [LONG, SHORT, SHORT, HOLD]


def test_random_votes_are_seeded_per_market(market: MarketEvents) -> None:
    first, _ = RandomPolicy(seed=4).votes(market)
    again, _ = RandomPolicy(seed=4).votes(market)
    other, _ = RandomPolicy(seed=5).votes(market)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert set(np.unique(first.argmax(axis=2))) == {SHORT, HOLD, LONG}


def test_baselines_on_held_out_data(market: MarketEvents) -> None:
    evaluation = evaluate_policies([HoldPolicy(), RandomPolicy(), RuleFVGPolicy()], TINY_HELD_OUT,
                                   EnvironmentConfig(), markets=[market])
    hold = evaluation.results["hold"]
    assert (hold.pnl, hold.sharpe, hold.max_drawdown, hold.execution_rate, hold.trades) == (0.0, 0.0, 0.0, 0.0, 0)
    assert hold.accuracy is None and set(hold.agent_accuracy.values()) == {None}
    rule = evaluation.results["rule_fvg"]
    assert 0 < rule.trades <= len(market) and rule.execution_rate == rule.trades / len(market)
    assert rule.equity.shape == (len(market),) and rule.equity[-1] == pytest.approx(rule.pnl)
    assert evaluation.held_out["events"] == len(market)
    assert set(evaluation.as_json()) == {"policies"}
    for figures in evaluation.as_json()["policies"].values():
        assert tuple(figures) == HEADLINE_METRICS


def test_held_out_data_includes_the_last_slice_of_a_csv() -> None:
    config = HeldOutConfig(seeds=(), regimes=(), csv=(SAMPLE_CSV,), csv_holdout_fraction=0.5)
    environment = EnvironmentConfig(max_holding_bars=6)
    (csv_market,) = held_out_markets(config, environment)
    bars = read_bars_csv(SAMPLE_CSV)
    split = csv_split(len(bars), 0.5)
    assert split == len(bars) // 2
    assert csv_market.name == "csv-sample_bars-heldout" and len(csv_market) > 0
    assert csv_market.timestamps.min() >= bars.timestamps[split]
    with pytest.raises(EvaluationError, match="empty"):
        HeldOutConfig(seeds=(), regimes=())
    with pytest.raises(EvaluationError, match="unknown regime"):
        HeldOutConfig(regimes=("sideways",))


def test_held_out_markets_are_made_once_for_the_same_settings_and_files(tmp_path: Path) -> None:
    """A dry run then --yes, or several bundles compared, score on the same markets: made once, and read-only, since
    every later caller shares them. Other settings, or a CSV changed since, make them again."""
    csv = tmp_path / "bars.csv"
    csv.write_text(SAMPLE_CSV.read_text())
    config = HeldOutConfig(seeds=(5,), regimes=("default",), n_bars=2_000, csv=(csv,), csv_holdout_fraction=0.5)
    environment = EnvironmentConfig(max_holding_bars=6)
    first = held_out_markets(config, environment)
    again = held_out_markets(config, EnvironmentConfig(max_holding_bars=6))
    assert [a is b for a, b in zip(first, again, strict=True)] == [True, True]
    with pytest.raises(ValueError, match="read-only"):
        first[0].matrices[0, 0, 0] = 1.0

    assert held_out_markets(config, EnvironmentConfig(max_holding_bars=7))[0] is not first[0]
    other = held_out_markets(config, environment)
    assert other[0] is not first[0] and np.array_equal(other[0].matrices, first[0].matrices)

    lines = SAMPLE_CSV.read_text().splitlines()
    csv.write_text("\n".join(lines[: len(lines) // 2]) + "\n")  # the file edited since: its held-out slice moves
    os.utime(csv, ns=(csv.stat().st_atime_ns, csv.stat().st_mtime_ns + 1_000_000_000))
    edited = held_out_markets(config, environment)
    assert edited[1] is not other[1] and len(edited[1]) < len(other[1])


def test_report_has_a_table_and_two_png_plots(market: MarketEvents, tmp_path: Path) -> None:
    evaluation = evaluate_policies([HoldPolicy(), RuleFVGPolicy()], TINY_HELD_OUT, EnvironmentConfig(),
                                   markets=[market])
    report = write_report(evaluation, tmp_path / "report", title="Held-out evaluation of test")
    text = report.read_text(encoding="utf-8")
    assert text.startswith("# Held-out evaluation of test")
    assert "| rule_fvg |" in text and "| hold |" in text and "(equity.png)" in text and "(agent_accuracy.png)" in text
    for plot in ("equity.png", "agent_accuracy.png"):
        assert (tmp_path / "report" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_models_eval_json_prints_the_five_policies_as_recorded(trained_bundle: Path) -> None:
    from tacticalctl.app import app

    training_report = (trained_bundle / "evaluation" / "report.md").read_bytes()
    result = CliRunner().invoke(
        app, ["models", "eval", trained_bundle.name, "--models-dir", str(trained_bundle.parent), "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert set(printed) == {"policies", "report"} and set(printed["policies"]) == set(POLICY_NAMES)
    for figures in printed["policies"].values():
        assert set(figures) == set(HEADLINE_METRICS)
    assert printed["policies"]["hold"]["accuracy"] is None
    # The compiled bundle, evaluated by the CLI on the recorded held-out data, gives the manifest's figures.
    recorded = read_manifest(trained_bundle).metrics["evaluation"]["policies"]
    for name in POLICY_NAMES:
        assert printed["policies"][name] == {key: recorded[name][key] for key in HEADLINE_METRICS}
    # A re-evaluation writes a report of its own: the one training wrote stays as it was, the bundle's record.
    report = Path(printed["report"])
    assert report.is_file() and report.parent.parent == trained_bundle / "evaluation" / "runs"
    assert (trained_bundle / "evaluation" / "report.md").read_bytes() == training_report


def test_models_eval_refuses_a_supervised_bundle(trained_bundle: Path) -> None:
    from tacticalctl.app import app

    supervised = read_manifest(trained_bundle).training["initial_bundle"]
    result = CliRunner().invoke(app, ["models", "eval", supervised, "--models-dir", str(trained_bundle.parent)])
    assert result.exit_code == 3
    assert "not a MAPPO bundle" in result.output
