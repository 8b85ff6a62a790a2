"""`tacticalctl decision CID`: what the worker decided for one event and why, its command, or where the event is."""

from __future__ import annotations

import math
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tacticalctl.context import JsonOption, get_context, print_json
from tacticalctl.errors import ExitCode
from tacticalctl.formatting import make_console, plain
from worker.actions import ACTION_ORDER
from worker.aggregator import cut_decimals, shown_score
from worker.ops.decision_lookup import DEFAULT_SCAN, DecisionRecord, EventWhereabouts, find_event


def decision(
    ctx: typer.Context,
    correlation_id: Annotated[str, typer.Argument(help="The event's correlation_id.")],
    scan: Annotated[int, typer.Option(
        "--scan", min=1, help="Newest decisions and dead letters looked through when no completed key points at "
        "the decision (it expires after TACTICAL_COMPLETED_TTL_S, a day by default).")] = DEFAULT_SCAN,
    json_output: JsonOption = False,
) -> None:
    """What the worker decided for one event and why: the action and its score, each agent's probabilities and
    confidence, the weighted scores, the reason it did or did not execute, the model, the stage timings, and the
    execution command it sent. Otherwise where the event is: in flight (a worker holds its lease) or dead-lettered.

    The decision its completed key names is read directly; every decision of the id is also looked for among the
    newest --scan decisions (one decided again after its key expired names only the newest), the dead letters among
    the newest 10,000. (A correlation id that starts with `-`: `tacticalctl decision -- -abc`.)

    Exit 0 decided (or in flight), 1 not found (not decided yet, or older than what is kept and scanned) or
    dead-lettered, 2 Redis unreachable. More than one decision for one id (decided again after its completed key
    expired, or a duplicate) is shown, newest first, and exits 1.

    JSON keys: correlation_id, found, decisions [{decision_id, decided_at, event_id, latency_ms, synergy_type,
    direction, action, score, execute, reason, model_version, scores {short, hold, long}, votes {agent: [short, hold,
    long]}, confidences {agent}, timings_ms {stage}, command {command_id, side, quantity, price, …} | null,
    command_missing}], completed_key_entry, in_flight (owner|entry), dead_letters [{entry_id, dead_letter_id, reason,
    delivery_count}], decisions_scanned, scan_truncated, dead_letters_truncated, notes.
    """
    found = find_event(get_context(ctx).redis(), correlation_id, scan=scan)
    code = _exit_code(found)
    if json_output:
        print_json(found.as_dict())
    else:
        render(found, make_console())
    raise typer.Exit(int(code))


def _exit_code(found: EventWhereabouts) -> ExitCode:
    if len(found.decisions) == 1 and not found.dead_letters:
        return ExitCode.OK
    if not found.decisions and found.in_flight and not found.dead_letters:
        return ExitCode.OK
    return ExitCode.WARNING


def render(found: EventWhereabouts, console: Console) -> None:
    cid = plain(found.correlation_id)
    for record in found.decisions:
        _render_decision(record, console)
    if len(found.decisions) > 1:
        console.print(f"[yellow]{len(found.decisions)} decisions for {cid}[/]: decided again after its completed key "
                      "expired (a resend), or a duplicate — `tacticalctl duplicates`")
    for note in found.notes:
        console.print(f"[yellow]{plain(note)}[/]")
    if found.in_flight:
        owner, _, entry = found.in_flight.rpartition("|")
        console.print(f"in flight: {plain(owner)} holds its lease for entry {plain(entry)}")
    for letter in found.dead_letters:
        console.print(f"[red]dead-lettered[/]: entry {plain(letter['entry_id'])} after "
                      f"{plain(letter['delivery_count'])} deliveries: {plain(letter['reason'])} "
                      f"(`tacticalctl dead-letter list`)")
    if not found.found:
        where = (f"scanned the newest {found.decisions_scanned:,} decisions" + (" (more are kept: --scan)"
                 if found.scan_truncated else ""))
        console.print(f"no decision, lease or dead letter for {cid}: not decided yet (`tacticalctl pending`, "
                      f"`tacticalctl lag`), or older than its completed key and what is kept; {where}")


def _render_decision(record: DecisionRecord, console: Console) -> None:
    verdict = "[green]EXECUTED[/]" if record.execute else "[yellow]HOLD[/]"
    latency = "" if record.latency_ms is None else f", {record.latency_ms} ms after the event"
    console.print(f"[bold]{plain(record.correlation_id)}[/] — {verdict}: {plain(record.reason)}")
    console.print(f"decided {record.decided_at} (entry {record.decision_id}; event {plain(record.event_id or '?')}"
                  f"{latency}) by model {plain(record.model_version or '?')}")
    direction = {"1": "long", "-1": "short"}.get(record.direction, record.direction)
    score = "-" if record.score is None else shown_score(record.score)  # as its reason shows it
    console.print(f"{plain(record.synergy_type)}, direction {plain(direction)}; action {plain(record.action)}, "
                  f"score {score}")
    table = Table(expand=False)
    table.add_column("agent")
    for action in ACTION_ORDER:
        table.add_column(action, justify="right")
    table.add_column("confidence", justify="right")
    for agent, probabilities in record.votes.items():
        confidence = record.confidences.get(agent)
        table.add_row(agent, *(_cut(p) for p in probabilities), "-" if confidence is None else _cut(confidence))
    if record.scores:
        table.add_row("[bold]weighted[/]", *(_cut(record.scores.get(action)) for action in ACTION_ORDER), "")
    if record.votes or record.scores:
        console.print(table)
    else:
        console.print("[yellow]no votes or scores this tool can read in the entry[/]")
    if record.timings_ms:
        console.print("timings: " + ", ".join(f"{stage} {ms:.3f} ms" for stage, ms in record.timings_ms.items()))
    if record.command is not None:
        c = {name: plain(c) for name, c in record.command.fields.items()}
        missing = "?"
        console.print(f"command {record.command.command_id}: {c.get('side', missing)} {c.get('quantity', missing)} "
                      f"{c.get('symbol', missing)} @ {c.get('price', missing)} {c.get('order_type', missing)} "
                      f"{c.get('time_in_force', missing)}, stop {c.get('stop_loss', missing)}, "
                      f"take profit {c.get('take_profit', missing)}")
    elif record.command_missing:
        console.print("[red]executed, but no command for it was found near the decision in execution_commands[/] "
                      "(trimmed or deleted since)")


def _cut(value: float | None) -> str:
    # Cut, never rounded up: a weighted 0.64996 must not read 0.6500, as if it met the 0.65 bar.
    return "-" if value is None or not math.isfinite(value) else cut_decimals(max(value, 0.0), 4)


def register(app: typer.Typer) -> None:
    app.command("decision")(decision)
