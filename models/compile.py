"""Compile trained agents to TorchScript and publish them as a bundle, with a JIT compilation log.

Each agent is scripted, frozen and optimised for inference, saved, loaded back from its file and checked
against the eager model on reference inputs. The bundle is assembled in a hidden staging directory and
renamed into place only once every check has passed, so a half-written bundle is never a bundle. When
compilation fails the log is kept in `<version>.failed/` (no manifest, so nothing can load it).
"""

from __future__ import annotations

import io
import math
import platform
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.architectures import parameter_count
from models.bundle import (
    JIT_LOG_FILE,
    AgentFile,
    BundleError,
    BundleWriteError,
    Manifest,
    UnusableBundleError,
    bundle_version,
    read_verified_agents,
    sha256_bytes,
    write_manifest,
)
from worker.actions import AGENT_NAMES
from worker.records import MATRIX_SHAPE

EAGER_TOLERANCE = 1e-5
REFERENCE_BATCH_SIZES = (1, 7, 64)
PROBABILITY_SUM_TOLERANCE = 1e-4  # each agent's three probabilities sum to 1 within this


class CompilationError(RuntimeError):
    """An agent could not be compiled or its compiled output differs from eager; see the JIT log it names."""


class CompilationLog:
    """Timestamped lines, written to the bundle as `jit_compilation.log`."""

    def __init__(self, clock: Any = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self.lines: list[str] = []

    def write(self, message: str) -> None:
        moment = self._clock().astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.lines.append(f"{moment} {message}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@contextmanager
def torchscript_deprecation_silenced() -> Iterator[None]:
    """torch 2.13 marks every torch.jit entry point deprecated; the design chose TorchScript on purpose (a
    self-contained, hash-pinned file per agent), so these warnings would only be noise in the worker's log."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        yield


def reference_inputs(seed: int = 0) -> list[torch.Tensor]:
    """Matrices shaped like real ones (0/1 flags, bounded levels, ages, momentum, volume) in a few batch sizes."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for size in REFERENCE_BATCH_SIZES:
        matrix = torch.empty(size, *MATRIX_SHAPE)
        matrix[:, :, 0:2] = (torch.rand(size, MATRIX_SHAPE[0], 2, generator=generator) < 0.3).float()
        matrix[:, :, 2] = torch.rand(size, MATRIX_SHAPE[0], generator=generator) * 2 - 1
        matrix[:, :, 3] = torch.rand(size, MATRIX_SHAPE[0], generator=generator)
        matrix[:, :, 4] = (torch.rand(size, MATRIX_SHAPE[0], generator=generator) < 0.1).float()
        matrix[:, :, 5:7] = torch.randn(size, MATRIX_SHAPE[0], 2, generator=generator).clamp(-2, 2)
        batches.append(matrix)
    return batches


def compile_agent(model: nn.Module) -> torch.jit.ScriptModule:
    with torchscript_deprecation_silenced():
        scripted = torch.jit.script(model.eval())
        frozen = torch.jit.freeze(scripted)
        return torch.jit.optimize_for_inference(frozen)


def max_output_difference(
    reference: nn.Module,
    candidate: nn.Module,
    inputs: Sequence[torch.Tensor],
    *,
    reference_name: str = "eager",
    error: type[Exception] = CompilationError,
) -> float:
    """Largest |difference| between `candidate`'s outputs and `reference`'s over `inputs` (inf where either is not
    finite: NaN compares as no difference at all); `error` if an output's shape differs (compiled against eager
    here, the fused graph against the agents in `models.fusion`)."""
    worst = 0.0
    with torch.inference_mode():
        for batch in inputs:
            for expected, actual in zip(reference(batch), candidate(batch), strict=True):
                if expected.shape != actual.shape:
                    raise error(f"output shape {tuple(actual.shape)}, {reference_name} {tuple(expected.shape)}")
                difference = float((expected - actual).abs().max())
                worst = max(worst, math.inf if math.isnan(difference) else difference)
    return worst


def output_problems(modules: Mapping[str, nn.Module], inputs: Sequence[torch.Tensor]) -> list[str]:
    """What keeps each agent from deciding on `inputs`, one line per failing agent: it raises, or its outputs are
    not (B, 3) probabilities summing to 1 and (B,) confidence, all finite. Empty when every agent can decide. The
    one check every path that accepts a bundle runs: compilation, the container build, `models verify`, and the
    worker's load."""
    problems = []
    with torch.inference_mode():
        for name, module in modules.items():
            problem = _output_problem(module, inputs)
            if problem is not None:
                problems.append(f"{name}: {problem}")
    return problems


def _output_problem(module: nn.Module, inputs: Sequence[torch.Tensor]) -> str | None:
    for batch in inputs:
        size = int(batch.shape[0])
        try:
            probabilities, confidence = module(batch)
        except Exception as exc:  # torch.jit.Error is no RuntimeError; anything an agent raises refuses it
            return f"raised {type(exc).__name__} on a batch of {size}: {str(exc).strip().splitlines()[-1][:200]}"
        if tuple(probabilities.shape) != (size, 3) or tuple(confidence.shape) != (size,):
            return (f"output shapes {tuple(probabilities.shape)} and {tuple(confidence.shape)} on a batch of {size},"
                    f" expected ({size}, 3) and ({size},)")
        if not bool(torch.isfinite(probabilities).all() and torch.isfinite(confidence).all()):
            return f"non-finite output on a batch of {size}"
        if float((probabilities.sum(dim=1) - 1).abs().max()) > PROBABILITY_SUM_TOLERANCE:
            return f"probabilities do not sum to 1 on a batch of {size}"
    return None


def serialize(compiled: torch.jit.ScriptModule) -> bytes:
    buffer = io.BytesIO()
    with torchscript_deprecation_silenced():
        torch.jit.save(compiled, buffer)
    return buffer.getvalue()


def deserialize(data: bytes) -> torch.jit.ScriptModule:
    with torchscript_deprecation_silenced():
        return torch.jit.load(io.BytesIO(data), map_location="cpu")


def load_verified_agents(bundle_dir: Path) -> tuple[Manifest, dict[str, torch.jit.ScriptModule]]:
    """A bundle's manifest and agents (AGENT_NAMES order): every file checked against its SHA-256 (and the signature,
    with a key configured: `read_verified_agents`), the very bytes hashed loaded with this torch, and each agent
    shown to decide on the reference matrices (`output_problems`); else a BundleError (UnusableBundleError past the
    hashes). How the worker, the held-out evaluation, recompilation and the container build load a bundle."""
    manifest, contents = read_verified_agents(Path(bundle_dir))
    refused = f"bundle {manifest.version} refused"
    try:
        agents = {name: deserialize(contents[name]).eval() for name in AGENT_NAMES}
    except Exception as exc:  # torch.jit.Error is no RuntimeError
        raise UnusableBundleError(f"{refused}: an agent cannot be loaded with torch {torch.__version__}: "
                                  f"{type(exc).__name__}: {exc}") from exc
    problems = output_problems(agents, reference_inputs())
    if problems:
        raise UnusableBundleError(f"{refused}: " + "; ".join(problems))
    return manifest, agents


def compile_bundle(
    agents: Mapping[str, nn.Module],
    out_dir: Path,
    *,
    training: dict[str, Any],
    metrics: dict[str, Any],
    created_at: datetime | None = None,
    parameter_counts: Mapping[str, int] | None = None,
) -> Path:
    """Compile `agents` (keyed by AGENT_NAMES) into a new bundle under `out_dir`; returns the bundle directory.
    `parameter_counts` (by agent) for agents that no longer show their parameters: a frozen TorchScript module keeps
    its weights as constants, so recompiling a bundle would count 0."""
    out_dir = Path(out_dir)
    created_at = (created_at or datetime.now(UTC)).replace(microsecond=0)
    log = CompilationLog()
    staging = out_dir / f".staging-{created_at:%Y%m%dT%H%M%SZ}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as exc:  # read-only, full, not a directory: said before minutes of compiling, not after
        raise BundleWriteError(f"cannot write a bundle into {out_dir} ({exc.strerror or exc}): the models "
                               "directory must be a writable directory; nothing was compiled") from None
    try:
        files = _compile_all(agents, staging, log, parameter_counts or {})
    except Exception as exc:
        log.write(f"JIT compilation FAILED: {type(exc).__name__}: {exc}")
        (staging / JIT_LOG_FILE).write_text(log.text(), encoding="utf-8")
        failed = out_dir / f"{created_at:%Y%m%dT%H%M%SZ}.failed"
        shutil.rmtree(failed, ignore_errors=True)
        staging.rename(failed)
        raise CompilationError(f"JIT compilation FAILED: {exc} (log: {failed / JIT_LOG_FILE})") from exc

    version = bundle_version(created_at, [f.sha256 for f in files])
    manifest = Manifest(
        version=version,
        created_at=created_at,
        agents=tuple(files),
        torch_version=torch.__version__,
        training=training,
        metrics=metrics,
    )
    log.write(f"bundle {version}: {len(files)} agents, manifest written")
    log.write("JIT compilation successful")
    bundle_dir = out_dir / version
    try:
        (staging / JIT_LOG_FILE).write_text(log.text(), encoding="utf-8")
        write_manifest(staging, manifest)
        if bundle_dir.exists():
            raise CompilationError(f"{bundle_dir} already exists; bundles are immutable, not overwritten")
        staging.rename(bundle_dir)
    except (OSError, BundleError) as exc:  # a full or read-only disk: no half-written bundle is left behind
        raise BundleWriteError(f"compiled, but the bundle could not be written to {out_dir}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bundle_dir


def _compile_all(agents: Mapping[str, nn.Module], staging: Path, log: CompilationLog,
                 parameter_counts: Mapping[str, int]) -> list[AgentFile]:
    if set(agents) != set(AGENT_NAMES):
        raise CompilationError(f"agents {sorted(agents)}, expected {list(AGENT_NAMES)}")
    log.write(
        f"compiling {', '.join(AGENT_NAMES)} with torch {torch.__version__}, python {platform.python_version()}"
    )
    inputs = reference_inputs()
    files = []
    for name in AGENT_NAMES:
        model = agents[name].eval()
        compiled = compile_agent(model)
        parameters = parameter_counts.get(name, parameter_count(model))
        log.write(f"{name}: scripted, frozen, optimized for inference ({parameters} parameters)")
        problems = output_problems({name: compiled}, inputs)
        if problems:
            raise CompilationError(f"{problems[0]}: the agent cannot decide")
        difference = max_output_difference(model, compiled, inputs)
        if difference > EAGER_TOLERANCE:
            raise CompilationError(f"{name}: compiled output differs from eager by {difference:.3g}")
        data = serialize(compiled)
        reloaded = deserialize(data)
        reload_difference = max_output_difference(model, reloaded, inputs)
        if reload_difference > EAGER_TOLERANCE:
            raise CompilationError(f"{name}: reloaded file differs from eager by {reload_difference:.3g}")
        log.write(
            f"{name}: max |compiled - eager| {difference:.2g}, after reload {reload_difference:.2g} "
            f"on batches {list(REFERENCE_BATCH_SIZES)}"
        )
        file_name = f"{name}.pt"
        (staging / file_name).write_bytes(data)
        digest = sha256_bytes(data)
        log.write(f"{name}: saved {file_name} ({len(data)} bytes, sha256 {digest})")
        files.append(AgentFile(name, file_name, digest, parameters))
    return files



def verify_and_install(models_dir: Path, out_dir: Path | None, log_path: Path) -> Path:
    """Build-time check of the committed bundles: verify the current one's hashes, load every agent with *this* torch
    build and run the reference inputs through it; then copy it to `out_dir` (as current) with every other bundle
    that passes the same checks, so a container can still roll back. The log ends "JIT compilation successful" or
    "JIT compilation FAILED: <why>" (the current bundle failing); nothing is retrained."""
    from models.bundle import BundleError, list_bundles, serving_bundle_dir, set_current

    log = CompilationLog()
    try:
        models_dir = Path(models_dir)
        # What a worker would serve: with several bundles and no CURRENT it does not guess, and neither does the
        # image (the newest may be one the promotion gate refused).
        bundle_dir = serving_bundle_dir(models_dir)
        if out_dir is not None and Path(out_dir).resolve() == models_dir.resolve():
            raise CompilationError(f"--out {out_dir} is the directory being verified: install into another one")
        manifest = _verify_loadable(bundle_dir, log)
        installed = bundle_dir
        if out_dir is not None:
            out_dir = Path(out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            installed = _install(bundle_dir, out_dir)
            for other in list_bundles(models_dir):
                if other.version == manifest.version or other.bundle_dir is None:
                    continue
                try:
                    _verify_loadable(other.bundle_dir, log)
                except BundleError as exc:
                    log.write(f"not installed: {exc}")
                    continue
                _install(other.bundle_dir, out_dir)
            set_current(out_dir, manifest.version)
            log.write(f"installed in {out_dir}, {manifest.version} as current")
        log.write("JIT compilation successful")
        return installed
    except Exception as exc:
        log.write(f"JIT compilation FAILED: {type(exc).__name__}: {exc}")
        raise
    finally:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text(log.text(), encoding="utf-8")


def _verify_loadable(bundle_dir: Path, log: CompilationLog) -> Manifest:
    """The bundle's manifest, once its hashes match and every agent loads with this torch and can decide."""
    manifest, agents = load_verified_agents(bundle_dir)
    log.write(f"bundle {manifest.version} in {bundle_dir}: SHA-256 of {len(agents)} agent files verified; "
              f"{', '.join(agents)} loaded with torch {torch.__version__}, reference batches ok")
    return manifest


def _install(bundle_dir: Path, out_dir: Path) -> Path:
    installed = out_dir / bundle_dir.name
    shutil.rmtree(installed, ignore_errors=True)
    shutil.copytree(bundle_dir, installed)
    return installed


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m models.compile",
        description="Verify the current model bundle of a models directory and load it with this torch build "
        "(the container build step); optionally install it into another directory.",
    )
    parser.add_argument("--verify", type=Path, required=True, metavar="MODELS_DIR", help="directory of bundles")
    parser.add_argument("--log", type=Path, default=Path("/tmp/jit_compilation.log"), help="JIT compilation log")
    parser.add_argument("--out", type=Path, default=None,
                        help="install the verified bundles here (the current one as current)")
    args = parser.parse_args(argv)
    try:
        installed = verify_and_install(args.verify, args.out, args.log)
    except Exception as exc:
        print(f"JIT compilation FAILED: {exc} (log: {args.log})", file=sys.stderr)
        return 1
    print(f"JIT compilation successful: {installed} (log: {args.log})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
