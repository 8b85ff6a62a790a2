"""`tacticalctl duplicates`: the workers' duplicate counters and the correlation ids seen more than once."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from tacticalctl.context import JsonOption, get_context, print_json
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import parse_duration, plain
from worker.ops.duplicates import (
    DUPLICATE_COUNTER,
    ScanResult,
    duplicate_commands,
    fleet_duplicate_events,
    input_offenders,
    require_window,
    window_commands,
    window_resends,
)
from worker.ops.worker_client import WorkerClient


def offenders_table(scan: ScanResult, title: str) -> Table:
    table = Table(title=title)
    for column in ("correlation id", "times", "first seen (UTC)", "last seen (UTC)", "entries"):
        table.add_column(column, overflow="fold")
    for offender in scan.offenders:
        table.add_row(
            plain(offender.correlation_id), str(offender.count),
            f"{datetime.fromtimestamp(offender.first_ms / 1000, UTC):%Y-%m-%d %H:%M:%S}",
            f"{datetime.fromtimestamp(offender.last_ms / 1000, UTC):%Y-%m-%d %H:%M:%S}",
            ", ".join(offender.entry_ids[:4]) + (" …" if len(offender.entry_ids) > 4 else ""),
        )
    return table


def duplicates(
    ctx: typer.Context,
    window: Annotated[str, typer.Option(help="Look at the entries of this last stretch of time (e.g. 15m, 2h): "
                                        "what market-check and TacticalDuplicateEvents watch.")] = "15m",
    last: Annotated[int | None, typer.Option(help="Look at this many latest entries of synergy_events and "
                                             "execution_commands instead of --window.", min=1)] = None,
    json_output: JsonOption = False,
) -> None:
    """Duplicate events: every live worker's counter and the correlation ids seen more than once.

    tactical_duplicate_events_total from /metrics of every live worker (each counts its own; summed, and listed
    per worker), the correlation ids sent more than once in the last --window
    or among the --last entries (the producer's retries: decided once, acked as duplicates; a copy sent after the
    first was dead-lettered, as `dead-letter replay` does, is not counted), and — what must never happen — ids with
    more than one execution
    command. Every command of the window is read; events, the newest 20,000 of it. Exit 0 none, 1 repeated input
    ids or another live worker's counter not read, 2 repeated commands or the worker at --worker-url unreachable.

    JSON keys: window_s (null with --last), duplicate_events_total (the sum over the workers read; null when none
    was), workers [{consumer, url, duplicate_events_total, error}] (the worker at --worker-url first, then every
    other live worker at the endpoint its heartbeat names; a worker not read has a null count and the error),
    worker_error (the worker at --worker-url's), input {scanned, truncated, offenders [{correlation_id, count,
    entry_ids, first_ms, last_ms}]}, commands (same shape), status (ok, warn, critical)."""
    context = get_context(ctx)
    window_s = None
    if last is None:
        try:
            window_s = parse_duration(window)
            require_window(window_s)
        except ValueError as exc:
            raise CtlError(f"--window: {exc}", ExitCode.UNKNOWN) from None
    client = context.redis()
    if window_s is None:
        assert last is not None
        inputs, commands = input_offenders(client, last=last), duplicate_commands(client, last=last)
        events_seen, commands_seen = f"among the last {inputs.scanned} events", f"among the last {commands.scanned}"
    else:
        inputs, commands = window_resends(client, window_s), window_commands(client, window_s)
        span = f"in the last {window}"
        events_seen = f"{span} ({inputs.scanned} events{', the newest' if inputs.truncated else ''})"
        commands_seen = f"{span} ({commands.scanned} commands)"
    worker = WorkerClient(context.worker_url)
    fleet = fleet_duplicate_events(client, context.worker_url, metrics=worker.metrics, health=worker.health,
                                   timeout_s=worker.timeout_s)
    worker_error = fleet.workers[0].error  # the worker at --worker-url
    if commands.offenders or worker_error:
        code = ExitCode.CRITICAL
    elif inputs.offenders or fleet.missing:
        code = ExitCode.WARNING
    else:
        code = ExitCode.OK
    if json_output:
        print_json({"window_s": window_s, **fleet.as_dict(), "worker_error": worker_error,
                    "input": inputs.as_dict(), "commands": commands.as_dict(), "status": code.status})
        raise typer.Exit(int(code))
    console = context.console
    if worker_error:
        console.print(f"[bold red]duplicate counter unavailable[/]: {plain(worker_error)}")
    if fleet.read:
        # Each worker counts only the duplicates it caught (Prometheus sums them): every live one is read.
        console.print(f"{DUPLICATE_COUNTER}: {plain(fleet.summary())}: events already decided or in flight, acked "
                      "without a second command")
    if fleet.unread:
        style = "bold yellow" if fleet.missing else "default"  # a missing counter makes the sum a floor
        console.print(f"[{style}]{plain(fleet.shortfall())}[/]")
    if inputs.offenders:
        console.print(offenders_table(inputs, f"correlation ids repeated {events_seen}"))
    else:
        console.print(f"no correlation id repeated {events_seen}")
    if commands.offenders:
        console.print(offenders_table(commands, "[bold red]correlation ids with more than one execution command[/]"))
        console.print("[bold red]exactly-once output is broken[/]: `tacticalctl triage duplicate-processing`")
    else:
        console.print(f"no repeated execution command {commands_seen}")
    repeated = commands.offenders or inputs.offenders
    if repeated:
        console.print(f"what each was decided, with its commands: `tacticalctl decision "
                      f"{plain(shlex.quote(repeated[0].correlation_id))}`")
    raise typer.Exit(int(code))


def register(app: typer.Typer) -> None:
    app.command()(duplicates)
