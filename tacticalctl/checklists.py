"""`tacticalctl morning-check`, `market-check` and `eod`: the runbook's daily checklists, one row per step."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Annotated

import typer

from tacticalctl.context import JsonOption, get_context, print_json, worker_settings
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import parse_duration
from tacticalctl.results import ModelsDirOption, exit_code, open_sources, results_table, status_text
from worker.alerts import default_actor
from worker.ops.checklists import ChecklistRun, end_of_day, market_check, morning_check
from worker.ops.keys import require_cleanable_age


def _seconds(option: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise CtlError(f"{option}: {exc}", ExitCode.UNKNOWN) from None


def _progress(ctx: typer.Context, json_output: bool, what: str) -> AbstractContextManager[object]:
    """A spinner while the checks run (they may wait on a timeout); nothing when the output is JSON."""
    return nullcontext() if json_output else get_context(ctx).console.status(f"{what}…")


def _finish(ctx: typer.Context, run: ChecklistRun, title: str, json_output: bool) -> None:
    if json_output:
        print_json(run.as_dict())
    else:
        console = get_context(ctx).console
        console.print(results_table(title, run.results))
        console.print(f"{run.name}: {status_text(run.status)}")
    raise typer.Exit(int(exit_code(run.status)))


def morning_check_command(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="Overnight period for the performance summary and the alert history "
                                       "(e.g. 16h, 90m).")] = "16h",
    models_dir: ModelsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Morning startup checklist: the runbook's 8 steps, 30 minutes before market open.

    Worker running, Redis ping on db 2, JIT compilation, overnight performance, /health, /health/state, stale
    processing keys, breaker and alert history. Exit 0 ok, 1 warning, 2 critical (Redis or the worker unreachable
    included), 3 a step could not run (and none is critical or warning: those outrank it).

    JSON keys: checklist, status (ok|warn|critical|unknown), generated_at, steps [{step, status, value, threshold,
    next_action, details}].
    """
    since_s = _seconds("--since", since)
    with open_sources(ctx, models_dir) as sources, _progress(ctx, json_output, "running the morning check"):
        run = morning_check(sources, since_s=since_s)
    _finish(ctx, run, "morning check", json_output)


def market_check_command(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Market-hours checklist: the runbook's 8 steps, every 15 minutes.

    P99 latency, consumer lag, active positions, error rate, model
    confidence, health state transitions, duplicate events, circuit breaker. Exit 0/1/2/3 as `morning-check`.

    JSON keys: checklist, status (ok|warn|critical|unknown), generated_at, steps [{step, status, value, threshold,
    next_action, details}].
    """
    with open_sources(ctx) as sources, _progress(ctx, json_output, "running the market check"):
        run = market_check(sources)
    _finish(ctx, run, "market check", json_output)


def eod_command(
    ctx: typer.Context,
    report_dir: Annotated[Path, typer.Option(envvar="TACTICAL_REPORT_DIR", file_okay=False,
                                             help="Where the daily report (markdown + JSON) and the log archive go.")]
    = Path("reports"),
    since: Annotated[str | None, typer.Option(help="Period of the report, e.g. 24h (default: since 00:00 UTC).")]
    = None,
    log_file: Annotated[Path | None, typer.Option(dir_okay=False, help="Log file to archive (gzip) into "
                                                  "--report-dir, or - to read it from stdin; without it the "
                                                  "archive step is skipped.")] = None,
    older_than: Annotated[str, typer.Option(help="Completed idempotency keys older than this are cleaned.")] = "24h",
    yes: Annotated[bool, typer.Option("--yes", help="Clean the keys and reset the breaker counter. Without it, "
                                      "only show what would be done.")] = False,
    models_dir: ModelsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """End-of-day checklist: report, degradation patterns, key cleanup, breaker reset, log archive.

    After market close: archive the log, write the daily performance report, degradation patterns,
    model update, backups, health transitions, old idempotency keys, breaker counter reset (only when every
    breaker is closed and there was no P0 today). Key cleanup and the reset act only with --yes (audited).
    Exit 0/1/2/3 as `morning-check`.

    JSON keys: checklist, status (ok|warn|critical|unknown), generated_at, steps [{step, status, value, threshold,
    next_action, details}]. The report step's details carry the report.
    """
    period = None if since is None else _seconds("--since", since)
    older_than_s = _seconds("--older-than", older_than)
    try:
        require_cleanable_age(older_than_s)  # refused before anything runs
    except ValueError as exc:
        raise CtlError(f"--older-than: {exc}", ExitCode.UNKNOWN) from None
    completed_ttl_s = float(worker_settings().completed_ttl_s)
    with open_sources(ctx, models_dir) as sources, _progress(ctx, json_output, "running the end-of-day checklist"):
        run = end_of_day(
            sources,
            report_dir=report_dir,
            since_s=period,
            log_file=log_file,
            older_than_s=older_than_s,
            apply=yes,
            actor=default_actor(),
            completed_ttl_s=completed_ttl_s,
        )
    _finish(ctx, run, "end of day", json_output)


def register(app: typer.Typer) -> None:
    app.command("morning-check")(morning_check_command)
    app.command("market-check")(market_check_command)
    app.command("eod")(eod_command)
