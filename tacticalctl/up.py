"""`tacticalctl up`: the whole system on one machine — embedded Redis, the worker, a simulated feed — live."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import redis
import typer
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tacticalctl.context import get_context
from tacticalctl.errors import REDIS_UNREACHABLE, CtlError, ExitCode, outage_message
from tacticalctl.formatting import plain
from worker.actions import ACTION_ORDER, AGENT_NAMES
from worker.aggregator import cut_decimals, shown_score
from worker.connection import REDIS_FAILED, connect
from worker.decision_entry import decision_votes
from worker.feed import FeedOutage, ResumableFeed, run_id, send_events, simulated_events
from worker.names import COMMANDS_STREAM, DEAD_LETTER_STREAM, DECISIONS_STREAM, INPUT_STREAM
from worker.process import WorkerStartError
from worker.redis_text import as_number
from worker.stack import LocalStack
from worker.stream_entries import Entry, entry_time_ms, newest_id, read_after

SHOWN_ROWS = 15
DECISIONS_BLOCK_MS = 200
RETRY_S = 1.0  # while Redis is unreachable (an external one restarting): the view and the feed try again this often
SHOWN_ID_CHARS = 16  # the tail of a correlation id: where simulated and ULID ids differ from one event to the next


def _vote(votes: dict[str, tuple[float, ...]], agent: str) -> str:
    """An agent's call and its probability, compact: `L.93` is long at 0.93…. Cut, never rounded up, as the score and
    the reason are (`shown_score`): three agents voting long 0.459 read L.45 beside a score of 0.458, not L.46."""
    probabilities = votes.get(agent) or (0.0, 0.0, 0.0)
    best = max(range(3), key=probabilities.__getitem__)
    probability = cut_decimals(probabilities[best], 2)
    return ACTION_ORDER[best][0].upper() + (probability[1:] if probability.startswith("0") else probability[:3])


def _score(raw: bytes | None) -> str:
    score = as_number(raw)
    return "?" if score is None else shown_score(score)  # another writer's entry: shown, not a crash


def decision_row(event_id: bytes, decision_id: bytes, fields: dict[bytes, bytes]) -> tuple[str, ...]:
    executed = fields.get(b"execute") == b"1"
    votes = decision_votes(fields)
    latency_ms = entry_time_ms(decision_id) - entry_time_ms(event_id)
    return (
        plain(fields[b"correlation_id"].decode()[-SHOWN_ID_CHARS:]),
        plain(fields[b"synergy_type"].decode()),
        "long" if fields[b"direction"] == b"1" else "short",
        " ".join(_vote(votes, agent) for agent in AGENT_NAMES),
        f"{plain(fields[b'action'].decode())} {_score(fields.get(b'score'))}",  # the figure its reason shows
        "[green]EXECUTED[/]" if executed else f"[yellow]{plain(fields[b'reason'].decode())}[/]",
        str(latency_ms),
    )


# Every column but the decision keeps its width (header, justify, min width), so a row reads whole in an 80-column
# terminal; the decision's reason takes what is left and is cut short (…) when it does not fit.
_FIXED_COLUMNS = (
    ("correlation id", "left", SHOWN_ID_CHARS),
    ("type", "left", 6),
    ("dir", "left", 5),
    ("FVG Mom Entry", "left", 14),
    ("vote", "left", 10),
)
_DECISION_COLUMN = "decision"
_LATENCY_COLUMN = ("ms", "right", 4)  # XADD of the event to XADD of its decision, by their stream ids


def render(rows: deque[tuple[str, ...]], totals: dict[str, int], elapsed: float, outage: str | None = None) -> Group:
    table = Table(title="tactical-marl — live decisions (Ctrl-C to stop)", expand=True, box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, collapse_padding=True)
    for name, justify, width in _FIXED_COLUMNS:
        table.add_column(name, no_wrap=True, justify=justify, min_width=width)  # type: ignore[arg-type]
    table.add_column(_DECISION_COLUMN, no_wrap=True, overflow="ellipsis", ratio=1)
    name, justify, width = _LATENCY_COLUMN
    table.add_column(name, no_wrap=True, justify=justify, min_width=width)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row)
    line = (f"{elapsed:6.1f}s  sent {totals['sent']}  decided {totals['decided']}  executed {totals['executed']}  "
            f"commands {totals['commands']}  dead-lettered {totals['dead']}")
    if outage is None:
        return Group(table, line)
    return Group(table, line, Text(outage, style="bold red"))


def up(
    ctx: typer.Context,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")] = None,
    rate: Annotated[float, typer.Option(help="Simulated events per second.", min=0.1, max=100_000.0)] = 20.0,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1, max=8)] = 1,
    http_addr: Annotated[str, typer.Option(help="HTTP address of the first worker.")] = "127.0.0.1:8001",
    external_redis: Annotated[bool, typer.Option(
        "--external-redis", help="Use --redis-url instead of starting an embedded Redis.")] = False,
    log_dir: Annotated[Path | None, typer.Option(
        help="Keep the workers' logs in this directory (default: a temporary one, removed on exit).",
        file_okay=False)] = None,
) -> None:
    """Start an embedded Redis, the worker and a simulated feed; show decisions as they happen.

    Ctrl-C, SIGTERM or --duration stop everything cleanly: the feed first, then the worker drains what it holds, then
    Redis. A stack that cannot start (the HTTP port taken, Redis refusing the credentials, a bundle that does not
    verify) is one line and exit 2."""
    context = get_context(ctx)
    console = context.console
    _check_port_free(http_addr)
    # Its own process groups: a terminal's Ctrl-C reaches `up` alone, which stops the worker with one SIGTERM, then
    # Redis. So `up` must stop them on every way out: SIGTERM and SIGHUP are turned into the same clean stop.
    stack = LocalStack(workers=workers, redis_url=context.redis_url if external_redis else None,
                       http_addrs=(http_addr,), own_process_groups=True, log_dir=log_dir)
    with _signals_as_interrupt():
        try:
            with console.status("starting Redis and the worker (loading and warming the models)…"):
                stack.start()
        except WorkerStartError as exc:
            stack.close()
            raise CtlError(exc.summary, ExitCode.CRITICAL) from None
        except BaseException:
            stack.close()
            raise
        _run(stack, console, duration=duration, rate=rate, seed=seed, logs_kept=log_dir is not None)


def _run(stack: LocalStack, console: Console, *, duration: float | None, rate: float, seed: int,
         logs_kept: bool) -> None:
    # The address the worker bound, as it logged it: with --http-addr HOST:0 the port is only known now.
    served = ", ".join(process.http_url or process.http_addr for process in stack.processes)
    console.print(f"Redis at {stack.url}; worker HTTP on {served}; feeding {rate:g} events/s")
    logs = ", ".join(str(process.log_path) for process in stack.processes)
    console.print(f"worker log: {plain(logs)}" + ("" if logs_kept else " (removed on exit; --log-dir keeps it)"),
                  soft_wrap=True)
    # Timeouts on both clients: a partition (no refusal, no answer) shows as an outage instead of freezing the view.
    client = connect(stack.url, client_name="tacticalctl-up", read_timeout_s=DECISIONS_BLOCK_MS / 1000)
    stop = threading.Event()
    totals = {"sent": 0, "decided": 0, "executed": 0, "commands": 0, "dead": 0}

    def count_sent(batch: int) -> None:
        totals["sent"] += batch

    feeder = threading.Thread(
        target=_feed_through_outages, name="feed", daemon=True,
        args=(connect(stack.url, client_name="tacticalctl-up-feed"), simulated_events(seed, id_prefix=run_id())),
        kwargs={"rate": rate, "stop": stop, "on_sent": count_sent},
    )
    rows: deque[tuple[str, ...]] = deque(maxlen=SHOWN_ROWS)
    started = time.monotonic()
    last_id = b"0-0"
    codes: list[int | None] = []
    try:
        # From the stream's last entry now, before the feed starts: XREAD from "$" would miss every decision
        # committed between two reads until one was seen.
        last_id = newest_id(client, DECISIONS_STREAM) or last_id
        # Likewise what the view counts is what came after it started: an external Redis has older entries.
        commands_before, dead_before = _length(client, COMMANDS_STREAM), _length(client, DEAD_LETTER_STREAM)
        feeder.start()
        with Live(render(rows, totals, 0.0), console=console, refresh_per_second=8) as live:
            while duration is None or time.monotonic() - started < duration:
                try:
                    decided = read_after(client, DECISIONS_STREAM, last_id, count=200, block_ms=DECISIONS_BLOCK_MS)
                    last_id = _take_decisions(decided, last_id, totals, rows)
                    totals["commands"] = max(0, client.xlen(COMMANDS_STREAM) - commands_before)  # 0 if trimmed
                    totals["dead"] = max(0, client.xlen(DEAD_LETTER_STREAM) - dead_before)
                except REDIS_FAILED as exc:  # Redis restarting, or refusing (a key of another type under a stream
                    # name): the worker rides it out, so does up's view, saying so; the stack keeps running
                    live.update(render(rows, totals, time.monotonic() - started, outage_message(exc, RETRY_S)))
                    time.sleep(RETRY_S)
                    continue
                live.update(render(rows, totals, time.monotonic() - started))
    except KeyboardInterrupt:
        pass
    finally:
        if not console.is_terminal:
            console.line()  # off a terminal, the live view's last frame ends without one
        stop.set()
        if feeder.ident is not None:  # started: an error before that (Redis refusing the first read) is what is said
            feeder.join(timeout=5)
        try:
            with console.status("stopping: the worker drains what it holds (Ctrl-C again: stop at once)…"):
                codes = stack.stop_workers()
        except KeyboardInterrupt:  # impatient: kill the workers (what they hold stays pending), stop Redis
            for process in stack.processes:
                process.kill()
            codes = [process.poll() for process in stack.processes]
        finally:
            try:  # what the workers committed while draining counts in the summary too
                while decided := read_after(client, DECISIONS_STREAM, last_id, count=1000):
                    last_id = _take_decisions(decided, last_id, totals, rows)
            except REDIS_FAILED:
                pass  # Redis gone (an external one restarting): the summary says what was seen
            client.close()
            try:
                _show_failed_workers_logs(stack, codes, console)  # before close() removes a temporary one
            finally:
                stack.close()
    console.print(f"stopped after {time.monotonic() - started:.1f}s: sent {totals['sent']}, decided "
                  f"{totals['decided']}, executed {totals['executed']}; worker exit codes {codes}")


def _show_failed_workers_logs(stack: LocalStack, codes: list[int | None], console: Console,
                              lines: int = 20) -> None:
    """The end of the log of each worker that did not exit cleanly, where the operator is looking."""
    for process, code in zip(stack.processes, codes, strict=False):
        if code not in (0, None):
            console.print(f"worker {plain(process.consumer)} exited with {code}; the end of its log "
                          f"({plain(str(process.log_path))}):", style="bold red", soft_wrap=True)
            console.print(plain("\n".join(_last_lines(process.log_path, lines))), soft_wrap=True, highlight=False)


def _last_lines(path: Path, count: int, chunk: int = 64 * 1024) -> list[str]:
    """The last `count` lines of a file, reading only its end (a worker's log can be large)."""
    try:
        with path.open("rb") as log:
            log.seek(0, 2)
            log.seek(max(0, log.tell() - chunk))
            return log.read().decode(errors="replace").splitlines()[-count:]
    except OSError:
        return []


def _length(client: redis.Redis, stream: str) -> int:
    """XLEN, 0 for a key of another type under the stream's name: the view says so when it counts that stream."""
    try:
        return int(client.xlen(stream))
    except redis.ResponseError:
        return 0


def _take_decisions(decided: list[Entry], last_id: bytes, totals: dict[str, int],
                    rows: deque[tuple[str, ...]]) -> bytes:
    """Count decisions read into `totals` and the view's rows; the id to read on from."""
    for decision_id, fields in decided:
        last_id = decision_id
        totals["decided"] += 1
        totals["executed"] += fields.get(b"execute") == b"1"
        rows.appendleft(decision_row(fields[b"event_id"], decision_id, fields))
    return last_id


def _feed_through_outages(client: redis.Redis, events: Iterator, *, rate: float, stop: threading.Event,
                          on_sent: Callable[[int], None]) -> None:
    """The simulated feed, paused while Redis is unreachable or refuses writes: once Redis answers it resumes with what
    of the batch in flight it does not find in the stream, on a new schedule (no burst to catch up). Nothing is lost;
    what of that batch landed unseen comes back as duplicates, acked by the worker without a second decision."""
    try:  # where to look for what a batch cut short by an outage wrote: after the stream's last entry now
        start: bytes | None = newest_id(client, INPUT_STREAM) or b"0-0"
    except redis.RedisError:
        start = None  # not known: until a batch lands, a batch cut short is sent again whole
    feed = ResumableFeed(events, written_after=start)
    while not stop.is_set():
        try:
            send_events(client, feed, rate=rate, stop=stop, on_sent=on_sent)
            return
        except FeedOutage as exc:
            if isinstance(exc.cause, redis.AuthenticationError):
                return  # the view's next read reports it and ends `up`
            outage = exc
        while not stop.wait(RETRY_S):
            try:
                client.ping()  # cheaper than a try of the feed, which would send its batch again each time
                break
            except REDIS_UNREACHABLE:
                continue
        else:
            return
        if landed := feed.resume(client, outage):
            on_sent(landed)  # in the stream: sent, to be decided once


def _check_port_free(http_addr: str) -> None:
    """Fail in a second, not after the models have loaded: the default port is a running worker's too."""
    host, _, port = http_addr.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise CtlError(f"--http-addr {http_addr!r} is not HOST:PORT", ExitCode.UNKNOWN) from None
    if number == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the worker's server binds: a port left in TIME_WAIT by a closed connection is free to it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host or "127.0.0.1", number))
        except OSError as exc:
            raise CtlError(f"cannot serve the worker's HTTP on {http_addr} ({exc.strerror}): a worker running there "
                           "already? Pass --http-addr 127.0.0.1:0 for a free port", ExitCode.CRITICAL) from None


@contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM (a supervisor, `kill`) and SIGHUP (the terminal or SSH session gone) stop `up` the way Ctrl-C does:
    nothing it started is left running."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def register(app: typer.Typer) -> None:
    app.command()(up)
