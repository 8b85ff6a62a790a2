"""Feeding events in: `emit` one, `simulate` a live market, `replay` a CSV of 5-minute bars."""

from __future__ import annotations

import math
import shlex
import signal
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import redis
import typer
from rich.status import Status

from models.bars import read_bars_csv
from models.synergy import synergy_events
from tacticalctl.context import JsonOption, get_context, print_json
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import plain
from worker.events import InvalidEvent
from worker.feed import FeedOutage, FeedStats, run_id, send_events, simulated_events
from worker.producer import make_event, publish_event
from worker.records import MATRIX_ROWS, SynergyType

MAX_RATE = 1_000_000.0  # events per second: far past what one Redis takes, and a finite schedule


def emit(
    ctx: typer.Context,
    synergy_type: Annotated[SynergyType, typer.Option(help="Synergy type of the event.")] = SynergyType.TYPE_1,
    direction: Annotated[int, typer.Option(help="1 long, -1 short.", min=-1, max=1)] = 1,
    confidence: Annotated[float, typer.Option(help="Upstream confidence, 0..1.", min=0.0, max=1.0)] = 0.8,
    symbol: Annotated[str, typer.Option(help="Instrument symbol.")] = "ES",
    price: Annotated[float, typer.Option(help="Price at the bar close.")] = 4500.0,
    atr: Annotated[float, typer.Option(help="Average true range, for stop-loss and take-profit.")] = 5.0,
    correlation_id: Annotated[str | None, typer.Option(help="Correlation id (default: a new unique one).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the feature matrix (default: random).", min=0)] = None,
    json_output: JsonOption = False,
) -> None:
    """Publish one SYNERGY_DETECTED event to `synergy_events`."""
    if direction == 0:
        raise CtlError("--direction must be 1 (long) or -1 (short)", ExitCode.UNKNOWN)
    try:
        event = make_event(
            correlation_id=correlation_id, synergy_type=synergy_type, direction=direction, confidence=confidence,
            symbol=symbol, price=price, atr=atr, rng=np.random.default_rng(seed),
        )
    except InvalidEvent as exc:  # the worker would dead-letter it: refused here, before it is sent
        raise CtlError(f"the event would be invalid: {exc}", ExitCode.UNKNOWN) from None
    entry_id = publish_event(get_context(ctx).redis(), event)
    if json_output:
        print_json({"entry_id": entry_id.decode(), "correlation_id": event.correlation_id})
    else:
        get_context(ctx).console.print(f"emitted [bold]{plain(event.correlation_id)}[/] as entry {entry_id.decode()}")


class _StopOnSignal:
    """Ctrl-C or SIGTERM (`timeout`, a supervisor) stops a feed after the batch in flight, so the count it prints is
    what Redis holds: an interrupt inside a pipeline's reply would leave a written batch uncounted. A second signal
    while it still sends stops it at once (a Redis that does not answer); once it has stopped sending, signals are
    ignored until it exits: an impatient double Ctrl-C ends it with its counts and exit 0 whenever the second lands.
    A signal the feed was started ignoring (a background job's SIGINT) stays ignored."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.sending = True
        self.signalled = False  # a signal stopped it (the feed also sets `stop` itself, on an invalid event)
        self._previous: dict[int, Any] = {}

    def _request_stop(self, signum: int, frame: object) -> None:
        if self.stop.is_set() and self.sending:
            raise KeyboardInterrupt
        self.signalled = True
        self.stop.set()

    def __enter__(self) -> _StopOnSignal:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                self._previous[signum] = signal.signal(signum, self._request_stop)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.signalled:  # stopped by a signal: the command is on its way out, and later ones are ignored
            self.sending = False
            # Ignored by the OS, not by a Python handler: the interpreter puts its Python handlers back to the
            # default while it shuts down, and a second Ctrl-C landing then killed the process (exit 130/143).
            for signum in self._previous:
                signal.signal(signum, signal.SIG_IGN)
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _run_feed(ctx: typer.Context, events, *, rate: float | None, duration: float | None, count: int | None,
              label: str, json_output: bool, after_outage: str = "") -> FeedStats:
    if duration is not None and math.isinf(duration):  # the options' ranges refuse NaN and an infinite rate
        raise CtlError(f"--duration: {duration} is not a number of seconds", ExitCode.UNKNOWN)
    context = get_context(ctx)
    client = context.redis()
    stop = threading.Event()
    with _StopOnSignal(stop) as signals:
        stats = _send(client, events, rate=rate, duration=duration, count=count, stop=stop, label=label,
                      json_output=json_output, after_outage=after_outage, status=None if json_output else
                      context.console.status(f"{label}: starting"))
        signals.sending = False
        summary = {"sent": stats.sent, "elapsed_s": round(stats.elapsed_s, 3), "rate_eps": round(stats.rate, 1)}
        if json_output:
            print_json(summary)
        else:
            context.console.print(f"{label}: sent {stats.sent} events in {stats.elapsed_s:.1f}s ({stats.rate:.1f}/s)")
    return stats


def _send(client: redis.Redis, events, *, rate: float | None, duration: float | None, count: int | None,
          stop: threading.Event, label: str, json_output: bool, after_outage: str, status: Status | None) -> FeedStats:
    """send_events with a spinner (none for JSON output), its ways of stopping turned into counts or one line."""
    sent = 0
    started = time.monotonic()
    try:
        with status if status is not None else nullcontext(None) as spinner:
            def count_sent(batch: int) -> None:
                nonlocal sent
                sent += batch
                if spinner is not None:
                    spinner.update(f"{label}: {sent} events sent")
            return send_events(client, events, rate=rate, duration_s=duration, limit=count, stop=stop,
                               on_sent=count_sent)
    except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM: stopped mid-batch, whose events may have landed in part
        typer.echo(f"{label}: stopped mid-batch: {sent} events confirmed sent, the batch in flight may have been "
                   "written in part (XLEN synergy_events tells)", err=True)
        return FeedStats(sent=sent, elapsed_s=time.monotonic() - started)
    except ValueError as exc:  # InvalidEvent (--symbol ''), an --id-prefix that makes ids too long: the first event
        stop.set()
        raise CtlError(f"{label}: the events would be invalid ({sent} sent): {exc}", ExitCode.UNKNOWN) from None
    except FeedOutage as exc:  # how far it got, and for a replay how to finish it
        if isinstance(exc.cause, redis.AuthenticationError):
            raise exc.cause from None
        if json_output:
            print_json({"sent": exc.stats.sent, "in_flight": exc.in_flight, "elapsed_s": round(exc.stats.elapsed_s, 3),
                        "rate_eps": round(exc.stats.rate, 1), "error": str(exc)})
        raise CtlError(f"{label}: {exc}{after_outage}", ExitCode.CRITICAL) from None


def simulate(
    ctx: typer.Context,
    rate: Annotated[float, typer.Option(help="Events per second.", min=0.001, max=MAX_RATE)] = 50.0,
    duration: Annotated[float | None, typer.Option(help="Seconds to run (default: until Ctrl-C or --count).",
                                                   min=0.0)] = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many events.", min=1)] = None,
    seed: Annotated[int, typer.Option(help="Simulator seed; later markets use seed+1, seed+2, …", min=0)] = 0,
    symbol: Annotated[str, typer.Option(help="Symbol of the simulated instrument.")] = "SIM",
    id_prefix: Annotated[str | None, typer.Option(help="Correlation id prefix (default: unique per run).")] = None,
    json_output: JsonOption = False,
) -> None:
    """A live feed: synergy events detected in a seeded simulated market, sent at --rate."""
    events = simulated_events(seed, symbol=symbol, id_prefix=id_prefix or run_id())
    _run_feed(ctx, events, rate=rate, duration=duration, count=count, label="simulate", json_output=json_output)


def replay(
    ctx: typer.Context,
    csv_file: Annotated[Path, typer.Argument(help="CSV of 5-minute bars: timestamp,open,high,low,close,volume.",
                                             exists=True, dir_okay=False, readable=True)],
    rate: Annotated[float | None, typer.Option(help="Events per second (default: as fast as possible).", min=0.001,
                                               max=MAX_RATE)] = None,
    symbol: Annotated[str | None, typer.Option(help="Symbol (default: the file's name).")] = None,
    id_prefix: Annotated[str, typer.Option(help="Prefix for correlation ids; the same file replayed with the "
                                           "same prefix is recognised as duplicates.")] = "",
    json_output: JsonOption = False,
) -> None:
    """Replay a CSV of 5-minute OHLCV bars: detect synergies and publish their events."""
    try:
        bars = read_bars_csv(csv_file, symbol=symbol or csv_file.stem)
        events = list(synergy_events(bars, id_prefix=id_prefix))
    except ValueError as exc:  # BarsFormatError (a bad file); InvalidEvent, or ids too long, for what it would send
        raise CtlError(str(exc), ExitCode.UNKNOWN) from None
    if not events:  # said, not only "sent 0": a file too short for a feature window is the usual reason
        why = (f": a synergy needs {MATRIX_ROWS} bars of history (its feature window)" if len(bars) < MATRIX_ROWS
               else "")
        typer.echo(f"replay {csv_file.name}: no synergy detected in its {len(bars)} bars{why}", err=True)
    # The ids are symbol + bar time + prefix: the same two options make the same ids, so what landed is a duplicate.
    same_ids = " ".join(f"{option} {shlex.quote(value)}" for option, value in
                        (("--symbol", symbol), ("--id-prefix", id_prefix)) if value)
    again = f"`tacticalctl replay {shlex.quote(str(csv_file))}{' ' + same_ids if same_ids else ''}`"
    _run_feed(ctx, events, rate=rate, duration=None, count=None, label=f"replay {csv_file.name}",
              json_output=json_output, after_outage=f"; once Redis is back, run {again} again: the events that "
              "landed are recognised as duplicates")


def register(app: typer.Typer) -> None:
    app.command()(emit)
    app.command()(simulate)
    app.command()(replay)
