from __future__ import annotations

import subprocess
import sys
from datetime import UTC

import numpy as np
import pytest
import torch

from models.bundle import read_manifest
from models.compile import reference_inputs
from worker.actions import AGENT_NAMES, Action
from worker.inference import AgentEnsemble, InferenceInputError, configure_torch_threads
from worker.records import AgentVote


@pytest.fixture(scope="module")
def matrices() -> np.ndarray:
    return np.concatenate([batch.numpy() for batch in reference_inputs(seed=11)])


def test_loads_the_bundle_it_was_given(ensemble: AgentEnsemble) -> None:
    manifest = read_manifest(ensemble.bundle_dir)
    assert ensemble.version == manifest.version
    assert ensemble.created_at == manifest.created_at
    assert ensemble.created_at.tzinfo == UTC
    assert torch.get_num_threads() == 1


def test_infer_gives_each_agents_probabilities_and_confidence(
    ensemble: AgentEnsemble, matrices: np.ndarray
) -> None:
    probabilities, confidence = ensemble.infer(matrices)
    batch = len(matrices)
    assert probabilities.shape == (batch, len(AGENT_NAMES), 3)
    assert confidence.shape == (batch, len(AGENT_NAMES))
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=2), 1.0, atol=1e-5)
    short, long = probabilities[:, :, 0], probabilities[:, :, 2]
    np.testing.assert_allclose(confidence, np.maximum(short, long) / (short + long), rtol=1e-5)
    assert np.all((confidence >= 0.5 - 1e-6) & (confidence <= 1 + 1e-6))


def test_batched_inference_equals_one_event_at_a_time(ensemble: AgentEnsemble, matrices: np.ndarray) -> None:
    probabilities, confidence = ensemble.infer(matrices)
    for row in range(len(matrices)):
        single_p, single_c = ensemble.infer(matrices[row : row + 1])
        np.testing.assert_allclose(single_p[0], probabilities[row], rtol=0, atol=1e-6)
        np.testing.assert_allclose(single_c[0], confidence[row], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(single_p[0].argmax(axis=1), probabilities[row].argmax(axis=1))


def test_the_trained_agents_do_not_all_say_the_same_thing(ensemble: AgentEnsemble, matrices: np.ndarray) -> None:
    probabilities, _ = ensemble.infer(matrices)
    assert np.ptp(probabilities, axis=0).max() > 0.05


def test_input_is_accepted_as_any_float_layout_and_gives_the_same_answer(
    ensemble: AgentEnsemble, matrices: np.ndarray
) -> None:
    expected, _ = ensemble.infer(matrices[:8])
    as_float64, _ = ensemble.infer(matrices[:8].astype(np.float64))
    fortran, _ = ensemble.infer(np.asfortranarray(matrices[:8]))
    np.testing.assert_allclose(as_float64, expected, atol=1e-6)
    np.testing.assert_allclose(fortran, expected, atol=1e-6)


@pytest.mark.parametrize("shape", [(60, 7), (1, 7, 60), (2, 59, 7), (1, 60, 8)])
def test_a_wrongly_shaped_matrix_is_refused_with_the_expected_shape(ensemble: AgentEnsemble, shape) -> None:
    with pytest.raises(InferenceInputError, match=r"\(B, 60, 7\)"):
        ensemble.infer(np.zeros(shape, dtype=np.float32))


def test_an_empty_batch_gives_empty_outputs(ensemble: AgentEnsemble) -> None:
    probabilities, confidence = ensemble.infer(np.zeros((0, 60, 7), dtype=np.float32))
    assert probabilities.shape == (0, 3, 3) and confidence.shape == (0, 3)


def test_votes_are_agent_votes_for_one_row(ensemble: AgentEnsemble, matrices: np.ndarray) -> None:
    probabilities, confidence = ensemble.infer(matrices[:4])
    votes = ensemble.votes(probabilities, confidence, row=2)
    assert all(isinstance(vote, AgentVote) for vote in votes)
    assert tuple(vote.agent for vote in votes) == AGENT_NAMES
    for index, vote in enumerate(votes):
        assert vote.probabilities == pytest.approx(tuple(probabilities[2, index].tolist()))
        assert vote.confidence == pytest.approx(float(confidence[2, index]))
        assert vote.action == Action.from_index(int(probabilities[2, index].argmax()))
        assert all(type(p) is float for p in vote.probabilities)


def test_thread_settings_can_be_applied_again_by_a_reload() -> None:
    configure_torch_threads(1)
    configure_torch_threads(1)  # inter-op threads can be set once per process: a second load must not fail
    assert torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="at least 1"):
        configure_torch_threads(0)


def test_short_batches_share_a_padding_buffer_without_mixing_answers(
    ensemble: AgentEnsemble, matrices: np.ndarray
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    expected = [ensemble.infer(matrices[row : row + 1])[0][0].copy() for row in range(8)]
    three, _ = ensemble.infer(matrices[3:6])
    one, _ = ensemble.infer(matrices[7:8])
    np.testing.assert_array_equal(three, np.stack(expected[3:6]))
    np.testing.assert_array_equal(one[0], expected[7])

    def answer(row: int) -> np.ndarray:
        return ensemble.infer(matrices[row : row + 1])[0][0]

    with ThreadPoolExecutor(max_workers=4) as pool:  # one ensemble, callers on several threads
        for row, probabilities in zip(list(range(8)) * 25, pool.map(answer, list(range(8)) * 25), strict=True):
            np.testing.assert_array_equal(probabilities, expected[row])


def test_held_kernels_stay_selected_for_the_process_through_nested_uses() -> None:
    # In a child process: hold() is for the rest of a process's life and must not leak into this test session.
    script = (
        "import torch\n"
        "from worker.inference import row_invariant_kernels as kernels\n"
        "assert torch.backends.mkldnn.enabled\n"
        "kernels.hold()\n"
        "assert not torch.backends.mkldnn.enabled\n"
        "with kernels:\n"
        "    pass\n"
        "assert not torch.backends.mkldnn.enabled, 'a forward pass leaving its block must not switch them back'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
