"""`tacticalctl latency`: P50/P99 per operation from the worker's /metrics, judged by the runbook's thresholds
(`latency --all`: every live worker's, `latency_fleet`)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from tacticalctl.context import CtlContext, JsonOption, get_context, print_json
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import exit_code_for, latency_ms, styled
from tacticalctl.latency_fleet import show_fleet_latency
from worker.health import DEFAULT_THRESHOLDS
from worker.ops.latency import NoLatencyHistogram, OperationLatency, operation_latencies, worst
from worker.ops.worker_client import WorkerClient, WorkerUnreachable

COUNTS_NOTE = ("count: end_to_end and validate … commit one per decided event (each event of a batch waited the "
               "batch's whole stage), so their quantiles describe the same events; inference per agent one per "
               "monitor probe (one event, timed alone)")


def latency_table(rows: list[OperationLatency], title: str) -> Table:
    table = Table(title=title)
    for column in ("operation", "count", "p50", "p99", "mean", "status"):
        table.add_column(column, justify="left" if column in ("operation", "status") else "right", overflow="fold")
    for row in rows:
        table.add_row(row.label, row.count_text, latency_ms(row.p50_ms), latency_ms(row.p99_ms, row.saturated),
                      latency_ms(row.mean_ms), styled(row.status) if row.count else f"no {row.counted_per.value}")
    return table


def latency(
    ctx: typer.Context,
    window: Annotated[float, typer.Option(help="Seconds between two scrapes: the latency of that window "
                                          "(0: everything since the worker started).", min=0.0, max=3600.0)] = 0.0,
    all_: Annotated[bool, typer.Option(
        "--all", help="Every live worker's, each at the endpoint its heartbeat names (not --worker-url): one row "
                      "each.")] = False,
    json_output: JsonOption = False,
) -> None:
    """P50/P99 per operation from the worker's /metrics, judged by the runbook's thresholds; --all: every live
    worker's.

    Operations: end_to_end, validate, claim, inference — per agent too —, aggregate, commit, from the
    tactical_request_duration_seconds histogram of /metrics, interpolated like Prometheus' histogram_quantile.
    Exit 0 ok, 1 a P50 above 50 ms, 2 a P99 above 100 ms or the worker unreachable, 3 /metrics has no histogram.

    end_to_end and each stage count decided events (every event of a batch waited the batch's whole stage, and is
    counted in it once), so a stage's P99 is the P99 of the same events as end_to_end's; each agent's inference
    counts the monitor's probes (one event, timed alone).

    JSON keys: url, window_s, status, thresholds {p50_warn_ms, p99_critical_ms}, operations [{operation,
    agent_type, count, counted_per (events|probes), p50_ms, p99_ms, mean_ms, saturated, status}].

    --all: one row per worker with a live heartbeat — end_to_end events, P50, P99, its slowest stage (validate …
    commit) by P99, its status (the worst of all its operations, agents' probes too) — and, under the table, what
    is over a threshold, why a worker was not read, what to run next: a fleet reads in 80 columns, and one worker's
    every operation is `latency` at its URL. --window scrapes every worker at once, waits once, scrapes every one
    again. Exit the worst of them: 0 ok, 1 a P50 above 50 ms, 2 a P99 above 100 ms or a live worker not read (no
    answer at the endpoint its heartbeat names, or another worker's), 3 a worker's /metrics has no histogram (and
    nothing worse); one whose heartbeat names no endpoint yet is starting: shown, not judged (only starting ones:
    1). No live worker: 2. JSON: {"workers": [{consumer, host, pid, url, status (ok|warn|critical|unknown; null:
    starting), error (why not read), operations (as above; empty when not read)}], "status"}."""
    context = get_context(ctx)
    if all_:
        show_fleet_latency(context, window_s=window, json_output=json_output,
                           wait=time.sleep if json_output else lambda seconds: _measuring(context, seconds))
    client = WorkerClient(context.worker_url)
    try:
        if window > 0:
            earlier = client.metrics()
            if json_output:
                time.sleep(window)
            else:
                _measuring(context, window)
            rows = operation_latencies(client.metrics(), earlier)
        else:
            rows = operation_latencies(client.metrics())
    except WorkerUnreachable as exc:
        raise CtlError(str(exc), ExitCode.CRITICAL) from None
    except NoLatencyHistogram as exc:
        raise CtlError(str(exc), ExitCode.UNKNOWN) from None
    status = worst(rows)
    if json_output:
        print_json({
            "url": context.worker_url,
            "window_s": window or None,
            "status": status.value,
            "thresholds": {"p50_warn_ms": DEFAULT_THRESHOLDS.p50_warn_ms,
                           "p99_critical_ms": DEFAULT_THRESHOLDS.p99_critical_ms},
            "operations": [row.as_dict() for row in rows],
        })
    else:
        span = f"last {window:g} s" if window else "since the worker started"
        context.console.print(latency_table(rows, f"latency per operation, {span}"))
        context.console.print(COUNTS_NOTE, style="dim")
        context.console.print(f"thresholds: p99 ≤ {DEFAULT_THRESHOLDS.p99_critical_ms:g} ms (critical), "
                              f"p50 ≤ {DEFAULT_THRESHOLDS.p50_warn_ms:g} ms (warning): {styled(status)}")
    raise typer.Exit(int(exit_code_for(status)))


def _measuring(context: CtlContext, window_s: float) -> None:
    with context.console.status(f"measuring for {window_s:g} s…"):
        time.sleep(window_s)


def register(app: typer.Typer) -> None:
    app.command()(latency)
