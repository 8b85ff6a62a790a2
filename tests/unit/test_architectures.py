from __future__ import annotations

from datetime import UTC, datetime

import pytest
import torch

from models.architectures import (
    AGENT_CLASSES,
    EntryAgent,
    FVGAgent,
    MomentumAgent,
    build_agents,
    parameter_count,
)
from models.bundle import JIT_LOG_FILE, list_bundles, read_manifest
from models.compile import (
    CompilationError,
    compile_agent,
    compile_bundle,
    deserialize,
    max_output_difference,
    reference_inputs,
    serialize,
)
from worker.actions import AGENT_NAMES

torch.set_num_threads(1)


@pytest.mark.parametrize("name", AGENT_NAMES)
@pytest.mark.parametrize("batch", [1, 5])
def test_agent_outputs_probabilities_over_three_actions_and_its_confidence(name: str, batch: int) -> None:
    agent = build_agents(seed=1)[name].eval()
    matrices = torch.randn(batch, 60, 7)
    with torch.inference_mode():
        probabilities, confidence = agent(matrices)
    assert probabilities.shape == (batch, 3)
    assert confidence.shape == (batch,)
    assert torch.all(probabilities >= 0)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(batch))
    # Confidence is the directional conviction: the preferred direction's share of long + short.
    short, long = probabilities[:, 0], probabilities[:, 2]
    torch.testing.assert_close(confidence, torch.maximum(short, long) / (short + long))


def test_fvg_agent_reads_only_fvg_columns() -> None:
    agent = FVGAgent().eval()
    matrices = torch.randn(3, 60, 7)
    changed = matrices.clone()
    changed[:, :, 5:] = torch.randn(3, 60, 2) * 5
    with torch.inference_mode():
        torch.testing.assert_close(agent(matrices)[0], agent(changed)[0])
        changed[:, -1, 0] += 1.0
        assert not torch.allclose(agent(matrices)[0], agent(changed)[0])


def test_momentum_agent_reads_only_momentum_and_volume() -> None:
    agent = MomentumAgent().eval()
    matrices = torch.randn(3, 60, 7)
    changed = matrices.clone()
    changed[:, :, :5] = torch.randn(3, 60, 5) * 5
    with torch.inference_mode():
        torch.testing.assert_close(agent(matrices)[0], agent(changed)[0])
        changed[:, -1, 5] += 1.0
        assert not torch.allclose(agent(matrices)[0], agent(changed)[0])


def test_entry_agent_reads_every_column() -> None:
    agent = EntryAgent().eval()
    matrices = torch.randn(1, 60, 7)
    with torch.inference_mode():
        base = agent(matrices)[0]
        for column in range(7):
            changed = matrices.clone()
            changed[:, -1, column] += 1.0
            assert not torch.allclose(base, agent(changed)[0]), f"column {column} is ignored"


def test_agents_are_distinct_small_and_seeded() -> None:
    first, second, other = build_agents(seed=3), build_agents(seed=3), build_agents(seed=4)
    assert tuple(first) == AGENT_NAMES
    assert len({type(agent) for agent in first.values()}) == 3
    for name in AGENT_NAMES:
        assert 100 < parameter_count(first[name]) < 50_000
        for a, b, c in zip(
            first[name].parameters(), second[name].parameters(), other[name].parameters(), strict=True
        ):
            assert torch.equal(a, b)
            assert not torch.equal(a, c)


def test_build_agents_leaves_the_global_random_state_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_agents(seed=9)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", AGENT_NAMES)
def test_compiled_agent_matches_eager_and_survives_save_and_load(name: str) -> None:
    agent = AGENT_CLASSES[name]().eval()
    compiled = compile_agent(agent)
    assert max_output_difference(agent, compiled, reference_inputs(seed=5)) < 1e-5
    reloaded = deserialize(serialize(compiled))
    assert max_output_difference(agent, reloaded, reference_inputs(seed=6)) < 1e-5


def test_compile_bundle_writes_files_manifest_and_a_successful_log(tmp_path) -> None:
    created = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
    bundle_dir = compile_bundle(
        build_agents(seed=0), tmp_path, training={"seed": 0}, metrics={"accuracy": 0.5}, created_at=created
    )
    assert bundle_dir.parent == tmp_path
    assert bundle_dir.name.startswith("20250301T123000Z-")
    assert {p.name for p in bundle_dir.iterdir()} == {
        "fvg.pt", "momentum.pt", "entry.pt", "manifest.json", JIT_LOG_FILE,
    }
    manifest = read_manifest(bundle_dir)
    assert manifest.created_at == created
    assert manifest.training == {"seed": 0} and manifest.metrics == {"accuracy": 0.5}
    log_lines = (bundle_dir / JIT_LOG_FILE).read_text().splitlines()
    assert log_lines[-1].endswith("JIT compilation successful")
    for line in log_lines:
        stamp = datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00"))
        assert stamp.tzinfo is not None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging directory left behind"


def test_failed_compilation_logs_why_and_publishes_no_bundle(tmp_path) -> None:
    agents = build_agents(seed=0)
    del agents["entry"]
    with pytest.raises(CompilationError, match="JIT compilation FAILED"):
        compile_bundle(agents, tmp_path, training={}, metrics={})
    assert list_bundles(tmp_path) == []
    (failed,) = tmp_path.glob("*.failed")
    assert "JIT compilation FAILED" in (failed / JIT_LOG_FILE).read_text().splitlines()[-1]
    assert not (failed / "manifest.json").exists()


def test_a_compiled_agent_that_disagrees_with_eager_fails_compilation(tmp_path, monkeypatch) -> None:
    import models.compile as compile_module

    real_compile = compile_module.compile_agent
    impostors = build_agents(seed=99)
    monkeypatch.setattr(compile_module, "compile_agent", lambda model: real_compile(impostors["fvg"]))
    with pytest.raises(CompilationError, match="fvg: compiled output differs from eager"):
        compile_bundle(build_agents(seed=0), tmp_path, training={}, metrics={})
    assert list_bundles(tmp_path) == []
