"""`tacticalctl health` and `health state`: the worker's own view of itself, over HTTP (`--all`: every live worker's,
`health_fleet`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.text import Text

from tacticalctl.context import JSON_REQUESTED, CtlContext, JsonOption, get_context, print_json
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import age, exit_code_for, plain, styled
from tacticalctl.health_fleet import show_fleet_health, show_fleet_state, watch_fleet_state
from tacticalctl.state_view import render_state
from tacticalctl.watch import watch
from worker.health import CheckStatus
from worker.ops.worker_client import WorkerClient, WorkerUnreachable, health_level

health_app = typer.Typer()


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
    """The worker's health: GET /health (details: `health state`); --all: every live worker's (`health --all state`:
    every one's `health state`).

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
        return  # `health --all state` is `health state --all`: `state` reads these flags too
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


def _state_level(doc: dict[str, Any]) -> CheckStatus:
    return health_level(200, doc)


@health_app.command("state")
def state(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option(
        "--all", help="Every live worker's /health/state, each at the endpoint its heartbeat names (not --worker-url).")
    ] = False,
    watch_: Annotated[bool, typer.Option("--watch", help="Refresh in place until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.", min=0.1)] = 2.0,
    duration: Annotated[float | None, typer.Option(help="Stop watching after this many seconds.", min=0.0)] = None,
    json_output: JsonOption = False,
) -> None:
    """GET /health/state: checks, transitions, breaker, model, lag, the last minute; --watch to follow; --all: every
    live worker's.

    Exit 0 healthy, 1 degraded, 2 critical, failed or unreachable (a watch exits 0 on Ctrl-C).
    JSON: the worker's document as served — state, state_code, since, consumer, uptime_s, health_checks,
    recent_transitions, circuit_breaker, model, lag, window, positions, agent_accuracy.

    --all: every worker with a live heartbeat, read at once at the endpoint its heartbeat names (--worker-url is not
    used), each shown as above under a heading naming its consumer, host, PID and URL; exit the worst, as `health
    --all`: a live worker not read (no answer there, or another worker's) is critical, with why; one whose heartbeat
    names no endpoint yet is starting: shown, not judged (only starting ones: 1). No live worker: 2. JSON:
    {"workers": [{consumer, host, pid, url, state (its document as served; null: not read), check
    (ok|warn|critical; null: starting), error (why not read)}], "status" (ok|warn|critical)}."""
    context = get_context(ctx)
    above = ctx.parent.params if ctx.parent else {}  # `health --all --json state` is `health state --all --json`
    all_ = all_ or bool(above.get("all_"))
    json_output = json_output or bool(above.get("json_output"))
    ctx.meta[JSON_REQUESTED] = json_output  # this command's own --json, unset, said no: a failure answers in JSON too
    if watch_ and json_output:
        command = "health state --all" if all_ else "health state"
        raise CtlError(f"--watch and --json do not combine: poll `{command} --json` instead", ExitCode.UNKNOWN)
    if all_ and watch_:
        watch_fleet_state(context, interval_s=interval, duration_s=duration)
        return
    if all_:
        show_fleet_state(context, json_output=json_output)
    client = worker_client(context)
    if watch_:

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
