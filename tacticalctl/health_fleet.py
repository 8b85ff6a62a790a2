"""`tacticalctl health --all` and `health state --all`: every live worker's /health or /health/state, each read at the
endpoint its heartbeat names."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tacticalctl.context import CtlContext, print_json
from tacticalctl.errors import REDIS_UNREACHABLE, CtlError, ExitCode, outage_message
from tacticalctl.formatting import exit_code_for, live_worker_counts, markup_text, plain, styled
from tacticalctl.state_view import render_state
from tacticalctl.watch import watch
from worker.health import CheckStatus
from worker.ops.fleet import FleetHealth, LiveWorker, WorkerHealth, read_fleet_health, read_fleet_state

HTTP_TIMEOUT_S = 2.0
NO_LIVE_WORKER = "no live worker: no worker has a heartbeat in Redis — `tacticalctl triage worker-down`"


def show_fleet_health(context: CtlContext, *, json_output: bool) -> NoReturn:
    _show(context, read_fleet_health(context.redis(), timeout_s=HTTP_TIMEOUT_S), _health_view, json_output)


def show_fleet_state(context: CtlContext, *, json_output: bool) -> NoReturn:
    _show(context, read_fleet_state(context.redis(), timeout_s=HTTP_TIMEOUT_S), render_fleet_state, json_output)


def watch_fleet_state(context: CtlContext, *, interval_s: float, duration_s: float | None) -> None:
    """`health state --all --watch`: the fleet read afresh at each refresh. A view rides out what it cannot read (no
    live worker, Redis down) and says so until it can."""
    client = context.redis(ride_out_outage=True)

    def render() -> RenderableType:
        try:
            fleet = read_fleet_state(client, timeout_s=HTTP_TIMEOUT_S)
        except REDIS_UNREACHABLE as exc:
            return Text(outage_message(exc, interval_s), style="bold red")
        if not fleet.workers:
            return Text(f"{NO_LIVE_WORKER} (retrying every {interval_s:g}s)", style="bold red")
        return render_fleet_state(fleet, verdict_first=True)

    watch(context.console, render, interval_s=interval_s, duration_s=duration_s)


def _show(context: CtlContext, fleet: FleetHealth, view: Callable[[FleetHealth], RenderableType],
          json_output: bool) -> NoReturn:
    if not fleet.workers:
        raise CtlError(NO_LIVE_WORKER, ExitCode.CRITICAL)
    if json_output:
        print_json(fleet.as_dict())
    else:
        context.console.print(view(fleet))
    raise typer.Exit(int(exit_code_for(fleet.status)))


def _where(worker: LiveWorker) -> str:
    return f"{worker.host or '?'} pid {'?' if worker.pid is None else worker.pid}"


def _counts(fleet: FleetHealth) -> str:
    """`3 live workers: 2 healthy, 1 not read`."""
    return live_worker_counts(["starting" if worker.starting else "not read" if worker.answer is None
                               else worker.state or "?" for worker in fleet.workers])


def _health_view(fleet: FleetHealth) -> RenderableType:
    return Group(_table(fleet), *(markup_text(line) for line in _summary(fleet)))


def _state_cell(worker: WorkerHealth) -> str:
    level = worker.level
    if worker.starting or level is None:
        return "starting"
    if worker.answer is None:
        return styled(CheckStatus.CRITICAL, "not read")
    state = worker.state or str(worker.answer.get("error") or "unknown")
    code = "?" if worker.state_code is None else str(worker.state_code)
    return styled(level, f"{state} ({code})")


def _table(fleet: FleetHealth) -> Table:
    # Fold, never cut: an operator needs the whole URL and the whole reason.
    table = Table(title="every live worker's /health, at the endpoint its heartbeat names", box=box.SIMPLE,
                  expand=False)
    for column in ("consumer", "host/pid", "url", "state", "model", "why not read"):
        table.add_column(column, overflow="fold")
    for worker in fleet.workers:
        live = worker.worker
        table.add_row(Text(live.name), Text(_where(live)), Text(live.url or "-"), markup_text(_state_cell(worker)),
                      Text(worker.model_version or "-"), Text(worker.error or "-"))
    return table


def _summary(fleet: FleetHealth) -> list[str]:
    """How many are in which state, then the next command for each worker that is not healthy."""
    lines = [_counts(fleet)]
    for worker in fleet.workers:
        name, url = plain(worker.worker.name), plain(worker.worker.url)
        if worker.starting:
            continue
        if worker.answer is None:
            lines.append(f"{name} is live by its heartbeat but was not read ({styled(CheckStatus.CRITICAL)}): check it "
                         f"where it runs (`tacticalctl --worker-url {url} health`), and "
                         "`tacticalctl triage worker-down`")
        elif worker.level is not CheckStatus.OK:
            lines.append(f"{name} is {styled(worker.level or CheckStatus.WARN, worker.state or '?')} — why, or "
                         f"the recovery under way: `tacticalctl --worker-url {url} health state`")
    return lines


def render_fleet_state(fleet: FleetHealth, *, verdict_first: bool = False) -> RenderableType:
    """Each live worker's /health/state as `health state` shows one, under a heading naming it; one not read, with
    why; then how many are in which state. `verdict_first` (a watch): that, and each worker not healthy with where
    to read it whole, come first instead, since a live view taller than the terminal is cut at the bottom."""
    parts: list[RenderableType] = []
    for worker in fleet.workers:
        live = worker.worker
        parts.append(markup_text(f"[bold]── {plain(live.name)}[/] · {plain(_where(live))} · "
                                 f"{plain(live.url or 'no endpoint yet')}"))
        if worker.answer is not None:
            parts.append(render_state(dict(worker.answer)))
        elif worker.starting:
            parts.append(markup_text(f"starting: {plain(worker.error)} — shown, not judged"))
        else:
            parts.append(markup_text(f"{styled(CheckStatus.CRITICAL, 'not read')}: live by its heartbeat, but "
                                     f"{plain(worker.error)} — `tacticalctl triage worker-down`"))
        parts.append(Text(""))
    verdict = markup_text(f"{_counts(fleet)} — {styled(fleet.status)}")
    if verdict_first:
        return Group(verdict, *(markup_text(line) for line in _summary(fleet)[1:]), Text(""), *parts[:-1])
    return Group(*parts, verdict)
