"""The three agents of one verified bundle, loaded once, warmed up, and run as one batched forward pass: one graph
built from their weights (`models.fusion`) when it agrees with them, else the three run one after another."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.bundle import Manifest, UnusableBundleError
from models.compile import load_verified_agents, torchscript_deprecation_silenced
from models.fusion import try_fusion
from worker.actions import AGENT_NAMES
from worker.records import MATRIX_SHAPE, AgentVote

log = logging.getLogger(__name__)

DEFAULT_WARMUP_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 100)
# An event's probabilities must not depend on the batch it arrives in (bit for bit: a replayed or re-batched event
# gets the very same decision). Torch picks kernels by batch size, and they round differently: BLAS takes another
# path for linear layers below 4 rows, and convolutions go to oneDNN above 1 row and to NNPACK from 16 rows. So short
# batches are padded to 4 rows, and convolutions run on the native kernel, which computes each row alone.
MIN_INFERENCE_ROWS = 4
WARMUP_RUNS = 3  # the profiling executor specialises a graph after its first runs at a shape

_interop_threads_set = False


class InferenceInputError(ValueError):
    """The matrices handed to the agents do not have the (B, 60, 7) shape they were trained on."""


def configure_torch_threads(threads: int) -> None:
    """Intra-op threads as asked, inter-op 1: one event batch at a time, cores left to Redis and the OS."""
    global _interop_threads_set
    if threads < 1:
        raise ValueError(f"torch threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    if not _interop_threads_set:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError as exc:
            # Only allowed once per process, before any inter-op work; a second ensemble keeps the first setting.
            log.debug("inter-op threads already fixed at %d: %s", torch.get_num_interop_threads(), exc)
        _interop_threads_set = True


class _RowInvariantKernels:
    """While any thread is inside, convolutions run on torch's native kernel (no oneDNN, no NNPACK) whatever the
    batch size. The switches are process-wide, so the first thread in turns them off and the last one out restores
    them: a model reload warming up in the monitor thread never switches them back under the hot path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._saved = (True, True)

    def __enter__(self) -> None:
        with self._lock:
            if self._inside == 0:
                (nnpack,) = torch.backends.nnpack.set_flags(False)
                self._saved = (bool(torch.backends.mkldnn.enabled), nnpack)
                # `enabled` is a property of the backend module, typed as its descriptor: a bool is what it takes
                torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
            self._inside += 1

    def hold(self) -> None:
        """Enter for the rest of this process's life: for a process that only serves (the bench's reference loop and
        peer), so no forward pass pays for switching the flags (~6 µs). The worker enters at startup and leaves at
        shutdown."""
        self.__enter__()

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0:
                torch.backends.mkldnn.enabled, nnpack = self._saved  # type: ignore[assignment]  # as in __enter__
                torch.backends.nnpack.set_flags(nnpack)


row_invariant_kernels = _RowInvariantKernels()


class StackedAgents(nn.Module):
    """All agents in one TorchScript call, outputs stacked inside it: a third of the per-call overhead at batch 1."""

    def __init__(self, agents: list[torch.jit.ScriptModule]) -> None:
        super().__init__()
        self.agents = nn.ModuleList(agents)

    def forward(self, matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities: list[torch.Tensor] = []
        confidence: list[torch.Tensor] = []
        for agent in self.agents:
            p, c = agent(matrices)
            probabilities.append(p)
            confidence.append(c)
        return torch.stack(probabilities, dim=1), torch.stack(confidence, dim=1)


def stack_agents(modules: Mapping[str, torch.jit.ScriptModule]) -> torch.jit.ScriptModule:
    """The agents one after another, in AGENT_NAMES order, as one scripted call: what a bundle that cannot be fused
    is served with, and what the fused graph is checked against."""
    with torchscript_deprecation_silenced():
        return torch.jit.script(StackedAgents([modules[name] for name in AGENT_NAMES]))


class AgentEnsemble:
    """FVG, Momentum and Entry agents of one bundle. `infer` is the hot path: no copies, no autograd."""

    def __init__(self, manifest: Manifest, modules: dict[str, torch.jit.ScriptModule]) -> None:
        if manifest.bundle_dir is None:
            raise ValueError("the manifest must come from a bundle directory")
        self.manifest = manifest
        self.version: str = manifest.version
        self.created_at: datetime = manifest.created_at
        self.bundle_dir: Path = manifest.bundle_dir
        self._agents = {name: modules[name] for name in AGENT_NAMES}
        stacked = stack_agents(self._agents)
        self._padded = np.zeros((MIN_INFERENCE_ROWS, *MATRIX_SHAPE), dtype=np.float32)  # a short batch, padded
        self._padded_batch = torch.from_numpy(self._padded)  # shares its memory
        self._padded_lock = threading.Lock()
        with row_invariant_kernels:
            fusion = try_fusion(self._agents, stacked)
        self.fused = fusion.graph is not None  # the agents run as one fused graph (models.fusion)
        self._forward = fusion.graph if fusion.graph is not None else stacked
        if fusion.graph is None:
            log.warning("bundle %s: serving the agents one by one, not fused (%s)", self.version, fusion.reason)
        else:
            log.info("bundle %s: agents fused into one graph (largest difference from them one by one: %.1e)",
                     self.version, fusion.difference)

    @classmethod
    def load(
        cls,
        bundle_dir: Path,
        *,
        threads: int = 1,
        warmup_batch_sizes: Iterable[int] = DEFAULT_WARMUP_BATCH_SIZES,
    ) -> AgentEnsemble:
        """Verify every file's SHA-256, load the agents, check they can decide on reference matrices, warm them up.
        Any failure is a BundleError (`UnusableBundleError` past the hashes): the bundle is refused, never served."""
        configure_torch_threads(threads)
        # The very bytes that were hashed are loaded: a file replaced after the check is never read.
        manifest, modules = load_verified_agents(Path(bundle_dir))
        try:
            ensemble = cls(manifest, modules)
            ensemble.warm_up(warmup_batch_sizes)
        except Exception as exc:
            raise UnusableBundleError(f"bundle {manifest.version} refused: the agents fail to run as one batch: "
                                      f"{type(exc).__name__}: {exc}") from exc
        if not ensemble.rows_are_batch_invariant():
            log.warning("on this CPU an event's probabilities differ in the last bits between batch sizes: batched "
                        "and one-at-a-time decisions may differ at the float rounding level")
        return ensemble

    def warm_up(self, batch_sizes: Iterable[int]) -> None:
        for size in batch_sizes:
            matrices = np.zeros((size, *MATRIX_SHAPE), dtype=np.float32)
            for _ in range(WARMUP_RUNS):
                self.infer(matrices)

    def rows_are_batch_invariant(self, rows: int = 24) -> bool:
        """Whether each row's outputs are bit-identical alone and inside a batch (what MIN_INFERENCE_ROWS and
        row_invariant_kernels give on the CPUs measured; BLAS kernels are CPU-specific, so it is checked)."""
        matrices = np.random.default_rng(0).normal(size=(rows, *MATRIX_SHAPE)).astype(np.float32)
        probabilities, confidence = self.infer(matrices)
        for row in range(rows):
            alone_p, alone_c = self.infer(matrices[row : row + 1])
            if not (np.array_equal(alone_p[0], probabilities[row]) and np.array_equal(alone_c[0], confidence[row])):
                return False
        return True

    def infer(self, matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 60, 7) float32 → probabilities (B, agent, action) and confidence (B, agent), agents in AGENT_NAMES
        order, actions in ACTION_ORDER; both float32. Never writes to `matrices`: torch wraps them without a copy, and
        the pipeline's events' matrices are views of them (`decode_events`)."""
        if matrices.ndim != 3 or matrices.shape[1:] != MATRIX_SHAPE:
            raise InferenceInputError(
                f"expected matrices shaped (B, {MATRIX_SHAPE[0]}, {MATRIX_SHAPE[1]}), got {matrices.shape}"
            )
        rows = len(matrices)
        if 0 < rows < MIN_INFERENCE_ROWS:
            # Padded in place into one buffer a tensor already wraps: a fresh array and tensor per call cost ~15 µs
            # of a ~100 µs batch-1 forward pass (measured). The outputs are new tensors, so the lock ends here.
            with self._padded_lock:
                self._padded[:rows] = matrices
                self._padded[rows:] = matrices[0]
                return self._run(self._padded_batch, rows)
        if matrices.dtype != np.float32 or not matrices.flags.c_contiguous:
            matrices = np.ascontiguousarray(matrices, dtype=np.float32)
        return self._run(torch.from_numpy(matrices), rows)

    def _run(self, batch: torch.Tensor, rows: int) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode(), row_invariant_kernels:
            probabilities, confidence = self._forward(batch)
        return probabilities.numpy()[:rows], confidence.numpy()[:rows]

    def time_agents(self, matrices: np.ndarray) -> dict[str, float]:
        """Seconds each agent takes alone on `matrices`: the per-agent cost the fused hot path cannot show."""
        batch = torch.from_numpy(np.ascontiguousarray(matrices, dtype=np.float32))
        timings: dict[str, float] = {}
        with torch.inference_mode():
            for name, agent in self._agents.items():
                started = time.perf_counter()
                agent(batch)
                timings[name] = time.perf_counter() - started
        return timings

    def votes(self, probabilities: np.ndarray, confidence: np.ndarray, row: int) -> tuple[AgentVote, ...]:
        """One AgentVote per agent for event `row` of an `infer` result."""
        return tuple(
            AgentVote(
                agent=name,
                probabilities=(
                    float(probabilities[row, i, 0]),
                    float(probabilities[row, i, 1]),
                    float(probabilities[row, i, 2]),
                ),
                confidence=float(confidence[row, i]),
            )
            for i, name in enumerate(AGENT_NAMES)
        )

    def __repr__(self) -> str:
        return f"AgentEnsemble(version={self.version!r}, bundle_dir={str(self.bundle_dir)!r})"
