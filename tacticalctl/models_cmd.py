"""`tacticalctl models list | verify | compile | promote | rollback | sign`: the model bundles the worker loads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import redis
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from models.bundle import (
    CURRENT_FILE,
    MANIFEST_FILE,
    SIGNING_KEY_ENV,
    BundleError,
    BundleNotFoundError,
    BundleWriteError,
    UnreadableBundle,
    list_bundles,
    read_current_version,
    read_manifest,
    read_signing_key,
    sign_bundle,
    unreadable_bundles,
    verify_bundle,
)
from models.bundle_history import (
    COMPILE_ACTION,
    PROMOTE_FAILED_ACTION,
    REFUSED_ACTION,
    ROLLBACK_FAILED_ACTION,
    ROLLBACK_REFUSED_ACTION,
    SIGN_ACTION,
    bundle_place,
    refused_by_gate,
    replaced_by_current,
)
from models.compile import CompilationError
from models.evaluation import EvaluationError
from models.promotion import PromotionError, PromotionRefusedError, judge, promote_if_better, roll_back
from tacticalctl.app import LAZY_GROUPS
from tacticalctl.context import JsonOption, get_context, print_json
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import age
from tacticalctl.results import ModelsDirOption, exit_code, results_table, status_text
from worker.alerts import AuditTrailError, audit, audit_done, default_actor
from worker.connection import REDIS_FAILED
from worker.ops.bundles import (
    LATENCY_BUDGET_MS,
    LATENCY_CALLS,
    BundleListing,
    bundle_listing,
    current_version,
    recompile_bundle,
    resolve_bundle,
    verify_steps,
)
from worker.ops.checks import CheckResult, Status, jit_log_status, worst
from worker.settings import default_models_dir

models_app = typer.Typer(help=LAZY_GROUPS["models"].help, no_args_is_help=True)

VersionArgument = Annotated[str | None, typer.Argument(help="Bundle version (default: the CURRENT one).",
                                                       show_default=False)]


def _models_dir(models_dir: Path | None) -> Path:
    return models_dir or default_models_dir()


def _bundle(models_dir: Path, version: str | None) -> Path:
    if not models_dir.is_dir():  # a mistyped --models-dir, not the workers' models
        raise CtlError(f"{models_dir} is not a directory", ExitCode.UNKNOWN)
    try:
        return resolve_bundle(models_dir, version)
    except BundleError as exc:
        if version is None:  # the active bundle cannot be found: no worker can load models
            raise CtlError(f"{exc}: workers cannot load it (`tacticalctl triage model-staleness`)",
                           ExitCode.CRITICAL) from None
        raise CtlError(str(exc), ExitCode.UNKNOWN) from None  # a version that is not there: a typo, most likely


def _without_current(directory: Path, versions: Sequence[str]) -> str:
    """What a models directory with no CURRENT file, holding bundles `versions`, does (`serving_bundle_dir`), and
    how to choose."""
    if len(versions) == 1:
        starts = f"a worker starting here serves the only bundle, {versions[0]}"
    else:
        starts = f"a worker starting here refuses to ({len(versions)} bundles: it does not guess which one trades)"
    return (f"{starts}, and a running one keeps its own. Name the bundle to serve: `tacticalctl models rollback "
            f"<version> --yes` (or write its version into {directory / CURRENT_FILE})")


# The headline figures a listing shows, with their short labels: a supervised bundle's vote, a MAPPO bundle's
# held-out evaluation.
PREFERRED_METRICS = {
    "vote.accuracy": "accuracy",
    "vote.directional_accuracy": "directional accuracy",
    "vote.executed_hit_rate": "executed hit rate",
    "evaluation.policies.marl.pnl": "held-out PnL",
    "evaluation.policies.marl.sharpe": "Sharpe",
    "evaluation.policies.marl.accuracy": "accuracy",
    "evaluation.policies.marl.max_drawdown": "max drawdown",
}
WIDE_LISTING = 140  # narrower terminals get the metrics under the table, not squeezed into a column


def _flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def metrics_text(metrics: dict) -> str:
    """The headline figures of a manifest's metrics: the vote's accuracies when present, else the first few."""
    flat = _flatten(metrics)
    shown = {key: label for key, label in PREFERRED_METRICS.items() if key in flat} or {
        key: key for key in list(flat)[:4]}
    return ", ".join(f"{label} {_figure(flat[key])}" for key, label in shown.items()) or "-"


def _figure(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


@models_app.command("list")
def list_(ctx: typer.Context, models_dir: ModelsDirOption = None, json_output: JsonOption = False) -> None:
    """Every bundle, newest first: version, creation time, the CURRENT marker, JIT log status and its metrics; then
    every directory whose manifest does not read, and why (no worker loads it, no rollback goes to it).
    Exits 2 when workers cannot load what is here: CURRENT names a bundle that is not there or whose files do not
    match its manifest (`models verify` says which), there is no bundle at all, or there are several and no CURRENT
    file (a worker starting here refuses to choose; a running one keeps its own); 1 when the one bundle here has no
    CURRENT file (a worker starting here serves it), or when a directory other than CURRENT's has a manifest that
    does not read; 3 when the directory does not exist.

    JSON keys: models_dir, current (null without a CURRENT file), bundles [{version, created_at, current,
    jit_successful, jit_log_exists, metrics, bundle_dir}], unreadable [{bundle_dir, name, error}]."""
    directory = _models_dir(models_dir)
    if not directory.is_dir():
        raise CtlError(f"{directory} is not a directory: give the models directory with --models-dir or "
                       "TACTICAL_MODELS_DIR", ExitCode.UNKNOWN)
    try:
        listings = bundle_listing(directory)
        active = read_current_version(directory)
    except BundleError as exc:  # CURRENT holds something that is not a version name
        raise CtlError(f"{exc}: workers cannot load it (`tacticalctl triage model-staleness`)",
                       ExitCode.CRITICAL) from None
    unreadable = unreadable_bundles(directory)
    if json_output:
        print_json({"models_dir": str(directory), "current": active, "bundles": [b.as_dict() for b in listings],
                    "unreadable": [u.as_dict() for u in unreadable]})
    else:
        _print_listing(get_context(ctx).console, directory, listings, unreadable, active)
    # CURRENT's, when unreadable, is said by the check below, as workers see it: not a bundle (exit 2).
    not_current = [u for u in unreadable if u.name != active]
    try:
        _check_loadable(directory, listings, active)
    except CtlError:
        if not_current:  # said, though the exit code is the more severe condition's
            typer.echo(f"tacticalctl: {_unreadable_warning(not_current)}", err=True)
        raise
    if not_current:
        raise CtlError(_unreadable_warning(not_current), ExitCode.WARNING)


def _check_loadable(directory: Path, listings: list[BundleListing], active: str | None) -> None:
    """The CtlError `models list` exits with when workers cannot load what is here (2), or load the one bundle only
    because no CURRENT file names it (1)."""
    # CURRENT's version, when no bundle listed is that version
    missing_current = active if active is not None and all(b.version != active for b in listings) else None
    if missing_current is not None:
        raise CtlError(f"CURRENT names {missing_current}, {_why_not_a_bundle(directory / missing_current)}: workers "
                       "cannot load it (`tacticalctl triage model-staleness`)", ExitCode.CRITICAL)
    if not listings:
        raise CtlError(f"no model bundle in {directory}: a worker cannot start here (train or copy one in: "
                       "`tacticalctl models train`)", ExitCode.CRITICAL)
    if active is not None:
        try:
            verify_bundle(directory / active)  # its files' hashes (and signature, with the workers' key): no torch
        except BundleError as exc:
            raise CtlError(f"CURRENT {active} does not verify: {exc}: workers refuse it (`tacticalctl models verify`, "
                           "`tacticalctl triage model-staleness`)", ExitCode.CRITICAL) from None
    if active is None:
        versions = [listing.version for listing in listings]
        if len(versions) > 1:  # a worker starting here exits 3 rather than guess which bundle trades
            raise CtlError(f"no CURRENT file in {directory}: {_without_current(directory, versions)}",
                           ExitCode.CRITICAL)
        raise CtlError(f"warning: no CURRENT file in {directory}: {_without_current(directory, versions)}",
                       ExitCode.WARNING)


def _unreadable_warning(unreadable: Sequence[UnreadableBundle]) -> str:
    """One line for bundle directories whose manifest does not read (none of them CURRENT's)."""
    named = "; ".join(u.error for u in unreadable)
    if len(unreadable) == 1:
        [bundle] = unreadable
        what = (f"no worker loads {bundle.name} and no rollback can go to it: fix its {MANIFEST_FILE} (then "
                f"`tacticalctl models verify {bundle.name}`: its files must still match it) or remove the directory")
    else:
        what = (f"no worker loads these {len(unreadable)} directories and no rollback can go to them: fix each one's "
                f"{MANIFEST_FILE} (then `tacticalctl models verify <version>`) or remove the directory")
    return f"warning: {named}: {what}"


def _refuse_gate_bypass(client: redis.Redis | None, document: dict, version: str, directory: Path,
                        json_output: bool, *, audit: bool) -> None:
    """A rollback makes a bundle CURRENT without the held-out comparison: never one that comparison (or its
    verification) refused, unless a promotion has taken it since. That takes `promote --force`, audited as forced.
    Refused with exit 2 (audited when `audit`)."""
    try:
        refusal = None if client is None else refused_by_gate(client, directory, version)
    except AuditTrailError:  # unreadable: the rollback itself is refused for want of an audit trail, unchanged
        return
    if refusal is None:
        return
    reason = (f"{version} was refused by the promotion gate (tactical_alerts {refusal}): a rollback would bypass it. "
              f"If it must serve, `tacticalctl models promote {version} --force --yes` (audited as forced)")
    document["refused_by_gate"] = refusal
    if audit and client is not None:
        reason = _audit_refusal(client, document, reason, document["previous"], version, directory,
                                ROLLBACK_REFUSED_ACTION)
    if json_output:
        print_json(document)
    raise CtlError(f"rollback refused: {reason}", ExitCode.CRITICAL)


def _why_not_a_bundle(bundle_dir: Path) -> str:
    if not bundle_dir.is_dir():
        return f"which is not a bundle in {bundle_dir.parent}"
    try:
        read_manifest(bundle_dir)
    except BundleError as exc:
        return f"whose manifest is unusable ({exc})"
    return f"which is not a bundle in {bundle_dir.parent}"


def _print_listing(console: Console, directory: Path, listings: list[BundleListing],
                   unreadable: Sequence[UnreadableBundle], active: str | None) -> None:
    if not listings and not unreadable:
        console.print(f"no model bundle in {directory}")
        return
    wide = console.width >= WIDE_LISTING
    table = Table(title=f"model bundles in {directory}")
    for column in ("", "version", "created (UTC)", "age", "JIT log", *(["metrics"] if wide else [])):
        table.add_column(column, overflow="fold")
    now = datetime.now(UTC)
    for listing in listings:
        jit = ("[green]successful[/]" if listing.jit_successful else
               "[bold red]failed[/]" if listing.jit_log_exists else "[yellow]missing[/]")
        table.add_row("[bold]CURRENT[/]" if listing.current else "", listing.version,
                      f"{listing.created_at:%Y-%m-%d %H:%M}", age((now - listing.created_at).total_seconds()), jit,
                      *([metrics_text(dict(listing.metrics))] if wide else []))
    for bundle in unreadable:
        marker = "[bold]CURRENT[/] " if bundle.name == active else ""
        table.add_row(f"{marker}[bold red]unreadable[/]", escape(bundle.name), "-", "-", "-",
                      *([f"[red]unreadable: {escape(_why_unreadable(bundle))}[/]"] if wide else []))
    console.print(table)
    if not wide:
        for listing in listings:
            console.print(f"{listing.version}: {metrics_text(dict(listing.metrics))}")
        for bundle in unreadable:
            console.print(f"{escape(bundle.name)}: [red]unreadable: {escape(_why_unreadable(bundle))}[/]")


def _why_unreadable(bundle: UnreadableBundle) -> str:
    """The error, relative to its row's directory: `manifest.json: …`."""
    return bundle.error.removeprefix(f"{bundle.bundle_dir}/")


def _print_steps(ctx: typer.Context, title: str, steps: list[CheckResult]) -> None:
    console = get_context(ctx).console
    console.print(results_table(title, steps))
    console.print(f"verification: {status_text(worst([s.status for s in steps]))}")


@models_app.command("verify")
def verify(
    ctx: typer.Context,
    version: VersionArgument = None,
    budget_ms: Annotated[float, typer.Option(help="Per-agent latency budget: P99 of single-event calls, ms.",
                                             min=0.0)] = LATENCY_BUDGET_MS,
    calls: Annotated[int, typer.Option(help="Single-event calls timed per agent.", min=1)] = LATENCY_CALLS,
    models_dir: ModelsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Verify a bundle: manifest, every file's SHA-256 (a mismatch names the file and exits 2, and nothing is
    loaded), TorchScript load, a forward pass on reference matrices, per-agent latency against --budget-ms (over
    budget: exit 1), and the JIT compilation log.

    JSON keys: version, bundle_dir, status, steps [{step, status, value, threshold, next_action, details}]."""
    directory = _models_dir(models_dir)
    bundle_dir = _bundle(directory, version)
    steps = verify_steps(bundle_dir, budget_ms=budget_ms, calls=calls)
    if version is None and read_current_version(directory) is None:
        # The bundle verified is the newest, not a CURRENT one: say so, as `models list` does. With several, a worker
        # starting here refuses to (it does not guess): critical, as `models list` says, and as the runbook's "do not
        # restart while `models verify` is critical" needs — a restart would not come back.
        versions = [m.version for m in list_bundles(directory)]
        steps.insert(0, CheckResult(
            "CURRENT", Status.WARN if len(versions) == 1 else Status.CRITICAL,
            f"no CURRENT file in {directory}: verified the newest bundle, {bundle_dir.name}",
            "CURRENT names the bundle to serve", _without_current(directory, versions)))
    status = worst([s.status for s in steps])
    if json_output:
        print_json({"version": bundle_dir.name, "bundle_dir": str(bundle_dir), "status": status.value,
                    "steps": [s.as_dict() for s in steps]})
    else:
        _print_steps(ctx, f"verify {bundle_dir.name}", steps)
    raise typer.Exit(int(exit_code(status)))


@models_app.command("compile")
def compile_(
    ctx: typer.Context,
    version: VersionArgument = None,
    models_dir: ModelsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Compile a verified bundle's agents again with the installed torch (script, freeze, optimise, compare with
    the source, reload) into a new bundle with a fresh jit_compilation.log. CURRENT is not changed: promote the new
    version when it verifies. Exit 2 when compilation fails (the log is kept in <time>.failed/). Audited in
    tactical_alerts (model_compile) when Redis answers; compiled where there is no Redis, with a warning.

    JSON keys: source, version, bundle_dir, jit_log, jit_successful, audit_id (null when not audited),
    audit_error."""
    directory = _models_dir(models_dir)
    source = _bundle(directory, version)
    console = get_context(ctx).console
    try:
        if json_output:
            new_dir = recompile_bundle(directory, source.name)
        else:
            with console.status(f"compiling {source.name} with the installed torch…"):
                new_dir = recompile_bundle(directory, source.name)
    except CompilationError as exc:
        raise CtlError(str(exc), ExitCode.CRITICAL) from None
    except BundleError as exc:
        raise CtlError(f"{source.name} cannot be recompiled: {exc}", ExitCode.CRITICAL) from None
    log = jit_log_status(new_dir)
    audit_id, audit_error = _audit_bundle_change(
        ctx, directory, "compiled", action=COMPILE_ACTION, detail=f"compiled {new_dir.name} from {source.name}",
        version=new_dir.name, compiled_from=source.name)
    if json_output:
        print_json({"source": source.name, "version": new_dir.name, "bundle_dir": str(new_dir),
                    "jit_log": str(log.path), "jit_successful": log.successful, "audit_id": audit_id,
                    "audit_error": audit_error})
        return
    console.print(f"compiled {source.name} → new bundle [bold]{new_dir.name}[/] ({new_dir})"
                  + (f"; audit entry {audit_id}" if audit_id else ""))
    console.print(log.path.read_text(encoding="utf-8").rstrip())
    console.print(f"promote it with: tacticalctl models promote {new_dir.name} --yes")


@models_app.command("promote")
def promote_(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Bundle version to make CURRENT.")],
    yes: Annotated[bool, typer.Option("--yes", help="Promote. Without it, only verify, compare and show what "
                                      "would change.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Promote even if it does not beat CURRENT on held-out "
                                        "data (audited as forced). Never overrides a failed verification.")] = False,
    models_dir: ModelsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Make VERSION the active bundle: verify it fully (refused, exit 2, if any step is critical), evaluate it and
    CURRENT on the same held-out markets, and point CURRENT at it only if it beats CURRENT on PnL and Sharpe — or,
    for a bundle with CURRENT's weights (a recompile of it, or the bundle it was recompiled from), matches it — or
    with --force. Running workers pick it up without a restart. Acts
    only with --yes; audited in tactical_alerts (refusals and failures too). A dry run exits 1 when it would
    refuse. To revert to an earlier bundle, `tacticalctl models rollback`.

    JSON keys: applied, previous, version, forced, audit_id, verdict (beats, reason, candidate_figures,
    current_figures), verification (status, steps)."""
    directory = _models_dir(models_dir)
    bundle_dir = _bundle(directory, version)
    context = get_context(ctx)
    previous = _current_or_none(directory, "the promotion")
    client = context.redis() if yes else None  # the audit entry must be writable before anything changes
    steps = verify_steps(bundle_dir)
    status = worst([s.status for s in steps])
    verification = {"status": status.value, "steps": [s.as_dict() for s in steps]}
    document = {"applied": False, "previous": previous, "version": bundle_dir.name, "forced": False,
                "audit_id": None, "verdict": None, "verification": verification}
    _refuse_if_unverified(ctx, client, document, steps, bundle_dir, directory, json_output, REFUSED_ACTION,
                          "promotion")
    if previous == bundle_dir.name:  # verified, and already served: as `rollback` says, nothing changes
        if json_output:
            print_json(document)
        else:
            context.console.print(f"{bundle_dir.name} is already CURRENT: nothing to promote")
        return
    if client is None:
        try:
            verdict = judge(directory, bundle_dir.name)
        except (BundleError, EvaluationError) as exc:
            raise CtlError(f"promotion would fail: {exc}", ExitCode.CRITICAL) from None
        document["verdict"] = verdict.as_dict()
        would = verdict.beats or force or verdict.current == bundle_dir.name
        if json_output:
            print_json(document)
        else:
            _print_steps(ctx, f"verify {bundle_dir.name}", steps)
            context.console.print(f"held-out comparison: {verdict.reason}")
            context.console.print(f"dry run: would set CURRENT {previous or '(none)'} → {bundle_dir.name}. "
                                  "Add --yes to promote." if would else
                                  f"dry run: would refuse {bundle_dir.name}: it does not beat CURRENT "
                                  "(--force promotes anyway, audited).")
        raise typer.Exit(int(ExitCode.OK if would else ExitCode.WARNING))  # scripts can tell a refusal coming
    try:
        promotion = promote_if_better(directory, bundle_dir.name, force=force, client=client, actor=default_actor())
    except PromotionRefusedError as exc:
        document["verdict"] = exc.verdict.as_dict()
        if json_output:
            print_json(document)
        raise CtlError(f"promotion refused: {exc.verdict.reason} (--force promotes anyway, audited)",
                       ExitCode.CRITICAL) from None
    except (BundleError, PromotionError, EvaluationError) as exc:
        _change_failed(client, document, f"promotion failed: {exc}", exc, directory, json_output,
                       failed=PROMOTE_FAILED_ACTION, refused=REFUSED_ACTION)
    if json_output:
        print_json({**document, **promotion.as_dict(), "applied": True})
        return
    context.console.print(f"held-out comparison: {promotion.verdict.reason}")
    context.console.print(f"CURRENT {promotion.previous or '(none)'} → [bold]{promotion.version}[/]"
                          f"{' (FORCED)' if promotion.forced else ''}; audit entry {promotion.audit_id}. "
                          "Running workers load it within their model poll.")


def _refuse_if_unverified(ctx: typer.Context, client: redis.Redis | None, document: dict, steps: list[CheckResult],
                          bundle_dir: Path, directory: Path, json_output: bool, action: str, what: str) -> None:
    """Refuse (exit 2) a bundle with a critical verification step; audited when --yes asked for it."""
    failed = [s for s in steps if s.status in (Status.CRITICAL, Status.UNKNOWN)]
    if not failed:
        return
    reason = f"{bundle_dir.name} failed verification: " + "; ".join(f"{s.step}: {s.value}" for s in failed)
    if client is not None:  # a refused --yes is audited like a refused comparison
        reason = _audit_refusal(client, document, reason, document["previous"], bundle_dir.name, directory, action)
    if json_output:
        print_json(document)
    elif client is None:
        _print_steps(ctx, f"verify {bundle_dir.name}", steps)
    raise CtlError(f"{what} refused: {reason}", ExitCode.CRITICAL)


def _change_failed(client: redis.Redis, document: dict, reason: str, exc: Exception, directory: Path,
                   json_output: bool, *, failed: str, refused: str) -> NoReturn:
    """A promotion or rollback that --yes asked for did not happen: audited (as `failed` when it could not be
    attempted — another one running, CURRENT not writable, held-out data that cannot be evaluated — so the bundle
    stays a candidate; as `refused` when the bundle itself failed a check), then exit 2."""
    action = failed if isinstance(exc, PromotionError | BundleWriteError | EvaluationError) else refused
    reason = _audit_refusal(client, document, reason, document["previous"], document["version"], directory, action)
    if json_output:
        print_json(document)
    raise CtlError(reason, ExitCode.CRITICAL) from None


def _current_or_none(directory: Path, what: str) -> str | None:
    """CURRENT's version; None, with a warning, when CURRENT cannot be read: a broken CURRENT is a reason to replace
    it, not a reason to refuse."""
    try:
        return current_version(directory)
    except BundleNotFoundError as exc:
        typer.echo(f"tacticalctl: warning: {exc}; {what} replaces it", err=True)
        return None


def _audit_refusal(client: redis.Redis, document: dict, reason: str, previous: str | None, version: str,
                   directory: Path, action: str) -> str:
    """Audit a promotion or rollback that --yes asked for and that did not happen (`action`: refused — the bundle
    was judged and ruled out — or failed — it could not be attempted); the reason, with a note if the audit entry
    could not be written (the refusal itself must still be said)."""
    try:
        entry = audit(client, actor=default_actor(), action=action, detail=reason, previous=previous or "",
                      version=version, forced="false", **bundle_place(directory))
    except REDIS_FAILED as exc:  # unreachable, or refused (a key of another type): the refusal must still be said
        return f"{reason} (audit entry not written: {exc})"
    document["audit_id"] = entry.decode() if isinstance(entry, bytes) else str(entry)
    return reason


@models_app.command("rollback")
def rollback(
    ctx: typer.Context,
    version: Annotated[str | None, typer.Argument(
        help="Bundle version to make CURRENT again (default: the one CURRENT replaced when promoted, from "
        "tactical_alerts).",
        show_default=False)] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Roll back. Without it, only verify and show what would "
                                      "change.")] = False,
    models_dir: ModelsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Make an earlier bundle CURRENT again: the runbook's revert. VERSION is verified fully (refused, exit 2, if any
    step is critical) but not compared with CURRENT on held-out data: the live symptom that calls for a rollback
    (low confidence, latency, a failed JIT log) is the operator's evidence. Running workers pick it up without a
    restart. Acts only with --yes; audited in tactical_alerts as model_rollback (model_rollback_refused,
    model_rollback_failed when it did not happen). Without VERSION, the bundle that CURRENT replaced when it was
    promoted, from the audit trail (exit 3 when it does not say): a rollback to CURRENT is passed over, so a second
    rollback never returns to the bundle rolled back from.

    JSON keys: applied, previous, version, audit_id, verification (status, steps)."""
    directory = _models_dir(models_dir)
    context = get_context(ctx)
    client = context.redis() if yes or version is None else None
    if version is None:
        assert client is not None
        try:
            version = replaced_by_current(client, directory)
        except BundleNotFoundError as exc:
            raise CtlError(f"{exc}: name the version to roll back to (`tacticalctl models list`)",
                           ExitCode.CRITICAL) from None
        if version is None:
            raise CtlError(f"tactical_alerts does not say which bundle CURRENT in {directory} replaced when it was "
                           "promoted: name the version to roll back to (`tacticalctl models list`)", ExitCode.UNKNOWN)
    bundle_dir = _bundle(directory, version)
    previous = _current_or_none(directory, "the rollback")
    document: dict = {"applied": False, "previous": previous, "version": bundle_dir.name, "audit_id": None}
    if previous == bundle_dir.name:
        if json_output:
            print_json(document)
        else:
            context.console.print(f"{bundle_dir.name} is already CURRENT: nothing to roll back")
        return
    trail = client if client is not None else context.redis_if_reachable()[0]
    _refuse_gate_bypass(trail, document, bundle_dir.name, directory, json_output, audit=yes)
    steps = verify_steps(bundle_dir)
    document["verification"] = {"status": worst([s.status for s in steps]).value,
                                "steps": [s.as_dict() for s in steps]}
    audit_client = client if yes else None
    _refuse_if_unverified(ctx, audit_client, document, steps, bundle_dir, directory, json_output,
                          ROLLBACK_REFUSED_ACTION, "rollback")
    if not yes:
        if json_output:
            print_json(document)
        else:
            _print_steps(ctx, f"verify {bundle_dir.name}", steps)
            context.console.print(f"dry run: would set CURRENT {previous or '(none)'} → {bundle_dir.name} "
                                  "(a rollback: no held-out comparison). Add --yes to roll back.")
            if trail is None:
                context.console.print("the audit trail could not be read (Redis unreachable): whether the promotion "
                                      "gate refused this bundle is checked by --yes")
        return
    assert client is not None
    try:
        done = roll_back(directory, bundle_dir.name, client=client, actor=default_actor())
    except (BundleError, PromotionError) as exc:
        _change_failed(client, document, f"rollback failed: {exc}", exc, directory, json_output,
                       failed=ROLLBACK_FAILED_ACTION, refused=ROLLBACK_REFUSED_ACTION)
    if json_output:
        print_json({**document, **done.as_dict(), "applied": True})
        return
    context.console.print(f"rolled back: CURRENT {done.previous or '(none)'} → [bold]{done.version}[/]; audit entry "
                          f"{done.audit_id}. Running workers load it within their model poll.")


def _audit_bundle_change(ctx: typer.Context, directory: Path, done: str, *, action: str, detail: str,
                         **fields: str) -> tuple[str | None, str | None]:
    """Audit a change that is made whether or not Redis answers (a build machine may have none): the entry's id,
    or the reason it was not audited — no Redis here, or an alert history of another type — which is also a warning
    on stderr."""
    client, reason = get_context(ctx).redis_if_reachable()
    entry_id = None
    if client is not None:
        entry_id, reason = audit_done(client, actor=default_actor(), action=action, detail=detail, **fields,
                                      **bundle_place(directory))
    if reason is not None:
        typer.echo(f"tacticalctl: warning: {done}, but not audited in tactical_alerts: {reason}", err=True)
    return entry_id, reason


@models_app.command("sign")
def sign(
    ctx: typer.Context,
    version: VersionArgument = None,
    key_file: Annotated[Path, typer.Option("--key-file", envvar="TACTICAL_MODEL_SIGNING_KEY_FILE",
                                           dir_okay=False, help="The signing key shared with the workers.")
                        ] = ...,  # type: ignore[assignment]  # typer's "required" after an argument with a default
    models_dir: ModelsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Sign a verified bundle: write manifest.sig, an HMAC-SHA256 of its manifest with the key. Workers given the
    same key (TACTICAL_MODEL_SIGNING_KEY_FILE) refuse bundles that are unsigned or signed with another key.
    Audited in tactical_alerts (model_sign) when Redis answers; signing where there is no Redis (a build machine)
    still signs, with a warning that it was not audited.

    JSON keys: version, signature_file, audit_id (null when not audited), audit_error."""
    directory = _models_dir(models_dir)
    bundle_dir = _bundle(directory, version)
    try:
        key = read_signing_key(key_file, f"--key-file / {SIGNING_KEY_ENV} {key_file}")
        verify_bundle(bundle_dir, signing_key=None)  # sign only what verifies
        path = sign_bundle(bundle_dir, key)
    except BundleError as exc:
        raise CtlError(f"not signed: {exc}", ExitCode.CRITICAL) from None
    audit_id, audit_error = _audit_bundle_change(ctx, directory, "signed", action=SIGN_ACTION,
                                                 detail=f"signed {bundle_dir.name} ({path.name})",
                                                 version=bundle_dir.name)
    if json_output:
        print_json({"version": bundle_dir.name, "signature_file": str(path), "audit_id": audit_id,
                    "audit_error": audit_error})
    else:
        get_context(ctx).console.print(f"signed {bundle_dir.name}: {path}"
                                       + (f"; audit entry {audit_id}" if audit_id else ""))


def command_group() -> typer.core.TyperGroup:
    """The `models` group with `train` and `eval`, built when `tacticalctl models …` is asked for (see app.LAZY_GROUPS:
    this module imports torch)."""
    from tacticalctl import models_train

    models_train.register(models_app)
    group = typer.main.get_group(models_app)
    group.name = "models"
    return group
