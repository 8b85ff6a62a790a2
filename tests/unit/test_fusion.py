"""The fused serving graph: the agents' own functions in one graph, or the agents one by one when it cannot be."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from models.architectures import FVGAgent, InputNormalization, build_agents
from models.compile import compile_agent, compile_bundle, deserialize, reference_inputs, serialize
from models.fusion import FUSION_TOLERANCE, FusionError, fuse_agents, max_fused_difference, try_fusion
from worker.inference import AgentEnsemble, row_invariant_kernels, stack_agents


def agents_with_fitted_normalization(seed: int) -> dict[str, torch.nn.Module]:
    """Untrained agents whose normalisation is far from identity, so folding it into the weights is exercised."""
    agents = build_agents(seed=seed)
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(5000, 7, generator=generator) * torch.tensor([1, 1, 3, 40, 0.5, 2, 8]) + torch.arange(7.0)
    for agent in agents.values():
        assert isinstance(agent.normalize, InputNormalization)
        agent.normalize.fit(rows)
    return agents


def compiled(agent: torch.nn.Module) -> torch.jit.ScriptModule:
    """An agent as the worker gets it: compiled, saved and loaded back."""
    return deserialize(serialize(compile_agent(agent)))


def outputs(module: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode(), row_invariant_kernels:
        return module(batch)


@pytest.mark.parametrize("seed", [0, 7])
def test_the_fused_graph_gives_each_agents_probabilities_and_confidence(seed: int) -> None:
    modules = {name: compiled(agent) for name, agent in agents_with_fitted_normalization(seed).items()}
    fused, one_by_one = fuse_agents(modules), stack_agents(modules)
    extreme = torch.randn(16, 60, 7, generator=torch.Generator().manual_seed(seed)) * 50
    inputs = [*reference_inputs(seed=seed), extreme]

    assert max_fused_difference(fused, one_by_one, inputs) <= FUSION_TOLERANCE
    probabilities, confidence = outputs(fused, inputs[1])
    expected_p, _ = outputs(one_by_one, inputs[1])
    assert probabilities.shape == expected_p.shape == (7, 3, 3) and confidence.shape == (7, 3)
    # The votes the aggregator reads: each agent's preferred action is the same.
    assert torch.equal(probabilities.argmax(dim=2), expected_p.argmax(dim=2))


def test_the_fused_graph_reads_a_view_of_a_batch_as_it_reads_the_batch(ensemble: AgentEnsemble) -> None:
    # The convolutions window the batch's memory directly: a slice that starts inside a larger tensor, or a
    # transposed copy that is not contiguous, must be read at its own rows, not at the storage's first.
    matrices = torch.cat(reference_inputs(seed=11))
    sliced = matrices[3:9]
    strided = sliced.transpose(1, 2).contiguous().transpose(1, 2)
    assert sliced.storage_offset() > 0 and not strided.is_contiguous()
    expected = outputs(ensemble._forward, sliced.clone())
    for got in (outputs(ensemble._forward, sliced), outputs(ensemble._forward, strided)):
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_the_shipped_bundle_is_served_fused_and_agrees_with_its_agents(ensemble: AgentEnsemble) -> None:
    assert ensemble.fused
    matrices = torch.cat(reference_inputs(seed=3))
    one_by_one = stack_agents(ensemble._agents)
    assert max_fused_difference(ensemble._forward, one_by_one, [matrices]) <= FUSION_TOLERANCE


def test_agents_of_another_architecture_are_refused_by_name() -> None:
    modules = {name: compiled(agent) for name, agent in build_agents(seed=1).items()}
    modules["momentum"] = compiled(FVGAgent())  # an MLP where a convolution was expected
    with pytest.raises(FusionError, match="agent 'momentum': weight ops"):
        fuse_agents(modules)


def test_a_bundle_that_cannot_be_fused_is_served_one_agent_after_another(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agents = build_agents(seed=2)
    agents["momentum"] = FVGAgent()
    bundle = compile_bundle(agents, tmp_path, training={"kind": "test"}, metrics={})
    with caplog.at_level(logging.WARNING, logger="worker.inference"):
        ensemble = AgentEnsemble.load(bundle, threads=1, warmup_batch_sizes=(1, 4))

    assert not ensemble.fused
    assert "serving the agents one by one, not fused" in caplog.text and "agent 'momentum'" in caplog.text
    matrices = torch.cat(reference_inputs(seed=5))
    probabilities, confidence = ensemble.infer(matrices.numpy())
    expected_p, expected_c = outputs(stack_agents(ensemble._agents), matrices)
    np.testing.assert_array_equal(probabilities, expected_p.numpy())
    np.testing.assert_array_equal(confidence, expected_c.numpy())


def test_agents_whose_ops_match_but_read_other_columns_fail_the_comparison_and_are_not_fused() -> None:
    agents = agents_with_fitted_normalization(seed=3)
    fvg = agents["fvg"]
    assert isinstance(fvg, FVGAgent)
    fvg.first, fvg.end = 1, 6  # same op kinds and weight shapes, columns shifted by one
    modules = {name: compiled(agent) for name, agent in agents.items()}

    with row_invariant_kernels:
        fusion = try_fusion(modules, stack_agents(modules))

    assert fusion.graph is None
    assert fusion.difference is not None and fusion.difference > FUSION_TOLERANCE
    assert "the fused graph differs from the agents by" in fusion.reason
