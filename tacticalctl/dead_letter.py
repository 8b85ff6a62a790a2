"""`tacticalctl dead-letter list | show | replay | purge`: what was given up on, why, putting it back on
synergy_events, or removing it for good."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Annotated

import redis
import typer
from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tacticalctl.context import JsonOption, get_context, print_json, worker_settings
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import audit_not_written, make_console, markup_text, plain, these, timestamp
from worker.alerts import default_actor
from worker.names import DECISIONS_STREAM
from worker.ops.dead_letters import (
    DeadLetterEntry,
    DecisionScan,
    DecisionsGap,
    PurgeResult,
    ReplayResult,
    ScanProgress,
    dead_letter_count,
    purge_dead_letters,
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
            lines.append(markup_text(f"{plain(entry.id)}  {_when(entry.id)}  deliveries {deliveries}  original "
                                     f"{plain(entry.original_id or '-')}  correlation id "
                                     f"{plain(entry.correlation_id or '-')}", style="bold", overflow="fold"))
            lines.append(markup_text(f"    {plain(entry.reason)}", overflow="fold"))
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


@dead_letter_app.command("show")
def show(
    ctx: typer.Context,
    entry_id: Annotated[str, typer.Argument(help="The dead letter's id (from `dead-letter list`).")],
    json_output: JsonOption = False,
) -> None:
    """One dead letter in full: every field of the original event and the dead_* fields, values that are not text
    (the raw matrix) as their size. Exit 3 when there is no such dead letter.

    JSON keys: the keys of `list`'s entries, and fields {name: value as text}."""
    context = get_context(ctx)
    [entry] = _chosen(context.redis(), ids=[entry_id], reason=None)
    if json_output:
        print_json({**entry.as_dict(), "fields": entry.readable_fields()})
        return
    table = Table(title=f"dead letter {plain(entry.id)} ({_when(entry.id)} UTC)", expand=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in entry.readable_fields().items():
        table.add_row(plain(name), plain(value))
    context.console.print(table)


def _left_out_table(result: ReplayResult, left_out: dict[str, str]) -> Table:
    by_id = {e.id: e for e in result.planned}
    table = Table(title="left out (stay in synergy_events:dead)", expand=False)
    table.add_column("id", no_wrap=True)
    table.add_column("correlation id", overflow="fold", max_width=40)
    table.add_column("why", overflow="fold", min_width=30)
    for entry_id, why in left_out.items():
        table.add_row(plain(entry_id), plain(by_id[entry_id].correlation_id or "-"), plain(why))
    return table


def _chosen(client: redis.Redis, *, ids: Sequence[str], reason: str | None) -> list[DeadLetterEntry]:
    try:
        return select_dead_letters(client, ids=ids, reason=reason)
    except KeyError as exc:
        raise CtlError(str(exc.args[0]), ExitCode.UNKNOWN) from None


def _require_choice(ids: Sequence[str] | None, all_: bool) -> None:
    if bool(ids) == all_:
        raise CtlError("choose the dead letters: --id ID (repeatable) or --all", ExitCode.UNKNOWN)


@contextmanager
def _scan_progress(show: bool) -> Iterator[ScanProgress | None]:
    """How far the look for decisions has read tactical_decisions, drawn on stderr when it is a terminal and the scan
    runs past its first page (stdout stays clean; never with --json)."""
    console = make_console(stderr=True)
    if not show or not console.is_terminal:
        yield None
        return
    bar = Progress(TextColumn(f"reading {DECISIONS_STREAM}"), BarColumn(),
                   TextColumn("{task.fields[read]:,} decisions read, at {task.fields[at]} UTC"), TimeElapsedColumn(),
                   console=console, transient=True)
    task: list[TaskID] = []

    def update(scan: DecisionScan) -> None:
        if not task:  # the first page did not end the scan: from here on it is shown
            task.append(bar.add_task("scan", start=True, total=None, read=0, at="-"))
        bar.update(task[0], total=max(scan.end_ms - scan.start_ms, 1), completed=scan.at_ms - scan.start_ms,
                   read=scan.read, at=timestamp(scan.at_ms / 1000))
        if not bar.live.is_started:
            bar.start()

    try:
        yield update
    finally:
        bar.stop()


IdsOption = Annotated[list[str] | None, typer.Option("--id", help="Dead letter id (repeatable).")]
AllOption = Annotated[bool, typer.Option("--all", help="Every dead letter (matching --reason).")]
YesOption = Annotated[bool, typer.Option("--yes", help="Act. Without it, only show what would be done.")]


@dead_letter_app.command("replay")
def replay(
    ctx: typer.Context,
    ids: IdsOption = None,
    all_: AllOption = False,
    reason: ReasonOption = None,
    yes: YesOption = False,
    include_invalid: Annotated[bool, typer.Option(
        "--include-invalid", help="Replay events that are still invalid too (judged with TACTICAL_MAX_EVENT_BYTES as "
        "set here: set the workers' value).")
    ] = False,
    include_unconfirmed: Annotated[bool, typer.Option(
        "--include-unconfirmed", help="Replay too the dead letters not known to be undecided (no completed key, and "
        f"{DECISIONS_STREAM} trimmed past them, a decision after them deleted from it, or no {DECISIONS_STREAM} at "
        "all): if the producer sent one again, it is decided, and traded, a second time. Only once the producer has "
        "said which it did not send again.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Put dead letters back on synergy_events (--id ID ... or --all, optionally narrowed by --reason).

    Each one's original fields (the dead_* ones stripped) are re-added as a new entry and the dead letter removed,
    atomically per entry. An event that is still invalid stays (the worker would dead-letter it again and count it
    as an error), unless --include-invalid. So does one whose correlation id has been decided since (the producer
    sent it again: its completed key is there, or a decision with that correlation id in tactical_decisions after
    the dead-lettered entry): purge it. Where tactical_decisions has been trimmed past the dead-lettered entry, a
    decision made after it has been deleted from it (XDEL, told by Redis 7's max-deleted-entry-id; a Redis that does
    not tell counts as such), or it is not there at all (deleted, a Redis restored without it — or nothing decided
    yet: the two look alike), that cannot be known: such a dead letter stays too, listed as not known to be
    undecided, unless --include-unconfirmed. The look reads tactical_decisions from the earliest dead-lettered entry
    on, as far as it must (it says how many decisions it read; a progress bar on a terminal). Shows what it would
    do; acts only with --yes (audited). Exit 1 when none of those chosen can be replayed, or when any is left out
    as not known to be undecided (whether or not the others were replayed).

    JSON keys: applied, planned, replayed {dead id: new entry id}, unreplayable, invalid {dead id: why},
    decided {dead id: decision id}, unconfirmed {dead id: id tactical_decisions holds decisions from, null when
    there is no tactical_decisions} (left out), decisions_trimmed {the same, replayed with --include-unconfirmed},
    decisions_gap (why they are not known to be undecided: trimmed, deleted, unknown, missing; null when none is),
    decisions_read,
    skipped, audit_id."""
    _require_choice(ids, all_)
    context = get_context(ctx)
    client = context.redis()
    chosen = _chosen(client, ids=ids or (), reason=reason)
    with _scan_progress(show=not json_output) as progress:
        result = replay_dead_letters(client, chosen, actor=default_actor(), apply=yes, include_invalid=include_invalid,
                                     include_unconfirmed=include_unconfirmed, progress=progress,
                                     max_event_bytes=worker_settings().max_event_bytes)
    nothing_replayable = bool(chosen) and result.replayable == 0
    # Left out because a replay could decide them twice: the operator must settle them (exit 1, as a refusal is).
    attention = nothing_replayable or bool(result.unconfirmed)
    if json_output:
        print_json(result.as_dict())
        raise typer.Exit(int(ExitCode.WARNING if attention else ExitCode.OK))
    console = context.console
    if not chosen:
        console.print("no dead letters match: nothing to replay")
        return
    to_replay, left_out = result.to_replay(), result.left_out()
    if to_replay:
        console.print(dead_letters_table(to_replay, "dead letters to replay", console.width))
    if left_out:
        console.print(_left_out_table(result, left_out))
    if result.decisions_read:
        console.print(f"looked for their correlation ids in {DECISIONS_STREAM}: read {result.decisions_read:,} "
                      "decisions")
    if result.invalid:
        console.print("still invalid: the worker would dead-letter them again — fix the producer and send them again, "
                      "or --include-invalid after raising the limit")
    if result.decided:
        console.print("decided since (sent again): a replay would be acked as a duplicate, or decided a second time "
                      "once its completed key is gone — `tacticalctl dead-letter purge --id <id> --yes` once you have "
                      "what you need of them")
    if result.unconfirmed:
        console.print(f"[yellow]not known to be undecided: {len(result.unconfirmed)} left out[/] — no completed key, "
                      f"and {_gap(result.decisions_gap)}: {_kept_from(result.unconfirmed, result.decisions_gap)}. "
                      "Ask the producer whether it sent them again: purge those it did, then replay the others with "
                      "--include-unconfirmed.")
    if result.decisions_trimmed:
        done = "replayed" if result.applied else "to be replayed"
        console.print(f"[yellow]not known to be undecided: {len(result.decisions_trimmed)}[/], {done} as "
                      f"--include-unconfirmed asks — {_gap(result.decisions_gap)}: "
                      f"{_kept_from(result.decisions_trimmed, result.decisions_gap)}.")
    if nothing_replayable:
        raise CtlError(f"nothing to replay: of {len(chosen)} dead letter(s), {len(result.unreplayable)} have no "
                       f"original fields left, {len(result.invalid)} are still invalid, {len(result.decided)} "
                       f"were decided since and {len(result.unconfirmed)} are not known to be undecided",
                       ExitCode.WARNING)
    if not result.applied:
        console.print(f"dry run: nothing changed. Add --yes to replay {result.replayable} "
                      "dead letters to synergy_events.")
    else:
        console.print(f"replayed {len(result.replayed)} dead letters to synergy_events; audit entry "
                      f"{result.audit_id or '-'}")
        if result.skipped:
            console.print(f"already gone (replayed by someone else meanwhile): {', '.join(result.skipped)}")
    if attention:
        raise typer.Exit(int(ExitCode.WARNING))


def _gap(gap: DecisionsGap | None) -> str:
    """Why tactical_decisions cannot tell whether a resend of these dead letters was decided."""
    if gap is DecisionsGap.MISSING:
        return (f"there is no {DECISIONS_STREAM} to look in: deleted, or a Redis restored without it, and a "
                "resend's decision gone with it (a Redis on which nothing has been decided yet has none either: "
                "there, no resend was decided)")
    if gap is DecisionsGap.DELETED:
        return (f"a decision made after the dead-lettered entry has been deleted from {DECISIONS_STREAM} (XDEL), "
                "and it may have been a resend's")
    if gap is DecisionsGap.UNKNOWN:
        return (f"this Redis does not say what was removed from {DECISIONS_STREAM} (XINFO STREAM without "
                "entries-added and max-deleted-entry-id: before Redis 7.0), so a resend's decision may be gone")
    return (f"{DECISIONS_STREAM} has been trimmed past the dead-lettered entry, so a decision of a resend may be gone "
            "with it")


def _kept_from(letters: Mapping[str, str | None], gap: DecisionsGap | None) -> str:
    shown = list(letters.items())[:5]
    whole_from = gap in (DecisionsGap.TRIMMED, DecisionsGap.DELETED)  # else no id it is known whole from
    return ("; ".join(f"{plain(entry_id)} (every decision kept only from {_when(kept)})" if whole_from and kept
                      else plain(entry_id) for entry_id, kept in shown)
            + (" …" if len(letters) > len(shown) else ""))


@dead_letter_app.command("purge")
def purge(
    ctx: typer.Context,
    ids: IdsOption = None,
    all_: AllOption = False,
    reason: ReasonOption = None,
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """Remove dead letters for good (--id ID ... or --all, optionally narrowed by --reason): those settled another
    way — the producer sent a corrected event, or the event is not wanted. Replay what should still be decided
    (`dead-letter replay`). Shows what it would remove; acts only with --yes, audited in tactical_alerts with the
    count and the first 50 ids, correlation ids and reasons (save `dead-letter list --json` first to keep them all).

    JSON keys: applied, planned, removed [ids], skipped (gone meanwhile), audit_id, audit_error. Exit 1 when letters
    were removed but Redis refused their audit entry (at maxmemory)."""
    _require_choice(ids, all_)
    context = get_context(ctx)
    client = context.redis()
    chosen = _chosen(client, ids=ids or (), reason=reason)
    result = purge_dead_letters(client, chosen, actor=default_actor(), apply=yes)
    if json_output:
        print_json(result.as_dict())
    else:
        _print_purge(context.console, chosen, result)
    if result.audit_error:
        raise typer.Exit(int(ExitCode.WARNING))


def _print_purge(console: Console, chosen: Sequence[DeadLetterEntry], result: PurgeResult) -> None:
    if not chosen:
        console.print("no dead letters match: nothing to purge")
        return
    console.print(dead_letters_table(chosen, "dead letters to purge", console.width))
    if not result.applied:
        console.print(f"dry run: nothing changed. Add --yes to remove "
                      f"{these(len(chosen), 'dead letter', 'dead letters')} for good.")
        return
    console.print(f"purged {len(result.removed)} dead letters; audit entry {result.audit_id or '-'}")
    if result.audit_error:
        console.print(audit_not_written(result.audit_error, "purge"))
    if result.skipped:
        console.print(f"already gone (replayed or purged by someone else meanwhile): {', '.join(result.skipped)}")


def register(app: typer.Typer) -> None:
    app.add_typer(dead_letter_app, name="dead-letter")
