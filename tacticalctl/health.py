"""`tacticalctl health` and `health state`: the worker's own view of itself, over HTTP (`health --all`: every live
worker's, `health_fleet`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tacticalctl.context import CtlContext, JsonOption, get_context, print_json
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import age, exit_code_for, markup_text, number, plain, styled, timestamp
from tacticalctl.health_fleet import show_fleet_health
from tacticalctl.watch import watch
from worker.health import CheckStatus
from worker.ops.worker_client import WorkerClient, WorkerUnreachable, health_level

health_app = typer.Typer()

_STATE_STYLE = {0: "green", 1: "yellow", 2: "bold red", 3: "bold red"}
_BREAKER_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red"}


def worker_client(context: CtlContext) -> WorkerClient:
    return WorkerClient(context.worker_url)


def _unreachable(exc: WorkerUnreachable) -> CtlError:
    return CtlError(f"{exc} — is a worker running there? `tacticalctl triage worker-down`", ExitCode.CRITICAL)


@health_app.callback(invoke_without_command=True)
def health(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option(
        "--all", help="Every live worker's /health, each at the endpoint its heartbeat names (not --worker-url).")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """The worker's health: GET /health (details: `health state`); --all: every live worker's.

    Exit 0 healthy, 1 degraded, 2 critical, failed or unreachable.
    JSON keys: url, http_status, status (pass|warn|fail), state, state_code, consumer, version (the worker's
    release), commit (the commit it runs, -dirty with local changes; null: unknown), model_version, uptime_s,
    check (ok|warn|critical).

    --all: one row per worker with a live heartbeat; exit the worst of them. A live worker not read (no answer at
    the endpoint its heartbeat names, or another worker's) is critical; one whose heartbeat names no endpoint yet is
    starting: shown, not judged (only starting ones: 1). No live worker: 2. JSON: {"workers": [{consumer, host, pid,
    url, http_status, state, state_code, model_version, check (ok|warn|critical; null: starting), error (why not
    read)}], "status" (ok|warn|critical)}."""
    if ctx.invoked_subcommand is not None:
        if all_:
            command = f"health {ctx.invoked_subcommand}"
            raise CtlError(f"`{command}` reads one worker, --all every one: `tacticalctl --worker-url <url> {command}` "
                           "for each", ExitCode.UNKNOWN)
        return
    context = get_context(ctx)
    if all_:
        show_fleet_health(context, json_output=json_output)
    client = worker_client(context)
    try:
        http_status, body = client.health()
    except WorkerUnreachable as exc:
        raise _unreachable(exc) from None
    level = health_level(http_status, body)
    if json_output:
        print_json({
            "url": client.base_url,
            "http_status": http_status,
            "status": body.get("status"),
            "state": body.get("state"),
            "state_code": body.get("state_code"),
            "consumer": body.get("consumer"),
            "version": body.get("version"),
            "commit": body.get("commit"),
            "model_version": body.get("model_version"),
            "uptime_s": body.get("uptime_s"),
            "check": level.value,
        })
    else:
        state = body.get("state") or body.get("error") or "unknown"
        context.console.print(
            f"{styled(level, str(state))} (state {plain(body.get('state_code', '?'))}, HTTP {http_status}) — "
            f"consumer {plain(body.get('consumer') or '-')}, release {plain(body.get('version') or '-')} "
            f"(commit {plain(body.get('commit') or 'unknown')}), "
            f"model {plain(body.get('model_version') or '-')}, "
            f"up {age(body.get('uptime_s'))}"
        )
        if level is not CheckStatus.OK:  # /health names no reason: say where it is
            context.console.print("why, or the recovery under way: `tacticalctl health state`", highlight=False)
    raise typer.Exit(int(exit_code_for(level)))


def _checks_table(checks: list[dict[str, Any]]) -> Table:
    table = Table(title="health checks", expand=False)
    for column in ("check", "status", "value", "threshold", "message"):
        table.add_column(column, overflow="fold")
    for check in checks:
        status = str(check.get("status", "?"))
        table.add_row(
            Text(str(check.get("name", "?"))),
            styled(status),
            number(check.get("value"), "{:.4g}"),
            number(check.get("threshold"), "{:g}"),
            Text(str(check.get("message", ""))),
        )
    return table


def _transitions_table(transitions: list[dict[str, Any]]) -> Table:
    table = Table(title="recent transitions", expand=False)
    for column in ("at (UTC)", "from → to", "reason", "actions"):
        table.add_column(column, overflow="fold")
    for move in transitions[-10:]:
        actions = move.get("actions") or []
        table.add_row(
            timestamp(move.get("at")),
            Text(f"{move.get('from', '?')} → {move.get('to', '?')}"),
            Text(str(move.get("reason", ""))),
            Text(", ".join(str(a) for a in actions) or "-"),
        )
    if not transitions:
        table.add_row("-", "none since the worker started", "", "")
    return table


def _breaker_line(breaker: dict[str, Any]) -> str:
    name = str(breaker.get("state", "unknown"))
    style = _BREAKER_STYLE.get(name, "white")
    parts = [
        f"circuit breaker [{style}]{plain(name)}[/]",
        f"consecutive failures {number(breaker.get('consecutive_failures'))}",
        f"restarts {number(breaker.get('restart_count'))}/{number(breaker.get('restart_limit'))}",
    ]
    if breaker.get("opened_at"):
        parts.append(f"opened {timestamp(breaker.get('opened_at'))}")
    if breaker.get("last_reason"):
        parts.append(f"last reason: {plain(breaker['last_reason'])}")
    return " · ".join(parts)


def render_state(doc: dict[str, Any]) -> RenderableType:
    code = doc.get("state_code")
    style = _STATE_STYLE.get(code if isinstance(code, int) else -1, "white")
    model = doc.get("model") or {}
    lag = doc.get("lag") or {}
    window = doc.get("window") or {}
    lines = [
        f"[{style}]{plain(doc.get('state', 'unknown'))}[/] (state {number(code)}) since "
        f"{timestamp(doc.get('since'))} · consumer {plain(doc.get('consumer') or '-')} · "
        f"up {plain(age(doc.get('uptime_s')))}",
        _breaker_line(doc.get("circuit_breaker") or {}),
        f"model {plain(model.get('version') or '-')} · staleness {plain(age(model.get('staleness_s')))}",
        f"lag {number(lag.get('count'), unknown='unknown')} undelivered, {number(lag.get('pending'))} pending, "
        f"{number(lag.get('seconds'), '{:.2f}')} s, trend {plain(lag.get('trend') or '-')}",
        f"last {number(window.get('window_s'), '{:g}', '60')} s: {number(window.get('events'))} events, "
        f"{number(window.get('throughput_per_s'), '{:.1f}')}/s, p50 {number(window.get('p50_ms'), '{:.1f}')} ms, "
        f"p99 {number(window.get('p99_ms'), '{:.1f}')} ms, errors {number(window.get('error_rate'), '{:.1%}')}",
    ]
    recovery = doc.get("recovery")
    if isinstance(recovery, dict):
        lines.insert(1, f"recovering: next step to {plain(recovery.get('to') or '?')} at "
                        f"{timestamp(recovery.get('next_step_at'))} if the checks hold")
    return Group(
        *(markup_text(line) for line in lines),
        _checks_table(list(doc.get("health_checks") or [])),
        _transitions_table(list(doc.get("recent_transitions") or [])),
    )


def _state_level(doc: dict[str, Any]) -> CheckStatus:
    return health_level(200, doc)


@health_app.command("state")
def state(
    ctx: typer.Context,
    watch_: Annotated[bool, typer.Option("--watch", help="Refresh in place until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.", min=0.1)] = 2.0,
    duration: Annotated[float | None, typer.Option(help="Stop watching after this many seconds.", min=0.0)] = None,
    json_output: JsonOption = False,
) -> None:
    """GET /health/state: checks, transitions, breaker, model, lag, the last minute; --watch to follow.

    Exit 0 healthy, 1 degraded, 2 critical, failed or unreachable (a watch exits 0 on Ctrl-C).
    JSON: the worker's document as served — state, state_code, since, consumer, uptime_s, health_checks,
    recent_transitions, circuit_breaker, model, lag, window, positions, agent_accuracy."""
    context = get_context(ctx)
    client = worker_client(context)
    if watch_:
        if json_output:
            raise CtlError("--watch and --json do not combine: poll `health state --json` instead", ExitCode.UNKNOWN)

        def render() -> RenderableType:
            try:
                return render_state(client.state())
            except WorkerUnreachable as exc:
                return Text(f"{exc} (retrying every {interval:g}s)", style="bold red")

        watch(context.console, render, interval_s=interval, duration_s=duration)
        return
    try:
        doc = client.state()
    except WorkerUnreachable as exc:
        raise _unreachable(exc) from None
    if json_output:
        print_json(doc)
    else:
        context.console.print(render_state(doc))
    raise typer.Exit(int(exit_code_for(_state_level(doc))))


def register(app: typer.Typer) -> None:
    app.add_typer(health_app, name="health")
