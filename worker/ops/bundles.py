"""Model bundles as an operator handles them: list, verify end to end, recompile, promote.

Verification goes in the order that keeps it safe: manifest, then every file's SHA-256 (all of them, so each
mismatched file is named), and only when every hash matches does it load the TorchScript — loading runs code — run
a forward pass on a reference matrix, time each agent on single events against a latency budget, and read the JIT
compilation log. Each step is a `CheckResult`, so `tacticalctl models verify` renders like every checklist.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from models.bundle import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    SIGNING_KEY_ENV,
    VERSION_PATTERN,
    BundleError,
    BundleNotFoundError,
    Manifest,
    check_compatible,
    check_version_content,
    list_bundles,
    read_current_version,
    read_manifest,
    sha256_bytes,
    signed_current_version,
    signing_key_from_env,
    verify_signature,
)
from models.compile import compile_bundle, deserialize, load_verified_agents, output_problems, reference_inputs
from models.fusion import FUSION_TOLERANCE, try_fusion
from worker.actions import AGENT_NAMES
from worker.inference import configure_torch_threads, row_invariant_kernels, stack_agents
from worker.ops.checks import CheckResult, Status, jit_log_status
from worker.ops.reports import percentile

LATENCY_BUDGET_MS = 5.0  # per agent, P99 of single-event calls: a twentieth of the 100 ms end-to-end budget
LATENCY_CALLS = 100
WARMUP_CALLS = 5
REFERENCE_SEED = 0


def _result(step: str, status: Status, value: str, threshold: str = "", next_action: str = "",
            **details: Any) -> CheckResult:
    return CheckResult(step, status, value, threshold, next_action, details)


@dataclass(frozen=True, slots=True)
class BundleListing:
    version: str
    created_at: datetime
    current: bool
    jit_successful: bool
    jit_log_exists: bool
    metrics: Mapping[str, Any]
    bundle_dir: Path

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "current": self.current,
            "jit_successful": self.jit_successful,
            "jit_log_exists": self.jit_log_exists,
            "metrics": dict(self.metrics),
            "bundle_dir": str(self.bundle_dir),
        }


def current_version(models_dir: Path) -> str | None:
    """The active version: CURRENT's, else the newest bundle's; None when there is no bundle."""
    version = read_current_version(models_dir)
    if version is not None:
        return version
    bundles = list_bundles(models_dir)
    return bundles[0].version if bundles else None


def bundle_listing(models_dir: Path) -> list[BundleListing]:
    """Every readable bundle, newest first, with the CURRENT marker (on the bundle CURRENT names: none without the
    file) and its JIT log status (no hashing here)."""
    models_dir = Path(models_dir)
    active = read_current_version(models_dir)
    listings = []
    for manifest in list_bundles(models_dir):
        assert manifest.bundle_dir is not None
        log = jit_log_status(manifest.bundle_dir)
        listings.append(BundleListing(manifest.version, manifest.created_at, manifest.version == active,
                                      log.successful, log.exists, manifest.metrics, manifest.bundle_dir))
    return listings


def resolve_bundle(models_dir: Path, version: str | None) -> Path:
    """The directory of `version`, or of the active bundle when None; BundleNotFoundError names what is missing."""
    models_dir = Path(models_dir)
    if version is None:
        active = current_version(models_dir)
        if active is None:
            raise BundleNotFoundError(f"no model bundle in {models_dir}")
        version = active
    if Path(version).name != version or version in (".", ".."):  # a name in models_dir, never a path out of it
        raise BundleNotFoundError(f"{version!r} is not a bundle version: give the name of a directory in {models_dir}")
    bundle_dir = models_dir / version
    if not bundle_dir.is_dir():
        known = ", ".join(m.version for m in list_bundles(models_dir)[:5]) or "none"
        raise BundleNotFoundError(f"no bundle {version!r} in {models_dir} (bundles: {known})")
    return bundle_dir


def _signature_step(bundle_dir: Path) -> CheckResult | None:
    """With a signing key configured (as the workers have it), whether the manifest carries its signature. Without
    a key here, a signed CURRENT in the same directory says the workers have one: an unsigned bundle is one they
    would refuse (keeping CURRENT), so promoting or rolling back to it would change nothing live. None when neither
    says signatures are checked."""
    threshold = f"{SIGNATURE_FILE} made with the key in ${SIGNING_KEY_ENV}"
    try:
        key = signing_key_from_env()
        if key is None:
            return _fleet_signature_step(bundle_dir)
        verify_signature(bundle_dir, (bundle_dir / MANIFEST_FILE).read_bytes(), key)
    except (BundleError, OSError) as exc:
        return _result("signature", Status.CRITICAL, str(exc), threshold,
                       f"workers with this key refuse it: `tacticalctl models sign {bundle_dir.name}` with their key, "
                       "or make a signed version CURRENT: `tacticalctl models rollback <version> --yes`")
    return _result("signature", Status.OK, f"{SIGNATURE_FILE} matches the configured key", threshold)


def _fleet_signature_step(bundle_dir: Path) -> CheckResult | None:
    current = signed_current_version(bundle_dir.parent)
    if current is None or current == bundle_dir.name:
        return None
    threshold = f"signed, as CURRENT {current} is"
    if (bundle_dir / SIGNATURE_FILE).is_file():
        return _result("signature", Status.OK, f"{SIGNATURE_FILE} present (not checked: no key in ${SIGNING_KEY_ENV} "
                       "here)", threshold)
    return _result("signature", Status.CRITICAL,
                   f"unsigned, but CURRENT {current} is signed: workers holding the key refuse it and keep CURRENT; "
                   f"sign it first (`tacticalctl models sign {bundle_dir.name} --key-file <the workers' key>`), or, "
                   f"if no worker holds a key, delete {current}/{SIGNATURE_FILE}",
                   threshold, f"`tacticalctl models sign {bundle_dir.name} --key-file <the workers' key>`")


def _hash_steps(manifest: Manifest, bundle_dir: Path) -> tuple[list[CheckResult], dict[str, bytes]]:
    results = []
    contents: dict[str, bytes] = {}
    for name in AGENT_NAMES:
        agent = manifest.agent(name)
        path = bundle_dir / agent.file
        step = f"sha256 {agent.file}"
        try:
            data = path.read_bytes()
        except OSError as exc:
            results.append(_result(step, Status.CRITICAL, f"{path}: cannot be read ({exc})", "matches the manifest",
                                   f"restore the bundle; {_way_out(bundle_dir)}", file=str(path)))
            continue
        actual = sha256_bytes(data)
        if actual != agent.sha256:
            results.append(_result(step, Status.CRITICAL, f"{path}: SHA-256 mismatch: manifest {agent.sha256[:16]}…, "
                                   f"file {actual[:16]}…", "matches the manifest",
                                   "the file was changed after compilation: do not load it; restore the bundle; "
                                   f"{_way_out(bundle_dir)}",
                                   file=str(path), expected=agent.sha256, actual=actual))
            continue
        contents[name] = data
        results.append(_result(step, Status.OK, f"{actual[:16]}… ({len(data)} bytes)", "matches the manifest",
                               file=str(path), sha256=actual))
    return results, contents


def _way_out(bundle_dir: Path) -> str:
    """What to do about a bundle that cannot be served: CURRENT is replaced by a verified one; any other is simply
    not promoted."""
    try:
        current = read_current_version(bundle_dir.parent) == bundle_dir.name
    except BundleError:
        current = False
    if current:
        return "it is CURRENT: make a verified version CURRENT (`tacticalctl models rollback <version> --yes`)"
    return "it is not CURRENT: do not promote it (compile it again, or copy the bundle in intact)"


def _forward_step(modules: Mapping[str, torch.jit.ScriptModule], bundle_dir: Path) -> CheckResult:
    inputs = reference_inputs(REFERENCE_SEED)
    problems = output_problems(modules, inputs)
    threshold = "(B, 3) probabilities summing to 1 and (B,) confidence, finite"
    sizes = [int(b.shape[0]) for b in inputs]
    if problems:
        return _result("forward pass", Status.CRITICAL, "; ".join(problems), threshold,
                       f"the bundle cannot decide: {_way_out(bundle_dir)}; contact the ML team")
    return _result("forward pass", Status.OK, f"reference matrices, batches {sizes}: outputs valid", threshold)


def _fusion_step(modules: Mapping[str, torch.jit.ScriptModule]) -> CheckResult:
    with row_invariant_kernels:
        fusion = try_fusion(modules, stack_agents(modules))
    threshold = f"one graph, within {FUSION_TOLERANCE:.0e} of the agents"
    if fusion.graph is None:
        return _result("fused graph", Status.WARN, f"served one agent after another: {fusion.reason}", threshold,
                       "decisions are unaffected, small batches cost more: tell the ML team that models.fusion does "
                       "not know this architecture", fused=False)
    return _result("fused graph", Status.OK, f"served as one graph, largest difference {fusion.difference:.1e}",
                   threshold, fused=True, difference=fusion.difference)


def time_agent(module: torch.jit.ScriptModule, matrix: torch.Tensor, calls: int) -> list[float]:
    """Milliseconds of `calls` single-event forward passes, after the warm-up the profiling executor needs."""
    timings = []
    with torch.inference_mode():
        for _ in range(WARMUP_CALLS):
            module(matrix)
        for _ in range(calls):
            started = time.perf_counter()
            module(matrix)
            timings.append((time.perf_counter() - started) * 1e3)
    return timings


def _latency_steps(modules: Mapping[str, torch.jit.ScriptModule], budget_ms: float, calls: int) -> list[CheckResult]:
    matrix = reference_inputs(REFERENCE_SEED)[0][:1].contiguous()
    results = []
    for name, module in modules.items():
        timings = time_agent(module, matrix, calls)
        p50, p99 = percentile(timings, 0.5), percentile(timings, 0.99)
        assert p50 is not None and p99 is not None
        status = Status.OK if p99 <= budget_ms else Status.WARN
        results.append(_result(
            f"latency {name}", status, f"p50 {p50:.3f} ms, p99 {p99:.3f} ms over {calls} single-event calls",
            f"p99 ≤ {budget_ms:g} ms", "" if status is Status.OK else
            "over budget: check CPU load (`tacticalctl triage p99-latency`), then the model's size",
            p50_ms=p50, p99_ms=p99, calls=calls))
    return results


def verify_steps(
    bundle_dir: Path, *, budget_ms: float = LATENCY_BUDGET_MS, calls: int = LATENCY_CALLS
) -> list[CheckResult]:
    """Every verification step of one bundle, stopping before anything unverified would be loaded."""
    bundle_dir = Path(bundle_dir)
    try:
        if not VERSION_PATTERN.fullmatch(bundle_dir.name):
            # CURRENT can never name it (`set_current` refuses the name): refused here, before any evaluation.
            raise BundleNotFoundError(f"{bundle_dir.name!r} is not a bundle version name (letters, digits, '.', '_', "
                                      "'-'; up to 128): rename the directory and its manifest's version")
        manifest = read_manifest(bundle_dir)
        check_compatible(manifest)
    except BundleError as exc:
        return [_result("manifest", Status.CRITICAL, str(exc), "readable, compatible with this worker",
                        f"the bundle is unusable: {_way_out(bundle_dir)}")]
    results = [_result("manifest", Status.OK, f"{manifest.version}, created {manifest.created_at:%Y-%m-%d %H:%M}Z, "
                       f"torch {manifest.torch_version}", "readable, compatible with this worker",
                       version=manifest.version)]
    signature = _signature_step(bundle_dir)
    if signature is not None:
        results.append(signature)
        if signature.status is Status.CRITICAL:  # workers refuse it: nothing of it is loaded here either
            return [*results, _jit_step(bundle_dir)]
    hashes, contents = _hash_steps(manifest, bundle_dir)
    results += hashes
    if len(contents) < len(AGENT_NAMES):
        return [*results, _jit_step(bundle_dir)]
    try:
        check_version_content(manifest)
    except BundleError as exc:  # files replaced in place, their hashes rewritten: not what this version was
        return [*results, _result("version content", Status.CRITICAL, str(exc), "the version names its files' hashes",
                                  f"the bundle was changed in place: {_way_out(bundle_dir)}"), _jit_step(bundle_dir)]
    configure_torch_threads(1)
    try:
        modules = {name: deserialize(contents[name]).eval() for name in AGENT_NAMES}
    except Exception as exc:  # torch.jit.Error is no RuntimeError
        load_failed = _result(
            "TorchScript load", Status.CRITICAL, f"{type(exc).__name__}: {exc}"[:300],
            f"loads with torch {torch.__version__}",
            f"`tacticalctl models compile {manifest.version}` with this torch; {_way_out(bundle_dir)}",
        )
        return [*results, load_failed, _jit_step(bundle_dir)]
    results.append(_result("TorchScript load", Status.OK, f"{len(modules)} agents loaded with torch "
                           f"{torch.__version__}", f"loads with torch {torch.__version__}"))
    forward = _forward_step(modules, bundle_dir)
    results.append(forward)
    if forward.status is Status.CRITICAL:  # agents that cannot decide are neither fused nor timed
        return [*results, _jit_step(bundle_dir)]
    results.append(_fusion_step(modules))
    results += _latency_steps(modules, budget_ms, calls)
    results.append(_jit_step(bundle_dir))
    return results


def _jit_step(bundle_dir: Path) -> CheckResult:
    log = jit_log_status(bundle_dir)
    threshold = "says \"JIT compilation successful\""
    if not log.exists:
        return _result("JIT log", Status.WARN, f"{log.path} is missing", threshold,
                       f"`tacticalctl models compile {bundle_dir.name}` writes a bundle with its log", **log.as_dict())
    if not log.successful:
        return _result("JIT log", Status.CRITICAL, log.failure or f"{log.path} never says it succeeded", threshold,
                       "read the log; recompile or promote another version", **log.as_dict())
    return _result("JIT log", Status.OK, "JIT compilation successful", threshold, **log.as_dict())


def recompile_bundle(models_dir: Path, version: str) -> Path:
    """Compile a verified bundle's agents again with the installed torch into a new bundle (new version, fresh JIT
    log); CURRENT is not touched. Raises BundleError if the source does not verify, CompilationError if
    compilation fails (its log is kept in `<time>.failed/`)."""
    models_dir = Path(models_dir)
    source_dir = resolve_bundle(models_dir, version)
    configure_torch_threads(1)
    manifest, modules = load_verified_agents(source_dir)
    new_dir = compile_bundle(
        modules,
        models_dir,
        training={**manifest.training, "recompiled_from": manifest.version},
        metrics=manifest.metrics,
        created_at=datetime.now(UTC),
        # Frozen agents keep their weights as constants: the source manifest has their parameter counts.
        parameter_counts={agent.name: agent.parameters for agent in manifest.agents},
    )
    return new_dir


__all__ = [
    "LATENCY_BUDGET_MS",
    "LATENCY_CALLS",
    "BundleListing",
    "bundle_listing",
    "current_version",
    "recompile_bundle",
    "resolve_bundle",
    "time_agent",
    "verify_steps",
]
