from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import redis
import torch
from torch import nn

from models.architectures import build_agents
from models.bundle import list_bundles, read_current_version, set_current
from models.compile import compile_bundle
from models.evaluation import HeldOutConfig
from models.promotion import PromotionRefusedError, judge, promote_if_better
from worker.actions import Action
from worker.names import ALERTS_STREAM
from worker.settings import default_models_dir
from worker.stream_entries import entries

torch.set_num_threads(1)

HELD_OUT = HeldOutConfig(seeds=(31,), regimes=("default",), n_bars=4_000)


def always_hold_agents() -> dict[str, nn.Module]:
    """The real architectures with their output layer zeroed and biased to hold: they never trade."""
    agents = build_agents(0)
    for agent in agents.values():
        output = [m for m in agent.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            output.weight.zero_()
            output.bias.copy_(torch.tensor([-5.0, 5.0, -5.0]))
    return agents


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A models directory with the shipped supervised bundle (which trades profitably on simulated markets) and
    an always-hold bundle (which never trades)."""
    out = tmp_path_factory.mktemp("models")
    supervised = next(m for m in list_bundles(default_models_dir()) if m.training.get("kind") != "mappo")
    assert supervised.bundle_dir is not None
    shutil.copytree(supervised.bundle_dir, out / supervised.version)
    hold = compile_bundle(always_hold_agents(), out, training={"kind": "test"}, metrics={})
    return out, supervised.version, hold.name


def alerts(client: redis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries(client, ALERTS_STREAM)]


def test_a_bundle_that_beats_current_is_promoted_and_audited(
    bundles: tuple[Path, str, str], redis_client: redis.Redis
) -> None:
    models_dir, supervised, hold = bundles
    set_current(models_dir, hold)
    promotion = promote_if_better(models_dir, supervised, client=redis_client, actor="ops@test", held_out=HELD_OUT)
    assert read_current_version(models_dir) == supervised
    assert promotion.previous == hold and not promotion.forced and promotion.verdict.beats
    candidate_pnl, current_figures = promotion.verdict.candidate_figures["pnl"], promotion.verdict.current_figures
    assert candidate_pnl is not None and current_figures is not None
    assert candidate_pnl > 0 == current_figures["pnl"]
    (entry,) = alerts(redis_client)
    assert entry["kind"] == "model_promote" and entry["actor"] == "ops@test" and entry["forced"] == "false"
    assert (entry["previous"], entry["version"]) == (hold, supervised)
    assert json.loads(entry["candidate_figures"]) == promotion.verdict.candidate_figures
    assert promotion.audit_id is not None


def test_a_bundle_that_does_not_beat_current_is_refused_and_current_stays(
    bundles: tuple[Path, str, str], redis_client: redis.Redis
) -> None:
    models_dir, supervised, hold = bundles
    set_current(models_dir, supervised)
    with pytest.raises(PromotionRefusedError, match="does not beat") as refused:
        promote_if_better(models_dir, hold, client=redis_client, actor="ops@test", held_out=HELD_OUT)
    assert read_current_version(models_dir) == supervised
    assert not refused.value.verdict.beats
    (entry,) = alerts(redis_client)
    assert entry["kind"] == "model_promote_refused" and entry["version"] == hold


def test_forcing_promotes_a_losing_bundle_and_says_so_in_the_audit(
    bundles: tuple[Path, str, str], redis_client: redis.Redis
) -> None:
    models_dir, supervised, hold = bundles
    set_current(models_dir, supervised)
    promotion = promote_if_better(models_dir, hold, force=True, client=redis_client, actor="ops@test",
                                  held_out=HELD_OUT)
    assert read_current_version(models_dir) == hold and promotion.forced
    (entry,) = alerts(redis_client)
    assert entry["kind"] == "model_promote" and entry["forced"] == "true" and entry["message"].startswith("FORCED")


def test_judging_compares_on_the_same_held_out_events(bundles: tuple[Path, str, str]) -> None:
    models_dir, supervised, hold = bundles
    set_current(models_dir, hold)
    verdict = judge(models_dir, supervised, held_out=HELD_OUT)
    assert verdict.current == hold and verdict.beats and verdict.held_out_sha256
    assert verdict.current_figures == {"pnl": 0.0, "sharpe": 0.0, "accuracy": None, "max_drawdown": 0.0,
                                       "execution_rate": 0.0}
    assert judge(models_dir, hold, held_out=HELD_OUT).reason.endswith("is already CURRENT")


def test_without_a_client_promotion_works_and_writes_no_audit(
    bundles: tuple[Path, str, str], redis_client: redis.Redis
) -> None:
    models_dir, supervised, hold = bundles
    set_current(models_dir, hold)
    promote_if_better(models_dir, supervised, held_out=HELD_OUT)
    assert read_current_version(models_dir) == supervised
    assert alerts(redis_client) == []


def test_always_hold_agents_vote_hold() -> None:
    agents = always_hold_agents()
    probabilities, _ = agents["momentum"](torch.randn(4, 60, 7))
    assert probabilities.argmax(dim=1).tolist() == [Action.HOLD.index] * 4
