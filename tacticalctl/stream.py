"""`tacticalctl stream info | trim | prune-consumers`: XINFO STREAM / GROUPS / CONSUMERS as tables, with each
consumer's liveness; trimming the entries older than an age that no consumer group still needs; removing the names
dead workers left in the group."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console, Group, RenderableType
from rich.table import Table

from tacticalctl.context import JsonOption, get_context, print_json
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import age, audit_not_written, parse_duration, plain, these, timestamp
from worker.alerts import default_actor
from worker.names import CONSUMER_GROUP, INPUT_STREAM
from worker.ops.consumer_prune import ConsumerPrune, prune_consumers
from worker.ops.stream_info import StreamMissing, StreamOverview, read_stream_overview, streams_of_another_type
from worker.ops.stream_trim import (
    TRIMMED_STREAMS,
    StreamTrimError,
    StreamTrimPlan,
    StreamTrimResult,
    plan_trim,
    trim_streams,
)
from worker.stream_entries import entry_time_ms

stream_app = typer.Typer(help="Inspect a Redis stream: entries, consumer groups, consumers.", no_args_is_help=True)


def render_overview(overview: StreamOverview) -> RenderableType:
    summary = Table(title=f"stream {plain(overview.stream)}", show_header=False, expand=False)
    summary.add_column("field", style="bold", overflow="fold")
    summary.add_column("value", overflow="fold")
    for label, value in (
        ("length", str(overview.length)),
        ("entries added", "unknown" if overview.entries_added is None else str(overview.entries_added)),
        ("first entry", overview.first_id or "-"),
        ("last entry", overview.last_id or "-"),
        ("last generated id", overview.last_generated_id),
        ("max deleted id", overview.max_deleted_entry_id or "-"),
        ("groups", str(len(overview.groups))),
    ):
        summary.add_row(label, plain(value))

    groups = Table(title="consumer groups", expand=False,
                   caption="lag: Redis's figure, high after a restart until the group catches up; `tacticalctl lag` "
                   "counts")
    for column in ("group", "consumers", "pending", "last delivered", "entries read", "lag"):
        groups.add_column(column, overflow="fold")
    for group in overview.groups:
        groups.add_row(
            plain(group.name),
            str(len(group.consumers)),
            str(group.pending),
            group.last_delivered_id,
            "unknown" if group.entries_read is None else str(group.entries_read),
            "unknown" if group.lag is None else str(group.lag),
        )

    consumers = Table(title="consumers", expand=False)
    for column in ("group", "consumer", "pending", "idle", "heartbeat"):
        consumers.add_column(column, overflow="fold")
    for group in overview.groups:
        for consumer in group.consumers:
            beat = "[green]alive[/]" if consumer.alive else "[bold red]no heartbeat[/]"
            consumers.add_row(plain(group.name), plain(consumer.name), str(consumer.pending),
                              age(consumer.idle_ms / 1000), beat)
    for name in overview.live_without_group:
        consumers.add_row("-", plain(name), "0", "-", "[green]alive[/] (has not read yet)")
    return Group(summary, groups, consumers)


@stream_app.command("info")
def info(
    ctx: typer.Context,
    stream: Annotated[str, typer.Option(help="Stream to inspect.")] = INPUT_STREAM,
    json_output: JsonOption = False,
) -> None:
    """XINFO STREAM, GROUPS and CONSUMERS as tables, each consumer with its heartbeat liveness.

    A consumer with pending entries and no heartbeat is a dead worker's (move them with `tacticalctl pending claim`).
    Any of the system's five streams whose name holds a key of another type (where a WRONGTYPE refusal comes from)
    is named, and makes the exit 1.

    JSON keys: stream, length, first_id, last_id, last_generated_id, entries_added, max_deleted_entry_id,
    groups (name, pending, last_delivered_id, entries_read, lag, consumers (name, pending, idle_ms, alive,
    last_beat)), live_without_group, not_streams ({name: type}). Exit 3 when the stream does not exist."""
    context = get_context(ctx)
    client = context.redis()
    not_streams = {name: kind for name, kind in streams_of_another_type(client).items() if name != stream}
    try:
        overview = read_stream_overview(client, stream)
    except StreamMissing as exc:
        raise CtlError(str(exc), ExitCode.UNKNOWN) from None
    if json_output:
        print_json({**overview.as_dict(), "not_streams": not_streams})
    else:
        context.console.print(render_overview(overview))
    if not_streams:
        named = ", ".join(f"{name} is a {kind}" for name, kind in not_streams.items())
        raise CtlError(f"warning: {named}, not a stream: the worker cannot write there (its commits are refused, "
                       "WRONGTYPE); move the key aside (RENAME) and `tacticalctl breaker reset`", ExitCode.WARNING)


@stream_app.command("trim")
def trim(
    ctx: typer.Context,
    older_than: Annotated[str, typer.Option(help="Entries older than this go (e.g. 24h, 7d).")] = "24h",
    stream: Annotated[list[str] | None, typer.Option(
        help=f"A stream to trim; repeat for several. Default: {', '.join(TRIMMED_STREAMS)}.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Trim. Without it, only show what would go.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Trim the input, decision and command streams of entries older than --older-than, keeping every entry a
    consumer group still needs: its pending ones (being decided, or a dead worker's to reclaim) and those it has not
    read yet. A reader without a group is not seen: pick an age longer than it lags. Dead letters and the alert
    history are not trimmed here.

    Shows what it would do; acts only with --yes (audited in tactical_alerts), a bounded XTRIM at a time so Redis is
    never held for long.

    A dry run counts what would go, reading at most 10,000 entries from each end of a stream; past that its count is a
    lower bound (≥).

    JSON keys: older_than_s, streams (stream, length, first_id, cutoff_id, cutoff_reason, removes_any, would_remove,
    would_remove_exact), applied, removed (per stream), audit_id, audit_error. Exit 1 when the entries were removed but
    Redis refused the audit entry (at maxmemory it takes XTRIM, not XADD), 3 for an age or stream it cannot use."""
    try:
        older_than_s = parse_duration(older_than)
        context = get_context(ctx)
        client = context.redis()
        plans = plan_trim(client, older_than_s, stream or TRIMMED_STREAMS)
    except (ValueError, StreamTrimError) as exc:
        raise CtlError(f"--older-than/--stream: {exc}", ExitCode.UNKNOWN) from None
    result = trim_streams(client, plans, older_than_s=older_than_s, actor=default_actor(), apply=yes)
    if json_output:
        print_json(result.as_dict())
    else:
        context.console.print(render_trim(result, older_than))
        if not any(plan.removes_any for plan in result.plans):
            context.console.print(f"nothing to trim: no entry older than {older_than} that no group needs")
        elif not result.applied:
            context.console.print(f"dry run: would remove {_would_remove(result.plans)} entries; nothing removed. "
                                  "Add --yes to trim.")
        else:
            context.console.print(f"removed {sum(result.removed.values())} entries; audit entry "
                                  f"{result.audit_id or '-'}")
            if result.audit_error:
                context.console.print(audit_not_written(result.audit_error, "trim"))
    if result.audit_error:
        raise typer.Exit(int(ExitCode.WARNING))


def render_trim(result: StreamTrimResult, older_than: str) -> Table:
    table = Table(title=f"entries older than {plain(older_than)} that no consumer group needs", expand=False)
    last = "removed" if result.applied else "would remove"
    for column in ("stream", "length before", "oldest entry (UTC)", "trimmed before (UTC)", "cutoff set by", last):
        table.add_column(column, overflow="fold")
    for plan in result.plans:
        oldest = "-" if plan.first_id is None else timestamp(entry_time_ms(plan.first_id) / 1000)
        cutoff = timestamp(entry_time_ms(plan.cutoff_id) / 1000)
        removed = str(result.removed.get(plan.stream, 0)) if result.applied else _would_remove([plan])
        table.add_row(plain(plan.stream), str(plan.length), oldest, f"{cutoff} ({plan.cutoff_id})",
                      plain(plan.cutoff_reason), removed)
    return table


def _would_remove(plans: Sequence[StreamTrimPlan]) -> str:
    """What the plans would remove: a number, or `≥ n` when a count stopped at its limit."""
    total = sum(plan.would_remove for plan in plans)
    return f"{total}" if all(plan.would_remove_exact for plan in plans) else f"≥ {total}"


@stream_app.command("prune-consumers")
def prune_consumers_command(
    ctx: typer.Context,
    idle: Annotated[str, typer.Option(help="Only consumers idle at least this long (e.g. 10m, 1h).")] = "10m",
    yes: Annotated[bool, typer.Option("--yes", help="Remove them. Without it, only show which.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Remove the consumer names dead workers left in tactical_group: those with nothing pending, no live
    heartbeat and idle at least --idle. A name with pending entries is never removed (Redis would drop its entries
    with it): move them first with `tacticalctl pending claim`. Each name is checked and removed atomically; acts
    only with --yes (audited in tactical_alerts).

    JSON keys: applied, min_idle_s, planned (name, pending, idle_ms, alive, last_beat), removed, audit_id,
    audit_error. Exit 1 when names were removed but Redis refused the audit entry (at maxmemory), 3 for a duration it
    cannot read or a missing stream."""
    try:
        min_idle_s = parse_duration(idle)
    except ValueError as exc:
        raise CtlError(f"--idle: {exc}", ExitCode.UNKNOWN) from None
    context = get_context(ctx)
    try:
        result = prune_consumers(context.redis(), actor=default_actor(), apply=yes, min_idle_s=min_idle_s)
    except StreamMissing as exc:
        raise CtlError(str(exc), ExitCode.UNKNOWN) from None
    if json_output:
        print_json(result.as_dict())
    else:
        _print_prune(context.console, result, idle)
    if result.audit_error:
        raise typer.Exit(int(ExitCode.WARNING))


def _print_prune(console: Console, result: ConsumerPrune, idle: str) -> None:
    if not result.planned:
        console.print(f"no consumer to remove: none without pending entries and heartbeat, idle {plain(idle)} or more")
        return
    table = Table(title=f"consumers of {CONSUMER_GROUP} with nothing pending, no heartbeat, idle ≥ {plain(idle)}",
                  expand=False)
    for column in ("consumer", "idle"):
        table.add_column(column, overflow="fold")
    for consumer in result.planned:
        table.add_row(plain(consumer.name), age(consumer.idle_ms / 1000))
    console.print(table)
    if not result.applied:
        console.print(f"dry run: nothing removed. Add --yes to remove {these(len(result.planned), 'name', 'names')}.")
        return
    console.print(f"removed {len(result.removed)} consumers; audit entry {result.audit_id or '-'}")
    if result.audit_error:
        console.print(audit_not_written(result.audit_error, "removal"))
    if result.kept:
        console.print(f"kept (entries became pending on them meanwhile): {', '.join(plain(n) for n in result.kept)}")


def register(app: typer.Typer) -> None:
    app.add_typer(stream_app, name="stream")
