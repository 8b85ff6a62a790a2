"""`tacticalctl duplicates`: the worker's duplicate counter and the correlation ids seen more than once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from tacticalctl.context import get_context, print_json
from tacticalctl.errors import ExitCode
from tacticalctl.formatting import plain
from worker.ops.duplicates import ScanResult, duplicate_commands, duplicate_events_total, input_offenders
from worker.ops.worker_client import WorkerClient, WorkerUnreachable


def offenders_table(scan: ScanResult, title: str) -> Table:
    table = Table(title=title)
    for column in ("correlation id", "times", "first seen (UTC)", "last seen (UTC)", "entries"):
        table.add_column(column, no_wrap=column != "entries")
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
    last: Annotated[int, typer.Option(help="Look at this many latest entries of synergy_events and "
                                      "execution_commands.", min=1)] = 1000,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Duplicate events: the worker's counter and the correlation ids seen more than once.

    tactical_duplicate_events_total from /metrics, the correlation ids sent more than once among the last --last
    events (the producer's retries and replays: decided once, acked as duplicates), and — what must never happen —
    ids with more than one execution command. Exit 0 none, 1 repeated input ids, 2 repeated commands or the worker
    unreachable.

    JSON keys: duplicate_events_total (null when the worker is unreachable), worker_error, input {scanned,
    truncated, offenders [{correlation_id, count, entry_ids, first_ms, last_ms}]}, commands (same shape), status."""
    context = get_context(ctx)
    client = context.redis()
    inputs = input_offenders(client, last=last)
    commands = duplicate_commands(client, last=last)
    worker_error = None
    try:
        counted = duplicate_events_total(WorkerClient(context.worker_url).metrics())
    except WorkerUnreachable as exc:
        counted, worker_error = None, str(exc)
    if commands.offenders or worker_error:
        code = ExitCode.CRITICAL
    elif inputs.offenders:
        code = ExitCode.WARNING
    else:
        code = ExitCode.OK
    if json_output:
        print_json({"duplicate_events_total": counted, "worker_error": worker_error, "input": inputs.as_dict(),
                    "commands": commands.as_dict(), "status": code.name.lower()})
        raise typer.Exit(int(code))
    console = context.console
    if worker_error:
        console.print(f"[bold red]duplicate counter unavailable[/]: {worker_error}")
    else:
        console.print(f"tactical_duplicate_events_total: {0 if counted is None else int(counted)} "
                      "(events already decided or in flight, acked without a second command)")
    if inputs.offenders:
        console.print(offenders_table(inputs, f"correlation ids repeated among the last {inputs.scanned} events"))
    else:
        console.print(f"no correlation id repeated among the last {inputs.scanned} events")
    if commands.offenders:
        console.print(offenders_table(commands, "[bold red]correlation ids with more than one execution command[/]"))
        console.print("[bold red]exactly-once output is broken[/]: `tacticalctl triage duplicate-processing`")
    else:
        console.print(f"no repeated execution command among the last {commands.scanned}")
    raise typer.Exit(int(code))


def register(app: typer.Typer) -> None:
    app.command()(duplicates)
