"""`tacticalctl dead-letter list | replay`: what was given up on, why, and putting it back on synergy_events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tacticalctl.context import JsonOption, get_context, print_json, worker_settings
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import plain, timestamp
from worker.alerts import default_actor
from worker.ops.dead_letters import (
    DeadLetterEntry,
    dead_letter_count,
    recent_dead_letters,
    replay_dead_letters,
    select_dead_letters,
)
from worker.stream_entries import entry_time_ms

dead_letter_app = typer.Typer(help="The dead-letter stream synergy_events:dead.", no_args_is_help=True)

ReasonOption = Annotated[
    str | None, typer.Option(help="Only dead letters whose reason contains this text (case-insensitive).")
]


def _when(entry_id: str) -> str:
    try:
        return timestamp(entry_time_ms(entry_id) / 1000)
    except ValueError:
        return "-"


# Below this many columns the table would squeeze the reason to nothing and cut the ids an operator copies into
# `dead-letter replay --id`: each dead letter is printed as two lines instead.
TABLE_MIN_WIDTH = 140


def dead_letters_table(entries: Sequence[DeadLetterEntry], title: str, width: int) -> RenderableType:
    if width < TABLE_MIN_WIDTH:
        lines = [Text(title, style="italic")]
        for entry in entries:
            deliveries = "-" if entry.delivery_count is None else str(entry.delivery_count)
            # Escaped as the table's cells are (`plain`): what is in Redis never drives the terminal.
            lines.append(Text.from_markup(f"{plain(entry.id)}  {_when(entry.id)}  deliveries {deliveries}  original "
                                          f"{plain(entry.original_id or '-')}  correlation id "
                                          f"{plain(entry.correlation_id or '-')}", style="bold", overflow="fold"))
            lines.append(Text.from_markup(f"    {plain(entry.reason)}", overflow="fold"))
        return Group(*lines)
    table = Table(title=title, expand=False)
    for column in ("id", "dead-lettered (UTC)", "original id", "deliveries"):
        table.add_column(column, no_wrap=True)
    table.add_column("correlation id", overflow="fold", max_width=40)
    table.add_column("reason", overflow="fold", min_width=30)
    for entry in entries:
        table.add_row(
            plain(entry.id),
            _when(entry.id),
            plain(entry.original_id or "-"),
            "-" if entry.delivery_count is None else str(entry.delivery_count),
            plain(entry.correlation_id or "-"),
            plain(entry.reason),
        )
    return table


@dead_letter_app.command("list")
def list_(
    ctx: typer.Context,
    count: Annotated[int, typer.Option(help="Show the latest this many.", min=1)] = 50,
    reason: ReasonOption = None,
    json_output: JsonOption = False,
) -> None:
    """The latest dead letters with their reason, delivery count and original entry id.

    JSON keys: total, entries [{id, reason, delivery_count, original_id, consumer, correlation_id,
    original_fields}]."""
    context = get_context(ctx)
    client = context.redis()
    entries = recent_dead_letters(client, count=count, reason=reason)
    total = dead_letter_count(client)
    if json_output:
        print_json({"total": total, "entries": [e.as_dict() for e in entries]})
        return
    if not entries:
        context.console.print(f"no dead letters{' matching ' + plain(repr(reason)) if reason else ''} ({total} in all)")
        return
    context.console.print(dead_letters_table(entries, f"dead letters: {len(entries)} shown of {total}",
                                               context.console.width))


@dead_letter_app.command("replay")
def replay(
    ctx: typer.Context,
    ids: Annotated[list[str] | None, typer.Option("--id", help="Dead letter id to replay (repeatable).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter (matching --reason).")] = False,
    reason: ReasonOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Act. Without it, only show what would be done.")] = False,
    include_invalid: Annotated[bool, typer.Option(
        "--include-invalid", help="Replay events that are still invalid too (judged with TACTICAL_MAX_EVENT_BYTES as "
        "set here: set the workers' value).")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Put dead letters back on synergy_events (--id ID ... or --all, optionally narrowed by --reason).

    Each one's original fields (the dead_* ones stripped) are re-added as a new entry and the dead letter removed,
    atomically per entry. An event that is still invalid stays (the worker would dead-letter it again and count it
    as an error), unless --include-invalid. Shows what it would do; acts only with --yes (audited).

    JSON keys: applied, planned, replayed {dead id: new entry id}, unreplayable, invalid {dead id: why}, skipped,
    audit_id."""
    if bool(ids) == all_:
        raise CtlError("choose the dead letters: --id ID (repeatable) or --all", ExitCode.UNKNOWN)
    context = get_context(ctx)
    client = context.redis()
    try:
        chosen = select_dead_letters(client, ids=ids or (), reason=reason)
    except KeyError as exc:
        raise CtlError(str(exc.args[0]), ExitCode.UNKNOWN) from None
    result = replay_dead_letters(client, chosen, actor=default_actor(), apply=yes, include_invalid=include_invalid,
                                 max_event_bytes=worker_settings().max_event_bytes)
    nothing_replayable = bool(chosen) and result.replayable == 0
    if json_output:
        print_json(result.as_dict())
        raise typer.Exit(int(ExitCode.WARNING if nothing_replayable else ExitCode.OK))
    console = context.console
    if not chosen:
        console.print("no dead letters match: nothing to replay")
        return
    console.print(dead_letters_table(chosen, "dead letters to replay", console.width))
    if result.unreplayable:
        console.print(f"cannot replay (no original fields left): {', '.join(result.unreplayable)}")
    if result.invalid:
        shown = list(result.invalid.items())[:5]
        console.print(f"left out, still invalid (the worker would dead-letter them again): {len(result.invalid)}; "
                      + "; ".join(f"{entry_id}: {plain(why)}" for entry_id, why in shown)
                      + (" …" if len(result.invalid) > len(shown) else "")
                      + " — fix the producer and send them again, or --include-invalid after raising the limit")
    if nothing_replayable:
        raise CtlError(f"nothing to replay: of {len(chosen)} dead letter(s), {len(result.unreplayable)} have no "
                       f"original fields left and {len(result.invalid)} are still invalid", ExitCode.WARNING)
    if not result.applied:
        console.print(f"dry run: nothing changed. Add --yes to replay {result.replayable} "
                      "dead letters to synergy_events.")
        return
    console.print(f"replayed {len(result.replayed)} dead letters to synergy_events; audit entry "
                  f"{result.audit_id or '-'}")
    if result.skipped:
        console.print(f"already gone (replayed by someone else meanwhile): {', '.join(result.skipped)}")


def register(app: typer.Typer) -> None:
    app.add_typer(dead_letter_app, name="dead-letter")
