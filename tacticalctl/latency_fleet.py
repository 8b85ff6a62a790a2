"""`tacticalctl latency --all`: every live worker's P50/P99, each read at the endpoint its heartbeat names.

One row per worker — its end_to_end events, P50 and P99, its slowest stage by P99, its status (the worst of all its
operations) — so a fleet reads in 80 columns and the slow worker stands out; what is over a threshold, why a worker
was not read and what to run next (`latency` at its URL: every operation) are lines under the table, where a URL or
a reason does not widen it."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from tacticalctl.context import CtlContext, print_json
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import latency_ms, live_worker_counts, markup_text, plain, styled
from tacticalctl.health_fleet import HTTP_TIMEOUT_S, NO_LIVE_WORKER
from worker.health import DEFAULT_THRESHOLDS, CheckStatus
from worker.ops.fleet_latency import UNKNOWN, FleetLatency, WorkerLatency, read_fleet_latency

_EXIT = {CheckStatus.OK.value: ExitCode.OK, CheckStatus.WARN.value: ExitCode.WARNING,
         CheckStatus.CRITICAL.value: ExitCode.CRITICAL, UNKNOWN: ExitCode.UNKNOWN}


def show_fleet_latency(context: CtlContext, *, window_s: float, json_output: bool,
                       wait: Callable[[float], None]) -> NoReturn:
    fleet = read_fleet_latency(context.redis(), timeout_s=HTTP_TIMEOUT_S, window_s=window_s, wait=wait)
    if not fleet.workers:
        raise CtlError(NO_LIVE_WORKER, ExitCode.CRITICAL)
    if json_output:
        print_json({"workers": [worker.as_dict() for worker in fleet.workers], "status": fleet.status})
    else:
        context.console.print(_table(fleet))
        for line in _summary(fleet):
            context.console.print(markup_text(line))
    raise typer.Exit(int(_EXIT[fleet.status]))


def _status_cell(worker: WorkerLatency) -> str:
    return styled(worker.status or "", _status_word(worker))  # in its status's colour: not read is critical


def _status_word(worker: WorkerLatency) -> str:
    """Its status, or why it has none: starting, not read (critical), no histogram (unknown); `no events` for a
    worker that decided nothing (in the window), as `latency` says of such a row."""
    if worker.starting:
        return "starting"
    if worker.operations is None:
        return "no histogram" if worker.no_histogram else "not read"
    row = worker.end_to_end
    if worker.status == CheckStatus.OK and (row is None or row.count == 0):
        return "no events"
    return worker.status or UNKNOWN


def _number(value: float | None, saturated: bool = False) -> str:
    """`latency_ms` without its unit, which the column's header says."""
    return latency_ms(value, saturated).removesuffix(" ms")


def _table(fleet: FleetLatency) -> Table:
    span = f"last {fleet.window_s:g} s" if fleet.window_s else "since each worker started"
    table = Table(title=f"every live worker's end_to_end latency (ms), {span}; its slowest stage by p99",
                  box=box.SIMPLE, expand=False)
    # Only the consumer's name folds: the figures and the status stay whole on the worker's line.
    table.add_column("consumer", overflow="fold")
    for column in ("events", "p50", "p99", "slowest stage"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for worker in fleet.workers:
        row, stage = worker.end_to_end, worker.slowest_stage
        table.add_row(Text(worker.worker.name), Text("-" if row is None else str(row.count)),
                      Text("-" if row is None else _number(row.p50_ms)),
                      Text("-" if row is None else _number(row.p99_ms, row.saturated)),
                      Text("-" if stage is None else f"{stage.operation} {_number(stage.p99_ms, stage.saturated)}"),
                      markup_text(_status_cell(worker)))
    return table


def _summary(fleet: FleetLatency) -> list[str]:
    """The thresholds and how many workers are in which status, then for each worker not ok: why, and what next."""
    lines = [f"thresholds: p99 ≤ {DEFAULT_THRESHOLDS.p99_critical_ms:g} ms (critical), "
             f"p50 ≤ {DEFAULT_THRESHOLDS.p50_warn_ms:g} ms (warning), over every operation of a worker; "
             f"{live_worker_counts([_status_word(worker) for worker in fleet.workers])} — {styled(fleet.status)}"]
    window = f" --window {fleet.window_s:g}" if fleet.window_s else " --window 30"
    for worker in fleet.workers:
        name, url = plain(worker.worker.name), plain(worker.worker.url)
        if worker.starting:
            lines.append(f"{name} is starting: {plain(worker.error)}")
        elif worker.operations is None and worker.no_histogram:
            lines.append(f"{name} was not judged ({UNKNOWN}): {plain(worker.error)}")
        elif worker.operations is None:
            lines.append(f"{name} is live by its heartbeat but was not read ({styled(CheckStatus.CRITICAL)}): "
                         f"{plain(worker.error)} — `tacticalctl triage worker-down`")
        elif worker.status != CheckStatus.OK:
            slow = ", ".join(f"{plain(row.label)} p50 {latency_ms(row.p50_ms)} p99 "
                             f"{latency_ms(row.p99_ms, row.saturated)}" for row in worker.over_threshold)
            playbook = "p99-latency" if worker.status == CheckStatus.CRITICAL else "p50-latency"
            lines.append(f"{name}, {styled(worker.status or UNKNOWN)}: {slow} — every operation: `tacticalctl "
                         f"--worker-url {url} latency{window}`, why: `tacticalctl --worker-url {url} triage "
                         f"{playbook}`")
    return lines
