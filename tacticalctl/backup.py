"""`tacticalctl backup FILE.tar.gz` and `tacticalctl restore FILE.tar.gz`: the runbook's disaster recovery."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import redis
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tacticalctl.context import JsonOption, get_context, print_json, worker_settings
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import audit_not_written, make_console, plain
from worker.alerts import default_actor
from worker.backup import BackupError, BackupReport, StreamState, create_backup, no_progress
from worker.health import DEFAULT_THRESHOLDS
from worker.names import CONSUMER_GROUP, INPUT_STREAM
from worker.restore import RestorePlan, config_env_file, open_archive, plan_restore, restore_backup
from worker.settings import redact_url

ModelsDirOption = Annotated[Path | None, typer.Option(
    "--models-dir", help="Model bundles directory (default: TACTICAL_MODELS_DIR, else the shipped bundles).")]
NoModelsOption = Annotated[bool, typer.Option("--no-models", help="Leave the model bundles out.")]


def _models_dir(models_dir: Path | None, no_models: bool) -> Path | None:
    if no_models:
        return None
    return models_dir if models_dir is not None else worker_settings().models_dir


@contextmanager
def _progress() -> Iterator[Any]:
    """A progress callback drawing on stderr when it is a terminal (stdout stays clean for --json)."""
    console = make_console(stderr=True)
    if not console.is_terminal:
        yield no_progress
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def streams_table(states: list[StreamState], title: str) -> Table:
    table = Table(title=title, expand=False)
    for column in ("stream", "entries", "last id", "group", "last delivered", "entries read", "pending"):
        table.add_column(column, overflow="fold")
    for state in states:
        if not state.exists:
            what = "(none)" if state.other_type is None else f"({plain(state.other_type)}, not a stream)"
            table.add_row(plain(state.name), what, "-", "-", "-", "-", "-")
            continue
        groups = state.groups or ({},)
        for group in groups:
            table.add_row(plain(state.name), str(state.length), state.last_generated_id,
                          *(plain(_cell(group.get(key))) for key in ("name", "last_delivered_id", "entries_read",
                                                                     "pending")))
    return table


def _cell(value: object) -> str:
    """A group's field: absent, or unknown to Redis (entries read of a group created at an explicit id), is `-`."""
    return "-" if value is None else str(value)


def backup(
    ctx: typer.Context,
    archive: Annotated[Path, typer.Argument(help="The archive to write (FILE.tar.gz); FILE.tar.gz.sha256 beside it.")],
    models_dir: ModelsDirOption = None,
    no_models: NoModelsOption = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing archive.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Back up the model bundles, the configuration (the running workers' settings, this shell's TACTICAL_* variables;
    no secret) and the Redis state that matters: the
    streams with their ids, consumer group positions and pending entries (copied in one MULTI/EXEC, then read entry
    by entry; DUMPed in it when Redis has no memory for the copies), the completed keys with their expiry, the
    breaker and restart counters. Audited in tactical_alerts.

    JSON keys: archive, checksum_file, sha256, bytes, created_at, redis {source, version, snapshot_time_ms,
    snapshot_held_ms (how long the snapshot held Redis), method, streams}, keys {streams, completed,
    completed_newer_than_snapshot, breaker}, models {dir, current, bundles, current_missing (CURRENT names no bundle
    archived), workers_elsewhere (the running workers' models directories, where not this one)}, config {workers: the
    running workers whose settings were recorded}, audit_id."""
    context = get_context(ctx)
    client = context.redis()
    before = _file_stamp(archive)
    with _progress() as progress, _sigterm_as_interrupt():
        try:
            report = create_backup(client, archive, settings=worker_settings(),
                                   models_dir=_models_dir(models_dir, no_models), actor=default_actor(),
                                   source_url=redact_url(context.redis_url), overwrite=force, progress=progress)
        except BackupError as exc:
            raise CtlError(str(exc), ExitCode.CRITICAL) from None
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (`timeout`, a supervisor): say what is left
            if _file_stamp(archive) not in (None, before):  # renamed into place just before the signal
                said = (f"interrupted after {archive} was written: it is complete, but its .sha256 file or its audit "
                        f"entry may be missing — `tacticalctl restore {archive} --dry-run` verifies it")
            else:
                said = ("interrupted: no archive written (its staging files are removed; its stream copies too, or "
                        "they expire within the hour)")
            typer.echo(said, err=True)
            raise typer.Exit(130) from None
    states = [StreamState.from_dict(doc) for doc in report.manifest["redis"]["streams"]]
    if json_output:
        print_json(report.as_dict())
    else:
        _print_backup(context.console, report, states)
    # A stream's name holding another type: archived as it is, but the worker cannot run on it. Said, and exit 1.
    not_streams = [f"{state.name} is a {state.other_type}" for state in states if state.other_type]
    if not_streams:
        raise CtlError(f"warning: {', '.join(not_streams)}, not a stream: archived as it is; the worker cannot use it "
                       "— `tacticalctl stream info`, move the key aside (RENAME)", ExitCode.WARNING)


def _file_stamp(path: Path) -> tuple[int, int] | None:
    """What tells a file replaced from the one there before: its inode and modification time; None: no file."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (`timeout`, a supervisor) stops a backup as Ctrl-C does: its copies of the streams and its staging
    directory are removed on the way out (killed by the signal instead, the copies held memory for an hour)."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_backup(console: Console, report: BackupReport, states: list[StreamState]) -> None:
    keys = report.manifest["keys"]
    console.print(streams_table(states, "streams in the backup"))
    console.print(f"completed keys: {keys['completed']} ({keys['completed_newer_than_snapshot']} written after the "
                  f"snapshot left out); breaker and restart keys: {keys['breaker']}")
    models = report.manifest["models"]
    if models is None:
        console.print("model bundles: left out (--no-models)")
    else:
        bad = [b["version"] for b in models["bundles"] if not b["verified"]]
        console.print(f"model bundles: {len(models['bundles'])} from {plain(models['dir'])}, current "
                      f"{plain(models['current'] or '-')}" + (f"; [yellow]failing verification: {', '.join(bad)}[/]"
                                                               if bad else ""))
        if models.get("current_missing"):
            console.print(f"[yellow]CURRENT names {plain(models['current'])}, which is not a bundle there: these "
                          "models would not start a worker after a restore (`tacticalctl models list`)[/]")
        if models.get("workers_elsewhere"):
            theirs = ", ".join(models["workers_elsewhere"])
            console.print(f"[yellow]the running workers serve bundles from {plain(theirs)} (on their hosts), not "
                          f"{plain(models['dir'])}: run the backup where that directory is (in their container), or "
                          "with --models-dir naming a copy of it[/]")
    workers = report.manifest["config"]["workers"]
    if workers:
        running = f"{len(workers)} running worker{'' if len(workers) == 1 else 's'}"
        console.print(f"configuration: the settings of {running} ({plain(', '.join(workers))}) "
                      "and this shell's TACTICAL_* environment")
    else:
        console.print("[yellow]configuration: no worker is running, so only this shell's TACTICAL_* environment is "
                      "recorded: run backups with the workers' environment, or while they run[/]")
    console.print(f"backup written: {plain(report.archive)} ({report.size_bytes} bytes), sha256 {report.sha256}; "
                  f"audit entry {report.audit_id}")
    held_ms = report.manifest["redis"]["snapshot_held_ms"]
    held = f"the snapshot held Redis {held_ms:.0f} ms (serving no other client)"
    method = report.manifest["redis"]["method"]
    if method.startswith("streams: DUMP"):
        held += f"; {plain(method.split(';')[0])}"
    if held_ms > DEFAULT_THRESHOLDS.redis_rtt_critical_ms:
        console.print(f"[yellow]{held}: over the workers' {DEFAULT_THRESHOLDS.redis_rtt_critical_ms:.0f} ms Redis "
                      "check; back up after the close, and trim the streams daily (`tacticalctl stream trim`; "
                      "runbook, Backup Procedures)[/]")
    else:
        console.print(held)


def _print_plan(console: Console, plan: RestorePlan, *, restored: bool = False, models_only: bool = False) -> None:
    manifest = plan.archive.manifest
    checksum = (f"checked against {plain(plan.archive.checksum_file)}" if plan.archive.checksum_file
                else "[yellow]no .sha256 file beside it[/]: members checked against the manifest only")
    console.print(f"archive {plain(plan.archive.path)}: backup of {manifest['created_at']} from "
                  f"{plain(manifest['redis']['source'])}; sha256 {plan.archive.sha256} {checksum}")
    if models_only:  # the archive's streams and keys are not what happens: said once, not tabled as restored
        console.print("Redis: left as it is (--models-only)")
    else:
        console.print(streams_table(plan.archive.streams, "streams to restore"))
        keys = manifest["keys"]
        console.print(f"completed keys: {keys['completed']}; breaker and restart keys: {keys['breaker']}")
        target = "empty" if plan.target_empty else (f"{len(plan.existing_streams)} streams and "
                                                     f"{plan.existing_tactical_keys} tactical:* keys")
        console.print(f"target: {target}; running workers: {', '.join(plan.live_workers) or 'none'}")
    models = manifest.get("models")
    if plan.models_dir is None or not models:
        console.print("model bundles: not restored" + ("" if models else " (the archive has none)"))
    else:
        differ = len(plan.model_conflicts)
        conflicts = "" if not differ else (f"; {differ} that differed overwritten (--force)" if restored
                                           else f"; files there that differ: {differ}")
        console.print(f"model bundles: into {plain(plan.models_dir)}{conflicts}")


def _restored_pending(client: redis.Redis) -> int:
    try:
        return int(client.xpending(INPUT_STREAM, CONSUMER_GROUP)["pending"])
    except redis.ResponseError:  # no stream or group was in the archive
        return 0


def _next_after_restore(pending: int, models_dir: Path | None, *, models_only: bool) -> str:
    """What the runbook's recovery procedures do next."""
    verify = f"`tacticalctl models verify --models-dir {plain(models_dir)}`, then " if models_dir is not None else ""
    if models_only:
        return f"next: {verify}start the worker on this host with that models directory; `tacticalctl morning-check`"
    return (f"next: start the workers (models from {plain(models_dir) if models_dir else 'their own --models-dir'}); "
            f"they reclaim the {pending} restored pending entries and decide the undelivered ones — "
            "`tacticalctl lag watch` until both are 0. The restored backlog is as old as the backup: a worker starts "
            "critical (consumer lag), then steps back one TACTICAL_HEALTH_RECOVERY_S at a time (`tacticalctl health "
            "state`: recovering); then `tacticalctl morning-check`")


def restore(
    ctx: typer.Context,
    archive: Annotated[Path, typer.Argument(help="The archive written by `tacticalctl backup`.")],
    models_dir: ModelsDirOption = None,
    no_models: NoModelsOption = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace the target's streams and tactical:* keys, and model files that differ.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Verify and show what would be done; change nothing.")]
    = False,
    config_out: Annotated[Path | None, typer.Option(
        "--config-out", help="Write the archived configuration to this env file: the settings the running workers "
        "had (from their heartbeats), else the TACTICAL_* environment of the backup run.")] = None,
    models_only: Annotated[bool, typer.Option(
        "--models-only", help="Restore only the model bundles (into --models-dir); Redis is left as it is: a new "
        "worker host beside a healthy Redis.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="With --force: replace what the target holds.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Verify the archive (its .sha256 file and every member's SHA-256), then restore it into an empty database:
    streams with their ids, groups and pending entries, completed keys with their remaining time, counters, model
    bundles. Refuses a non-empty target unless --force --yes (--force alone shows what it would replace), and always
    while a worker runs against it. Start the workers
    afterwards: they reclaim the pending entries, and completed keys make redelivered events duplicates. With
    --models-only, only the model bundles are restored and Redis is not touched (a new worker host); Redis is then
    needed only for the audit entry, so the bundles are restored and verified when it cannot be reached (a new host
    before Redis is back), saying the entry was not written: record it by hand.
    Audited in tactical_alerts. Exit 0 restored and verified against the manifest, 1 restored and verified but not
    audited (--models-only: Redis unreachable, or it refused the entry), 2 refused or failed.

    JSON keys: archive, sha256, checksum_file, created_at, keys, target (existing_streams, existing_tactical_keys,
    live_workers, refused_commands / unsupported_commands: what the restore needs that the Redis user may not
    run / the server does not know; null for --models-only, which does not read Redis), models_dir,
    model_conflicts, applied, and
    after a restore: cleared_keys, restored, expired, model_files_written, environment (of the backup run),
    worker_settings ({consumer: settings} of the workers running then), verified, differences,
    audit_id, audit_error (--models-only: why the audit entry was not written, else null), pending_without_entry
    ({"stream/group": [ids]}: pending entries whose stream entry had been deleted before the backup, so nothing to
    restore)."""
    if models_only and no_models:
        raise CtlError("--models-only and --no-models leave nothing to restore", ExitCode.UNKNOWN)
    if config_out is not None:  # found out before Redis is touched, not after
        if not config_out.parent.is_dir():
            raise CtlError(f"--config-out: {config_out.parent} is not a directory", ExitCode.UNKNOWN)
        if config_out.is_symlink() or (config_out.exists() and not config_out.is_file()):
            raise CtlError(f"--config-out: {config_out} is not a regular file: name the env file itself",
                           ExitCode.UNKNOWN)
        if config_out.exists() and not force and not dry_run:  # as `backup` treats its archive: somebody's file
            raise CtlError(f"--config-out: {config_out} exists: name another file, or add --force to overwrite it",
                           ExitCode.UNKNOWN)
    context = get_context(ctx)
    client, unreachable = context.redis_if_reachable() if models_only else (context.redis(), None)
    target_models = _models_dir(models_dir, no_models)
    try:
        with _progress() as progress:
            verified = open_archive(archive, progress)
            if force and not yes and not dry_run:  # replacing what is there: shown first, as every change is
                dry_run = True
            if dry_run:
                plan = plan_restore(client, verified, target_models, models_only=models_only)
                reason = plan.refusal(force, models_only=models_only)
                if json_output:
                    print_json({**plan.as_dict(), "applied": False, "refused": reason})
                else:
                    _print_plan(context.console, plan, models_only=models_only)
                if reason:
                    raise CtlError(f"restore would be refused: {reason}", ExitCode.CRITICAL)
                if not json_output:
                    if unreachable is not None:
                        context.console.print(f"[yellow]{plain(unreachable)}[/]: the restore will not be audited in "
                                              "tactical_alerts unless Redis answers by then (record it by hand)")
                    context.console.print("dry run: nothing changed. Run without --dry-run to restore"
                                          + (" (with --force --yes: it replaces what the target holds)." if force
                                             else "."))
                return
            report = restore_backup(client, verified, models_dir=target_models, force=force, actor=default_actor(),
                                    progress=progress, models_only=models_only)
    except BackupError as exc:
        raise CtlError(str(exc), ExitCode.CRITICAL) from None
    audit_error = report.audit_error or unreachable
    config_error = None
    if config_out is not None:
        try:
            config_out.write_text(config_env_file(report.environment, report.worker_settings))
        except OSError as exc:  # the restore is done: say so below, then fail on this
            config_error, config_out = f"restored, but --config-out could not be written: {exc}", None
    if json_output:
        print_json({**report.as_dict(), "applied": True, "audit_error": audit_error})
    else:
        console = context.console
        _print_plan(console, report.plan, restored=True, models_only=models_only)
        if not models_only:
            restored = ", ".join(f"{count} {what}" for what, count in report.restored.items())
            console.print(f"restored: {restored}; {report.expired} keys had expired in the archive and were skipped"
                          + (f"; cleared {report.cleared_keys} keys first (--force)" if report.cleared_keys else ""))
            for where, ids in report.pending_without_entry.items():
                console.print(f"{plain(where)}: {len(ids)} pending entries not restored, their stream entries had "
                              f"been deleted before the backup (a worker would only have acked them): "
                              f"{plain(', '.join(ids[:5]))}" + (" …" if len(ids) > 5 else ""))
        if target_models is not None:
            console.print(f"model files written to {plain(target_models)}: {len(report.model_files_written)}")
        if config_out is not None:
            console.print(f"archived configuration written to {plain(config_out)}")
        if report.verified:
            checked = [] if models_only else ["streams, groups and pending entries"]
            checked += [] if target_models is None else ["model files"]
            console.print(f"[green]verified[/]: {' and '.join(checked)} match the backup"
                          + (f"; audit entry {report.audit_id}" if report.audit_id else ""))
            pending = 0 if client is None or models_only else _restored_pending(client)
            console.print(_next_after_restore(pending, target_models, models_only=models_only))
        if audit_error is not None:  # last, where it is read: the restore stands, the trail misses it
            console.print(audit_not_written(audit_error, "restore of the model bundles"))
    if not report.verified:
        raise CtlError("restored, but the result differs from the backup: " + "; ".join(report.differences),
                       ExitCode.CRITICAL)
    if config_error is not None:
        raise CtlError(config_error, ExitCode.CRITICAL)
    if audit_error is not None:
        raise typer.Exit(int(ExitCode.WARNING))


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore)
