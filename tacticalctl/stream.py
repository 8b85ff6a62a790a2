"""`tacticalctl stream info`: XINFO STREAM / GROUPS / CONSUMERS as tables, with each consumer's liveness."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table

from tacticalctl.context import get_context, print_json
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import age, plain
from worker.names import INPUT_STREAM
from worker.ops.stream_info import StreamMissing, StreamOverview, read_stream_overview

stream_app = typer.Typer(help="Inspect a Redis stream: entries, consumer groups, consumers.", no_args_is_help=True)


def render_overview(overview: StreamOverview) -> RenderableType:
    summary = Table(title=f"stream {plain(overview.stream)}", show_header=False, expand=False)
    summary.add_column("field", style="bold")
    summary.add_column("value")
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

    groups = Table(title="consumer groups", expand=False)
    for column in ("group", "consumers", "pending", "last delivered", "entries read", "lag"):
        groups.add_column(column)
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
        consumers.add_column(column)
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
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """XINFO STREAM, GROUPS and CONSUMERS as tables, each consumer with its heartbeat liveness.

    A consumer with pending entries and no heartbeat is a dead worker's (move them with `tacticalctl pending claim`).

    JSON keys: stream, length, first_id, last_id, last_generated_id, entries_added, max_deleted_entry_id,
    groups (name, pending, last_delivered_id, entries_read, lag, consumers (name, pending, idle_ms, alive,
    last_beat)), live_without_group. Exit 3 when the stream does not exist."""
    context = get_context(ctx)
    try:
        overview = read_stream_overview(context.redis(), stream)
    except StreamMissing as exc:
        raise CtlError(str(exc), ExitCode.UNKNOWN) from None
    if json_output:
        print_json(overview.as_dict())
    else:
        context.console.print(render_overview(overview))


def register(app: typer.Typer) -> None:
    app.add_typer(stream_app, name="stream")
