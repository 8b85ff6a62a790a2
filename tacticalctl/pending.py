"""`tacticalctl pending`: entries delivered but not acknowledged — inspect, claim to a live consumer, dead-letter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tacticalctl.context import JsonOption, get_context, print_json
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import age, audit_not_written, plain
from worker.alerts import default_actor
from worker.heartbeat import live_consumers
from worker.ops.pending import (
    ConsumerNotLive,
    PendingEntry,
    PendingMove,
    PendingUnavailable,
    claim_stuck_entries,
    dead_letter_stuck_entries,
    read_pending_entries,
    read_pending_summary,
    reclaim_advice,
)

pending_app = typer.Typer()

YesOption = Annotated[bool, typer.Option("--yes", help="Act. Without it, only show what would be done.")]
DEFAULT_STUCK_IDLE_MS = 60_000
MAX_ENTRIES = 1_000_000  # more than one listing is read for; a bound Redis accepts (1e20 is refused)


def _unavailable(exc: PendingUnavailable) -> CtlError:
    return CtlError(str(exc), ExitCode.UNKNOWN)


def _liveness(name: str, live: set[str]) -> str:
    return f"{plain(name)} [green](alive)[/]" if name in live else f"{plain(name)} [bold red](no heartbeat)[/]"


def entries_table(entries: Sequence[PendingEntry], live: set[str], title: str) -> Table:
    table = Table(title=title, expand=False)
    for column in ("entry id", "consumer", "idle", "deliveries"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(entry.entry_id, _liveness(entry.consumer, live), age(entry.idle_ms / 1000),
                      str(entry.times_delivered))
    return table


@pending_app.callback(invoke_without_command=True)
def pending(
    ctx: typer.Context,
    extended: Annotated[bool, typer.Option("--extended", help="List the entries, with idle time and deliveries.")]
    = False,
    idle: Annotated[int, typer.Option("--idle", help="With --extended: only entries idle at least MS ms.", min=0)]
    = 0,
    consumer: Annotated[str | None, typer.Option(help="With --extended: only this consumer's entries.")] = None,
    count: Annotated[int, typer.Option(help="With --extended: at most this many entries.", min=1,
                                          max=MAX_ENTRIES)] = 100,
    json_output: JsonOption = False,
) -> None:
    """Entries delivered to tactical_group but not acknowledged (XPENDING); claim or dead-letter stuck ones.

    The summary: how many wait, their id range, who holds them (and whether that consumer is alive).
    --extended lists the entries, oldest first, with their delivery counts.

    JSON keys (summary): count, min_id, max_id, consumers {name: pending}, live_consumers.
    JSON keys (--extended): entries [{id, consumer, idle_ms, times_delivered}], live_consumers."""
    if ctx.invoked_subcommand is not None:
        return
    context = get_context(ctx)
    client = context.redis()
    live = set(live_consumers(client))
    try:
        if extended or idle or consumer:
            entries = read_pending_entries(client, min_idle_ms=idle, consumer=consumer, count=count)
            if json_output:
                print_json({"entries": [e.as_dict() for e in entries], "live_consumers": sorted(live)})
                return
            if not entries:  # said as the summary says it, not as an empty table
                narrowed = (f" idle ≥ {idle} ms" if idle else "") + (f" of {plain(consumer)}" if consumer else "")
                context.console.print(f"no pending entries{narrowed}" if narrowed else
                                      "no pending entries: everything delivered has been acknowledged")
                return
            context.console.print(entries_table(entries, live, f"pending entries idle ≥ {idle} ms"))
            if len(entries) >= count:
                context.console.print(f"showing the first {count}; raise --count for more")
            return
        summary = read_pending_summary(client)
    except PendingUnavailable as exc:
        raise _unavailable(exc) from None
    if json_output:
        print_json({**summary.as_dict(), "live_consumers": sorted(live)})
        return
    console = context.console
    if summary.count == 0:
        console.print("no pending entries: everything delivered has been acknowledged")
        return
    console.print(f"{summary.count} pending entries, ids {summary.min_id} … {summary.max_id}")
    table = Table(expand=False)
    table.add_column("consumer", overflow="fold")
    table.add_column("pending", justify="right")
    for name, pending_count in summary.consumers.items():
        table.add_row(_liveness(name, live), str(pending_count))
    console.print(table)
    orphaned = sum(n for name, n in summary.consumers.items() if name not in live)
    if orphaned:  # a dead (or stopped) worker's entries: who takes them, and what an operator can do
        console.print(f"{orphaned} held by consumers without a heartbeat: {reclaim_advice(worker_live=bool(live))}"
                      "; idle times: `tacticalctl pending --extended`", highlight=False)


def _report(move: PendingMove, verb: str, json_output: bool, ctx: typer.Context, live: set[str]) -> None:
    """The move as a table (or JSON); exit 1 when entries moved but Redis refused their audit entry."""
    if json_output:
        print_json(move.as_dict())
    else:
        _print_move(move, verb, get_context(ctx).console, live)
    if move.audit_error:
        raise typer.Exit(int(ExitCode.WARNING))


def _print_move(move: PendingMove, verb: str, console: Console, live: set[str]) -> None:
    if not move.planned:
        console.print(f"no pending entries idle ≥ {move.details.get('min_idle_ms')} ms: nothing to {plain(verb)}")
        return
    console.print(entries_table(move.planned, live, f"stuck entries to {plain(verb)}"))
    if not move.applied:
        console.print(f"dry run: nothing changed. Add --yes to {plain(verb)} these {len(move.planned)} entries.")
        return
    console.print(f"{plain(verb)}: {len(move.moved)} entries moved; audit entry {move.audit_id or '-'}")
    if move.audit_error:
        console.print(audit_not_written(move.audit_error, "move"))
    if move.skipped:
        console.print(f"left alone (acknowledged or picked up meanwhile): {', '.join(move.skipped)}")
    if move.gone:
        console.print(f"[yellow]not claimed, their data gone from the stream (deleted or trimmed)[/]: "
                      f"{', '.join(move.gone)}; they stay pending where they were: `tacticalctl pending dead-letter` "
                      "keeps a record of each (a worker's reclaim drops them from the group)")


@pending_app.command("claim")
def claim(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="Live consumer to hand the entries to (must have a heartbeat).")],
    idle: Annotated[int, typer.Option("--idle", help="Only entries idle at least MS ms.", min=0)]
    = DEFAULT_STUCK_IDLE_MS,
    from_consumer: Annotated[str | None, typer.Option("--from", help="Only this consumer's entries.")] = None,
    count: Annotated[int, typer.Option(help="At most this many entries.", min=1, max=MAX_ENTRIES)] = 100,
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """Hand stuck entries (idle ≥ --idle) to a live consumer (XCLAIM), which then decides them.

    Refused when --to has no live heartbeat. The entries keep their idle time (XCLAIM would set it to 0, and they
    would wait another TACTICAL_CLAIM_MIN_IDLE_MS): a worker's reclaim, every TACTICAL_CLAIM_INTERVAL_MS, takes what
    is idle past that, so they are decided at the next pass. Shows what it would do; acts only with --yes (audited
    in tactical_alerts).

    An entry whose data is gone from the stream (deleted, trimmed) is not claimed (Redis would drop it from the group
    unrecorded): it is listed under `gone`, left pending where it was; `pending dead-letter` keeps a record of it.

    JSON keys: action, applied, planned [{id, consumer, idle_ms, times_delivered}], moved, skipped, gone, audit_id,
    audit_error, to_consumer, min_idle_ms. Exit 1 when entries moved but Redis refused their audit entry (at
    maxmemory)."""
    context = get_context(ctx)
    client = context.redis()
    try:
        move = claim_stuck_entries(
            client, to_consumer=to, min_idle_ms=idle, actor=default_actor(), apply=yes, from_consumer=from_consumer,
            count=count,
        )
    except ConsumerNotLive as exc:
        raise CtlError(str(exc), ExitCode.UNKNOWN) from None
    except PendingUnavailable as exc:
        raise _unavailable(exc) from None
    _report(move, f"claim to {to}", json_output, ctx, set(live_consumers(client)))


@pending_app.command("dead-letter")
def dead_letter(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option(help="Why these entries are given up on (kept with each dead letter).")],
    idle: Annotated[int, typer.Option("--idle", help="Only entries idle at least MS ms.", min=0)]
    = DEFAULT_STUCK_IDLE_MS,
    consumer: Annotated[str | None, typer.Option(help="Only this consumer's entries.")] = None,
    count: Annotated[int, typer.Option(help="At most this many entries.", min=1, max=MAX_ENTRIES)] = 100,
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """Move stuck entries (idle ≥ --idle) to synergy_events:dead with a --reason; never a silent deletion.

    Original fields are kept; each entry is copied and acknowledged in one atomic step. Replay them later with
    `tacticalctl dead-letter replay`. Shows what it would do; acts only with --yes (audited).

    JSON keys: action, applied, planned, moved, skipped, audit_id, audit_error, reason, min_idle_ms. Exit 1 when
    entries moved but Redis refused their audit entry (at maxmemory)."""
    if not reason.strip():
        raise CtlError("--reason must say why the entries are given up on", ExitCode.UNKNOWN)
    context = get_context(ctx)
    client = context.redis()
    try:
        move = dead_letter_stuck_entries(
            client, reason=reason, min_idle_ms=idle, actor=default_actor(), apply=yes, consumer=consumer, count=count
        )
    except PendingUnavailable as exc:
        raise _unavailable(exc) from None
    _report(move, "dead-letter", json_output, ctx, set(live_consumers(client)))


def register(app: typer.Typer) -> None:
    app.add_typer(pending_app, name="pending")
