"""`tacticalctl lag` and `lag watch`: how much waits in `synergy_events`, for how long, and where it is heading."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import redis
import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tacticalctl.context import JsonOption, get_context, json_flag, print_json
from tacticalctl.errors import REDIS_UNREACHABLE, CtlError, ExitCode, outage_message
from tacticalctl.formatting import exit_code_for, markup_text, number, sparkline, styled
from tacticalctl.watch import watch as watch_view
from worker.health import DEFAULT_THRESHOLDS
from worker.lag import LagUnavailable
from worker.ops.lag_watch import LagMonitor, LagReading, RateSource, sample_lag, trend_level

lag_app = typer.Typer()



def _rate(value: float | None) -> str:
    return number(value, "{:.1f}/s")


def render_reading(reading: LagReading, recent_seconds: list[float]) -> RenderableType:
    lag = reading.lag
    seconds = styled(reading.check.status, f"{lag.seconds:.2f} s")
    trend = styled(trend_level(reading.trend), reading.trend.value)
    table = Table(title=f"consumer lag — {styled(reading.status)}", expand=False)
    for column in ("undelivered", "pending", "lag", "trend", "in", "out"):
        table.add_column(column, justify="right", overflow="fold")
    out = _rate(reading.rate_out_per_s) + (" (Redis)" if reading.rate_out_source is RateSource.REDIS else "")
    table.add_row(lag.count_text, str(lag.pending), seconds, trend, _rate(reading.rate_in_per_s), out)
    thresholds = (f"thresholds: warn > {DEFAULT_THRESHOLDS.lag_warn_s:g} s, "
                  f"critical > {DEFAULT_THRESHOLDS.lag_critical_s:g} s")
    spark = sparkline(recent_seconds, floor_max=DEFAULT_THRESHOLDS.lag_critical_s)
    lines: list[Table | Text] = [table, Text(reading.check.message)]
    if lag.count_note is not None:
        lines.append(Text(lag.count_note, style="yellow"))
        lines.append(Text("trend: stall and stop are called from the group's last-delivered id and pending count; "
                          "warn (falling behind) only on counted samples", style="yellow"))
    if lag.undelivered_removed:
        lines.append(Text("entries not yet delivered to the group were removed from the stream (a producer's MAXLEN "
                          "trim, or XDEL) — or may have been, when it holds only undelivered ones: those events never "
                          "reach the worker. out is counted only while the group's position holds still (0/s) or "
                          "nothing past it is removed", style="yellow"))
    if reading.rate_out_source is RateSource.REDIS:
        lines.append(Text("out: the group's entries-read as Redis reports it (the count is a bound); it can be stale "
                          "after a Redis restart", style="yellow"))
    if len(recent_seconds) > 1:
        lines.append(markup_text(f"lag, last {len(recent_seconds)} samples: {styled(reading.status, spark)}"))
    lines.append(Text(thresholds, style="dim"))
    return Group(*lines)


def _sample(client: redis.Redis, monitor: LagMonitor) -> LagReading:
    try:
        lag, added = sample_lag(client, previous=monitor.last_lag)
    except LagUnavailable as exc:
        raise CtlError(str(exc), ExitCode.UNKNOWN) from None
    return monitor.observe(lag, at=time.time(), entries_added=added)


@lag_app.callback(invoke_without_command=True)
def lag(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Consumer lag of synergy_events now (`lag watch` follows it).

    Undelivered count ("unknown" when Redis cannot tell, never 0), pending, the oldest waiting entry's age in
    seconds against the runbook thresholds (2 s warning, 5 s critical).

    Exit 0 ok, 1 warning, 2 critical or Redis unreachable, 3 when the stream or group does not exist.
    The undelivered count is exact unless 256 or more entries wait with 256 or more delivered before them still in the
    stream (the check reads 256 on each side and no more, to stay light on Redis, so exactly 256 is already a bound):
    then it is a bound, `256–N`, with Redis's own figure beside it when that can be right, and a line saying so.

    JSON keys: count (exact; or with count_exact false Redis's estimate within the bound, null when Redis cannot tell
    or its figure is outside the bound), count_exact, count_min, count_max (the bound; both = count when exact),
    redis_lag (XINFO GROUPS lag as Redis says it), pending, seconds, oldest_id, last_delivered_id, entries_read
    (the group's, as Redis says it: stale after a Redis 7.0 restart), stream_length, entries_added, delivered
    (entries_added less the undelivered count; null when the count is a bound or undelivered entries were removed),
    undelivered_removed (entries the group had not been delivered were trimmed or deleted from the stream), trend
    (ok|warn|stall|stop|unknown|too_short; with a bound, stall/stop from the group's last-delivered id and pending
    count, never warn), rate_in_per_s, rate_out_per_s,
    rate_out_source (counted: from delivered; redis: from entries_read, the count being a bound; unknown: no two
    samples, or entries_read stale or gone back), status (ok|warn|critical), threshold_warn_s, threshold_critical_s,
    message, at."""
    if ctx.invoked_subcommand is not None:
        return
    context = get_context(ctx)
    monitor = LagMonitor()
    reading = _sample(context.redis(), monitor)
    if json_output:
        print_json(reading.as_dict())
    else:
        context.console.print(render_reading(reading, monitor.recent_seconds))
    raise typer.Exit(int(exit_code_for(reading.status)))


@lag_app.command("watch")
def watch(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(help="Seconds between samples.", min=0.1)] = 1.0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).",
                                                   min=0.0)] = None,
    json_output: Annotated[bool, json_flag("One JSON object per sample, one per line.")] = False,
) -> None:
    """Follow the lag, refreshed in place, until Ctrl-C (exit 0).

    Count, pending, seconds coloured at the runbook thresholds, the trend of the samples taken (ok, warn = falling
    behind, stall, stop; while the count is a bound, stall/stop only), rates in and out (out: entries delivered,
    counted; with a bound, Redis's entries-read, marked "(Redis)"), a sparkline of recent samples.
    With --json, one line per sample with the keys of `lag --json`; a sample that could not be taken has only
    status (unknown: no stream or group yet; critical: Redis unreachable), error (why; also as message) and at. A
    watch is a view: it rides out what it cannot read and exits 0 on Ctrl-C or --duration (`lag` is the check, with
    its exit codes)."""
    context = get_context(ctx)
    monitor = LagMonitor()
    try:
        client = context.redis(ride_out_outage=True)
        if json_output:
            _watch_json(client, monitor, interval, duration)
            return

        def render() -> RenderableType:
            try:
                reading = _sample(client, monitor)
            except CtlError as exc:
                return Text(exc.message, style="yellow")
            except REDIS_UNREACHABLE as exc:
                return Text(outage_message(exc, interval), style="bold red")
            return render_reading(reading, monitor.recent_seconds)

        watch_view(context.console, render, interval_s=interval, duration_s=duration)
    except KeyboardInterrupt:
        pass


def _watch_json(client: redis.Redis, monitor: LagMonitor, interval: float, duration: float | None) -> None:
    started = time.monotonic()
    while True:
        try:
            line = _sample(client, monitor).as_dict()
        except CtlError as exc:
            line = _failed_sample("unknown", exc.message)
        except REDIS_UNREACHABLE as exc:  # a watch outlives a Redis blip, as the table does
            line = _failed_sample("critical", outage_message(exc, interval))
        sys.stdout.write(json.dumps(line, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()
        if duration is not None and time.monotonic() - started + interval > duration:
            return
        time.sleep(interval)


def _failed_sample(status: str, why: str) -> dict[str, object]:
    """A sample that could not be taken: why under `error`, as in the document a failed command prints, and under
    `message`, as in a sample."""
    return {"status": status, "error": why, "message": why, "at": time.time()}


def register(app: typer.Typer) -> None:
    app.add_typer(lag_app, name="lag")
