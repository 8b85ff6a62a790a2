"""`tacticalctl breaker status | reset | history`: the circuit breaker, from Redis and from the worker's HTTP."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from tacticalctl.context import JsonOption, get_context, print_json, worker_settings
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import plain, timestamp
from worker.alerts import default_actor
from worker.breaker import RESET_REQUEST_TTL_S, BreakerState
from worker.ops.breaker_status import (
    BreakerOverview,
    breaker_history,
    breaker_state_from_http,
    read_breaker_overview,
    reset_breaker,
)
from worker.ops.worker_client import WorkerClient, WorkerUnreachable

breaker_app = typer.Typer(help="The circuit breaker: status, reset (while the worker runs), history.",
                          no_args_is_help=True)

_STYLE = {BreakerState.CLOSED: "green", BreakerState.HALF_OPEN: "yellow", BreakerState.OPEN: "bold red"}
_EXIT = {BreakerState.CLOSED: ExitCode.OK, BreakerState.HALF_OPEN: ExitCode.WARNING,
         BreakerState.OPEN: ExitCode.CRITICAL}


def _styled(state: BreakerState | None) -> str:
    if state is None:
        return "unknown"
    return f"[{_STYLE[state]}]{state.name.lower()}[/]"


def _http_view(worker_url: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return dict(WorkerClient(worker_url).state().get("circuit_breaker") or {}), None
    except WorkerUnreachable as exc:
        return None, str(exc)


def render_overview(overview: BreakerOverview) -> Table:
    table = Table(title=f"circuit breaker: {_styled(overview.state)}", expand=False)
    for column in ("source", "state", "failures", "opened (UTC)", "last reason", "updated (UTC)"):
        table.add_column(column, overflow="fold")
    for name, status in overview.published.items():
        table.add_row(f"worker {plain(name)} (Redis)", _styled(status.state), str(status.consecutive_failures),
                      timestamp(status.opened_at), plain(status.last_reason or "-"), timestamp(status.updated_at))
    if overview.http is not None:
        http = overview.http
        table.add_row("worker HTTP /health/state", _styled(breaker_state_from_http(http)),
                      plain(http.get("consecutive_failures", "-")), timestamp(http.get("opened_at")),
                      plain(http.get("last_reason") or "-"), "-")
    return table


@breaker_app.command("status")
def status(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """The published breaker of every worker with a live heartbeat (Redis), the worker's HTTP view, and restarts
    within the window.

    Exit 0 closed, 1 half-open — or closed with as many restarts in the window as the limit, so that the next worker
    start opens it (a limit of 0, a hold set on purpose, excepted) — 2 open, or when no worker is visible at all (no
    live worker has published its breaker, HTTP unreachable).

    JSON keys: state (closed|half_open|open|null), state_code, workers {consumer: {state, state_name,
    consecutive_failures, opened_at, last_reason, updated_at}}, http, http_error, restarts, restart_limit,
    restart_window_s, next_start_opens."""
    context = get_context(ctx)
    client = context.redis()
    http, http_error = _http_view(context.worker_url)
    overview = read_breaker_overview(client, http=http, http_error=http_error, settings=worker_settings())
    state = overview.state
    if json_output:
        print_json(overview.as_dict())
    elif state is not None:
        console = context.console
        console.print(render_overview(overview))
        if http_error:
            console.print(f"[yellow]HTTP view unavailable[/]: {plain(http_error)}")
        console.print(f"restarts in the last {overview.restart_window_s:g} s: {overview.restarts} "
                      f"(limit {overview.restart_limit})")
        if state is BreakerState.CLOSED and overview.next_start_opens:
            console.print(f"[yellow]at the restart limit[/]: the next worker start within "
                          f"{overview.restart_window_s:g} s opens the breaker (a crash restarted, a replica added); "
                          "find why workers restarted (`tacticalctl breaker history`), then `tacticalctl breaker "
                          "reset --yes` clears the count")
    if state is None:
        raise CtlError(
            f"no worker visible: no live worker has published its breaker to Redis and "
            f"{http_error or 'HTTP gave no state'}"
            f" ({overview.restarts} restarts in the last {overview.restart_window_s:g} s)",
            ExitCode.CRITICAL,
        )
    if state is BreakerState.CLOSED and overview.next_start_opens:
        raise typer.Exit(int(ExitCode.WARNING))
    raise typer.Exit(int(_EXIT[state]))


@breaker_app.command("reset")
def reset(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", help="Reset. Without it, only show what would be done.")] = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the running workers to honour it.", min=0)] = 3.0,
    json_output: JsonOption = False,
) -> None:
    """Close the breaker of every running worker (picked up within a second); clear the restart counter.

    Audited in tactical_alerts; prints the audit entry id. Shows what it would do; acts only with --yes.

    Exit 0 when every live worker honoured it within --wait, 1 when some had not yet.
    JSON keys: applied, request_id, audit_id, honoured_by, waiting_on, before (as `breaker status --json`)."""
    context = get_context(ctx)
    client = context.redis()
    http, http_error = _http_view(context.worker_url)
    before = read_breaker_overview(client, http=http, http_error=http_error, settings=worker_settings())
    if not yes:
        if json_output:
            print_json({"applied": False, "before": before.as_dict()})
        else:
            context.console.print(render_overview(before))
            context.console.print(
                f"dry run: would ask every running worker to close its breaker and clear the restart counter "
                f"({before.restarts} restarts in the window). Add --yes to reset."
            )
        return
    receipt = reset_breaker(client, actor=default_actor(), wait_s=wait)
    if json_output:
        print_json({"applied": True, **receipt.as_dict(), "before": before.as_dict()})
    else:
        console = context.console
        console.print(f"breaker reset requested (request {receipt.request_id}); audit entry {receipt.audit_id}")
        if receipt.honoured_by:
            console.print(f"honoured by: {plain(', '.join(receipt.honoured_by))}")
        if receipt.waiting_on:
            console.print(f"[yellow]not honoured within {wait:g}s[/] by: {plain(', '.join(receipt.waiting_on))} "
                          "(they pick it up when their loop next runs; check `tacticalctl breaker status`)")
        if not receipt.honoured_by and not receipt.waiting_on:
            console.print(f"no worker with a live heartbeat: one whose heartbeat lapsed (Redis refusing writes) "
                          f"honours the request if its loop runs within {RESET_REQUEST_TTL_S:g} s (check `tacticalctl "
                          "breaker status`); the next worker to start finds the restart counter cleared")
    if receipt.waiting_on:
        raise typer.Exit(int(ExitCode.WARNING))


@breaker_app.command("history")
def history(
    ctx: typer.Context,
    count: Annotated[int, typer.Option(help="Show the latest this many.", min=1)] = 20,
    json_output: JsonOption = False,
) -> None:
    """Breaker openings, half-opens, closings and resets from tactical_alerts, oldest first.

    JSON keys: entries [{id, severity, kind, message, source, ts, ...extra fields}]."""
    context = get_context(ctx)
    alerts = breaker_history(context.redis(), count=count)
    if json_output:
        print_json({"entries": [a.as_dict() for a in alerts]})
        return
    if not alerts:
        context.console.print("no breaker events in tactical_alerts")
        return
    table = Table(title="circuit breaker history", expand=False)
    for column in ("time (UTC)", "severity", "event", "source", "message"):
        table.add_column(column, overflow="fold")
    for alert in alerts:
        table.add_row(timestamp(alert.ts), *(plain(v) for v in (alert.severity, alert.kind, alert.source,
                                                                 alert.message)))
    context.console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(breaker_app, name="breaker")
