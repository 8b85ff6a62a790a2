"""`tacticalctl alerts`: tail `tactical_alerts` — P0/P1/P2 alerts and the operator audit trail."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from typing import Annotated

import typer
from rich.console import Console, Group, RenderableType
from rich.table import Table

from tacticalctl.context import get_context, json_flag, print_json
from tacticalctl.errors import REDIS_UNREACHABLE, outage_message
from tacticalctl.formatting import markup_text, plain, timestamp
from worker.alerts import Alert, Severity, read_alerts, recent_alerts

_SEVERITY_STYLE = {"P0": "bold red", "P1": "yellow", "P2": "cyan", "AUDIT": "magenta"}
_SCAN = 5000
_POLL_S = 0.5
_RETRY_S = 1.0  # while Redis is unreachable


def _matching(alerts: Iterable[Alert], severities: set[str]) -> list[Alert]:
    return [a for a in alerts if not severities or a.severity in severities]


def _row(alert: Alert) -> tuple[str, ...]:
    style = _SEVERITY_STYLE.get(alert.severity, "white")
    return (plain(alert.id), timestamp(alert.ts), f"[{style}]{plain(alert.severity)}[/]", plain(alert.kind),
            plain(alert.source), plain(alert.message))


# Below this many columns a table squeezes the message to nothing: each alert is printed as two lines instead.
TABLE_MIN_WIDTH = 120


def _table(alerts: list[Alert], width: int) -> RenderableType:
    if width < TABLE_MIN_WIDTH:
        lines = []
        for alert in alerts:
            when, severity, kind, source, message = _row(alert)[1:]
            lines += [markup_text(f"{when} {severity} {kind} {source} · {plain(alert.id)}", overflow="fold"),
                      markup_text(f"    {message}", overflow="fold")]
        return Group(*lines)
    table = Table(expand=False)
    for column in ("id", "time (UTC)", "severity", "kind", "source"):
        table.add_column(column, no_wrap=True)
    table.add_column("message", overflow="fold")
    for alert in alerts:
        table.add_row(*_row(alert))
    return table


def alerts(
    ctx: typer.Context,
    count: Annotated[int, typer.Option(help="Show the latest this many.", min=1)] = 20,
    severity: Annotated[list[Severity] | None, typer.Option(
        help="Only these severities (repeatable): P0, P1, P2, AUDIT.", case_sensitive=False)] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new alerts until Ctrl-C.")] = False,
    duration: Annotated[float | None, typer.Option(help="With --follow: stop after this many seconds.",
                                                   min=0.0)] = None,
    json_output: Annotated[bool, json_flag("Print JSON (with --follow: one object per line).")]
    = False,
) -> None:
    """Tail tactical_alerts: the latest alerts and audit entries, oldest first; --follow for new ones.

    JSON keys: entries [{id, severity, kind, message, source, ts, ...extra fields such as actor}]; with --follow,
    one such object per line."""
    context = get_context(ctx)
    client = context.redis(ride_out_outage=follow)
    wanted = {s.value for s in severity or []}
    try:
        shown = _matching(recent_alerts(client, count=_SCAN if wanted else count), wanted)[-count:]
        latest = recent_alerts(client, count=1)
        last_id = latest[-1].id if latest else "0"
    except REDIS_UNREACHABLE as exc:  # only with --follow (else context.redis() said so): follow from now
        _say_outage(context.console, exc, json_output)
        shown, last_id = [], f"{int(time.time() * 1000)}-0"
    if json_output and not follow:
        print_json({"entries": [a.as_dict() for a in shown]})
        return
    console = context.console
    if json_output:
        for alert in shown:
            _write_line(alert)
    elif shown:
        console.print(_table(shown, console.width))
    elif not follow:
        console.print("no alerts" + (f" of severity {', '.join(sorted(wanted))}" if wanted else ""))
    if not follow:
        return
    started = time.monotonic()
    try:
        while duration is None or time.monotonic() - started < duration:
            try:
                new = read_alerts(client, count=500, since_id=last_id)
            except REDIS_UNREACHABLE as exc:  # follow through a Redis blip, as a watch does
                _say_outage(console, exc, json_output)
                time.sleep(_RETRY_S)
                continue
            if new:
                last_id = new[-1].id
            for alert in _matching(new, wanted):
                if json_output:
                    _write_line(alert)
                else:
                    console.print(" ".join(_row(alert)[1:]), highlight=False)
            if not new:
                time.sleep(_POLL_S)
    except KeyboardInterrupt:
        pass


def _say_outage(console: Console, exc: Exception, json_output: bool) -> None:
    message = outage_message(exc, _RETRY_S)
    if json_output:  # stdout stays one alert per line
        sys.stderr.write(f"tacticalctl: {message}\n")
    else:
        console.print(message, style="red")


def _write_line(alert: Alert) -> None:
    sys.stdout.write(json.dumps(alert.as_dict(), sort_keys=True) + "\n")
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command()(alerts)
