"""`tacticalctl health --all`: every live worker's /health, each read at the endpoint its heartbeat names."""

from __future__ import annotations

from collections import Counter
from typing import NoReturn

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from tacticalctl.context import CtlContext, print_json
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import exit_code_for, markup_text, plain, styled
from worker.health import CheckStatus
from worker.ops.fleet import FleetHealth, WorkerHealth, read_fleet_health

HTTP_TIMEOUT_S = 2.0
NO_LIVE_WORKER = "no live worker: no worker has a heartbeat in Redis — `tacticalctl triage worker-down`"


def show_fleet_health(context: CtlContext, *, json_output: bool) -> NoReturn:
    fleet = read_fleet_health(context.redis(), timeout_s=HTTP_TIMEOUT_S)
    if not fleet.workers:
        raise CtlError(NO_LIVE_WORKER, ExitCode.CRITICAL)
    if json_output:
        print_json(fleet.as_dict())
    else:
        context.console.print(_table(fleet))
        for line in _summary(fleet):
            context.console.print(markup_text(line))
    raise typer.Exit(int(exit_code_for(fleet.status)))


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
        where = f"{live.host or '?'} pid {'?' if live.pid is None else live.pid}"
        table.add_row(Text(live.name), Text(where), Text(live.url or "-"), markup_text(_state_cell(worker)),
                      Text(worker.model_version or "-"), Text(worker.error or "-"))
    return table


def _summary(fleet: FleetHealth) -> list[str]:
    """How many are in which state, then the next command for each worker that is not healthy."""
    counts = Counter("starting" if worker.starting else "not read" if worker.answer is None else worker.state or "?"
                     for worker in fleet.workers)
    lines = [f"{len(fleet.workers)} live worker{'s' if len(fleet.workers) != 1 else ''}: "
             + ", ".join(f"{count} {plain(name)}" for name, count in counts.items())]
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
