"""The promotion gate: a bundle becomes CURRENT only when it beats the current one on held-out evaluation.

"Beats" means strictly more PnL *and* a strictly higher Sharpe ratio than the CURRENT bundle, both evaluated now,
on the same held-out markets (`models.evaluation`), through the worker's own vote. A recompile of CURRENT (`tacticalctl
models compile`) only has to match it: the same weights decide the same way; so does the bundle CURRENT was
recompiled from, or any compile of the same weights (`weights_origin`). A bundle that does not beat it
is refused unless the operator forces it. A rollback (`roll_back`) is the operator's own call and has no gate
beyond verification. With a Redis client every promotion — won, forced or refused — is
recorded in `tactical_alerts` (actor, previous and new version, both bundles' figures), so a forced promotion is
never silent. The worker picks up the new CURRENT without a restart.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from models.bundle import (
    BundleError,
    BundleNotFoundError,
    read_current_version,
    read_manifest,
    set_current,
    verify_bundle,
)
from models.bundle_history import PROMOTE_ACTION, REFUSED_ACTION, ROLLBACK_ACTION, bundle_place
from models.environment import EnvironmentConfig
from models.evaluation import HeldOutConfig, PolicyResult, bundle_policy, evaluate_policies, recorded_settings
from worker.alerts import audit, default_actor, require_audit_trail

LOCK_FILE = ".promote.lock"  # hidden: never taken for a bundle


class PromotionRefusedError(RuntimeError):
    """The candidate does not beat the CURRENT bundle on held-out evaluation; `verdict` has both sets of figures."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(f"{verdict.reason}; promote anyway with force (--force), which is audited")
        self.verdict = verdict


class PromotionError(RuntimeError):
    """A promotion that could not be attempted (not a refusal: nothing was compared)."""


class PromotionBusyError(PromotionError):
    """Another promotion of the same models directory is running: its comparison takes seconds, and two at once
    would each set CURRENT and audit a "previous" the other one had already replaced."""


@contextmanager
def promotion_lock(models_dir: Path) -> Iterator[None]:
    """Held from the comparison to the audit entry; a second promotion of the directory fails at once."""
    path = Path(models_dir) / LOCK_FILE
    try:
        handle = open(path, "a")  # noqa: SIM115 - closed below, after the lock is released
    except OSError as exc:
        raise PromotionError(f"cannot take the promotion lock {path} ({exc.strerror}): promoting writes CURRENT in "
                             f"{models_dir}, which must be writable") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PromotionBusyError(f"another promotion of {models_dir} is running (it holds {path}): run this one "
                                     "again once it has finished") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Verdict:
    candidate: str
    current: str | None
    candidate_figures: dict[str, float | None]
    current_figures: dict[str, float | None] | None
    beats: bool
    reason: str
    held_out_sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "current": self.current,
            "candidate_figures": self.candidate_figures,
            "current_figures": self.current_figures,
            "beats": self.beats,
            "reason": self.reason,
            "held_out_sha256": self.held_out_sha256,
        }


@dataclass(frozen=True)
class Promotion:
    previous: str | None
    version: str
    forced: bool
    verdict: Verdict
    audit_id: str | None = field(default=None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "previous": self.previous,
            "version": self.version,
            "forced": self.forced,
            "audit_id": self.audit_id,
            "verdict": self.verdict.as_dict(),
        }


def judge(
    models_dir: Path,
    version: str,
    *,
    held_out: HeldOutConfig | None = None,
    environment: EnvironmentConfig | None = None,
) -> Verdict:
    """Evaluate `version` and the CURRENT bundle on the same held-out markets and say whether it beats it.
    Held-out data and costs default to those the candidate's manifest was evaluated with."""
    models_dir = Path(models_dir)
    candidate_dir = models_dir / version
    verify_bundle(candidate_dir)
    try:
        current = read_current_version(models_dir)
    except BundleNotFoundError as exc:  # as with an unusable CURRENT below: workers cannot serve it, replacing it helps
        return Verdict(version, None, {}, None, True, f"CURRENT cannot be read, nothing to beat: {exc}")
    if current is None or not (models_dir / current).is_dir():
        return Verdict(version, None, {}, None, True, "there is no CURRENT bundle to beat")
    if current == version:
        return Verdict(version, current, {}, None, False, f"{version} is already CURRENT")
    candidate = bundle_policy("candidate", candidate_dir)
    try:
        incumbent = bundle_policy("current", models_dir / current)
    except BundleError as exc:
        # A CURRENT that fails its checks cannot be served: any candidate that passes them is better. This is the
        # rollback the runbook prescribes for a tampered or broken CURRENT, so it must not need --force.
        return Verdict(version, current, {}, None, True, f"CURRENT {current} is unusable, nothing to beat: {exc}")
    recorded_held_out, recorded_environment = recorded_settings(read_manifest(candidate_dir).metrics)
    held_out = held_out or recorded_held_out
    environment = environment or recorded_environment
    evaluation = evaluate_policies([candidate, incumbent], held_out, environment)
    mine, theirs = evaluation.results["candidate"], evaluation.results["current"]
    beats = beats_on_held_out(mine, theirs)
    comparison = (
        f"PnL {mine.pnl:.1f} vs {theirs.pnl:.1f}, Sharpe {mine.sharpe:.2f} vs {theirs.sharpe:.2f} "
        f"on {evaluation.held_out['events']} held-out events"
    )
    recompile = read_manifest(candidate_dir).training.get("recompiled_from") == current
    same_weights = recompile or weights_origin(models_dir, version) == weights_origin(models_dir, current)
    if beats:
        reason = f"{version} beats CURRENT {current}: {comparison}"
    elif recompile and matches_on_held_out(mine, theirs):
        beats = True
        reason = f"{version} is CURRENT {current} recompiled and decides no worse: {comparison}"
    elif same_weights and matches_on_held_out(mine, theirs):
        # Going back from a recompile to the bundle it was compiled from (or to another compile of it): the same
        # weights cannot beat themselves, and refusing them would rule the known-good bundle out of every rollback.
        beats = True
        reason = (f"{version} has CURRENT {current}'s weights (both compiled from "
                  f"{weights_origin(models_dir, version)}) and decides no worse: {comparison}")
    else:
        reason = f"{version} does not beat CURRENT {current} on both PnL and Sharpe: {comparison}"
    return Verdict(
        version, current, mine.headline(), theirs.headline(), beats, reason, str(evaluation.held_out["sha256"])
    )


def weights_origin(models_dir: Path, version: str) -> str:
    """The bundle whose weights `version` carries: followed back through `models compile`'s `recompiled_from`, as
    far as those bundles are in `models_dir`. Two bundles with one origin are compiles of the same weights."""
    seen = [version]
    while len(seen) <= 32:
        try:
            source = read_manifest(Path(models_dir) / seen[-1]).training.get("recompiled_from")
        except BundleError:
            break
        if not isinstance(source, str) or not source or source in seen:
            break
        seen.append(source)
    return seen[-1]


def beats_on_held_out(candidate: PolicyResult, current: PolicyResult) -> bool:
    return candidate.pnl > current.pnl and candidate.sharpe > current.sharpe


def matches_on_held_out(candidate: PolicyResult, current: PolicyResult) -> bool:
    """No worse on either figure: what a recompile of the same weights must show."""
    return candidate.pnl >= current.pnl and candidate.sharpe >= current.sharpe


def promote_if_better(
    models_dir: Path,
    version: str,
    *,
    force: bool = False,
    client: redis.Redis | None = None,
    actor: str | None = None,
    held_out: HeldOutConfig | None = None,
    environment: EnvironmentConfig | None = None,
) -> Promotion:
    """Make `version` CURRENT when it beats the CURRENT bundle (or when forced); otherwise raise
    PromotionRefusedError and leave CURRENT alone. Audited in `tactical_alerts` when `client` is given. One
    promotion of a directory at a time: PromotionBusyError while another runs."""
    models_dir = Path(models_dir)
    with changing_current(models_dir, version, client):
        return _promote_locked(models_dir, version, force, client, actor or default_actor(), held_out, environment)


@contextmanager
def changing_current(models_dir: Path, version: str, client: redis.Redis | None) -> Iterator[None]:
    """Before CURRENT may change to `version`: the bundle exists, the audit entry is writable, and this is the only
    promotion or rollback of the directory running (`promotion_lock`)."""
    if not (models_dir / version).is_dir():
        raise BundleNotFoundError(f"no bundle {version!r} in {models_dir}")
    if client is not None:
        require_audit_trail(client)
    with promotion_lock(models_dir):
        yield


def _promote_locked(
    models_dir: Path,
    version: str,
    force: bool,
    client: redis.Redis | None,
    actor: str,
    held_out: HeldOutConfig | None,
    environment: EnvironmentConfig | None,
) -> Promotion:
    verdict = judge(models_dir, version, held_out=held_out, environment=environment)
    if verdict.current == version:
        return Promotion(verdict.current, version, False, verdict)
    fields = {
        "previous": verdict.current or "",
        "version": version,
        **bundle_place(models_dir),
        "forced": "true" if force and not verdict.beats else "false",
        "candidate_figures": json.dumps(verdict.candidate_figures, sort_keys=True),
        "current_figures": json.dumps(verdict.current_figures, sort_keys=True),
    }
    if not verdict.beats and not force:
        if client is not None:
            audit(client, actor=actor, action=REFUSED_ACTION, detail=verdict.reason, **fields)
        raise PromotionRefusedError(verdict)
    set_current(models_dir, version)
    audit_id = None
    if client is not None:
        detail = ("FORCED: " if not verdict.beats else "") + f"CURRENT {verdict.current or '(none)'} → {version}; "
        entry = audit(client, actor=actor, action=PROMOTE_ACTION, detail=detail + verdict.reason, **fields)
        audit_id = entry.decode() if isinstance(entry, bytes) else str(entry)
    return Promotion(verdict.current, version, force and not verdict.beats, verdict, audit_id)


@dataclass(frozen=True)
class Rollback:
    previous: str | None
    version: str
    audit_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"previous": self.previous, "version": self.version, "audit_id": self.audit_id}


def roll_back(models_dir: Path, version: str, *, client: redis.Redis | None = None,
              actor: str | None = None) -> Rollback:
    """Make `version` CURRENT again without comparing it with CURRENT: the operator's call when CURRENT misbehaves
    in ways a held-out evaluation does not show (low live confidence, latency, a failed JIT log). `version` must
    verify (`set_current` checks its hashes). Audited as a rollback when `client` is given."""
    models_dir = Path(models_dir)
    with changing_current(models_dir, version, client):
        try:
            previous = read_current_version(models_dir)
            was = previous or "(none)"
        except BundleNotFoundError as exc:  # CURRENT broken: rolling back is how it is mended
            previous, was = None, f"(unreadable: {exc})"
        if previous == version:
            return Rollback(previous, version)
        set_current(models_dir, version)
        audit_id = None
        if client is not None:
            entry = audit(client, actor=actor or default_actor(), action=ROLLBACK_ACTION,
                          detail=f"rolled back: CURRENT {was} → {version}", previous=previous or "",
                          version=version, **bundle_place(models_dir))
            audit_id = entry.decode() if isinstance(entry, bytes) else str(entry)
    return Rollback(previous, version, audit_id)

