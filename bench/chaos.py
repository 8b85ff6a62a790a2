"""The chaos soak: worker processes share the consumer group over a bounded number of events while a random ready
worker is SIGKILLed and restarted every few hundred ms (or, now and then, stalled with SIGSTOP past the reclaim idle
time and resumed, so its entries are taken over while it still holds them) and Redis (AOF, `appendfsync always`) is
restarted, by SIGKILL and by SIGTERM in turn. Then Redis itself is counted: every acknowledged send decided exactly
once or dead-lettered, no command twice or for a decision that did not execute, nothing pending, nothing undelivered.

    python -m bench.chaos --events 20000 --workers 3 [--json]

Exit code 0 when the counts hold, 1 when any does not (each violation is named), 2 when the soak could not run.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bench.workload import Workload
from worker.connection import REDIS_UNREACHABLE
from worker.embedded_redis import EmbeddedRedisError
from worker.feed import run_id
from worker.names import COMMANDS_STREAM, CONSUMER_GROUP, DEAD_LETTER_STREAM, DECISIONS_STREAM, INPUT_STREAM
from worker.process import READY_MARK, WorkerProcess, WorkerStartError
from worker.redis_text import as_text
from worker.stack import LocalStack
from worker.stream_entries import entries, paged

log = logging.getLogger("tactical.chaos")

SOAK_RESTART_LIMIT = 1_000_000  # the soak restarts workers on purpose: the breaker must not count that as a fault
SEND_CHUNK = 50
READ_PAGE = 2000
POLL_S = 0.02
STARTUP_TIMEOUT_S = 120.0
INVALID_MATRIX = np.full((60, 7), np.nan, dtype="<f4").tobytes()  # a valid id with a NaN matrix: must dead-letter


class ChaosConfigError(ValueError):
    """A soak option is out of range; the message names it."""


@dataclass(frozen=True)
class ChaosConfig:
    events: int = 20_000
    workers: int = 3
    rate: float = 1000.0  # events/s the producer offers
    kill_interval_ms: tuple[int, int] = (200, 600)  # a fault every uniform(min, max) ms, to a worker that is ready
    redis_restarts: int = 4  # spread over the sends; SIGKILL, SIGTERM, SIGKILL, ...
    redis_down_ms: int = 500
    stall_fraction: float = 0.2  # share of the worker faults that are a SIGSTOP/SIGCONT stall instead of a SIGKILL
    min_worker_kills: int = 0  # keep killing after the last send until this many (a slow machine restarts slowly)
    invalid_every: int = 100  # every Nth event carries a NaN matrix and must be dead-lettered; 0: none
    max_seconds: float = 600.0  # the whole run, startup to count; then it stops and counts what it has
    seed: int = 0
    batch_size: int = 50
    claim_min_idle_ms: int = 1000
    claim_interval_ms: int = 200
    worker_settings: dict[str, str] = field(default_factory=dict)  # extra TACTICAL_* for the workers, by setting
    pool_size: int = 256
    run_dir: Path | None = None  # keep the worker and Redis logs here; default a temporary directory

    def __post_init__(self) -> None:
        low, high = self.kill_interval_ms
        checks = [
            (self.events >= 1, f"--events must be at least 1, got {self.events}"),
            (1 <= self.workers <= 16, f"--workers must be 1..16, got {self.workers}"),
            (self.rate > 0, f"--rate must be > 0 events/s, got {self.rate}"),
            (0 < low <= high, f"--kill-interval-ms needs 0 < MIN <= MAX, got {low} {high}"),
            (self.redis_restarts >= 0, f"--redis-restarts must be >= 0, got {self.redis_restarts}"),
            (self.redis_down_ms >= 0, f"--redis-down-ms must be >= 0, got {self.redis_down_ms}"),
            (0.0 <= self.stall_fraction <= 1.0, f"--stall-fraction must be in [0, 1], got {self.stall_fraction}"),
            (self.min_worker_kills >= 0, f"--min-kills must be >= 0, got {self.min_worker_kills}"),
            (self.invalid_every >= 0, f"--invalid-every must be >= 0, got {self.invalid_every}"),
            (self.max_seconds > 0, f"--max-seconds must be > 0, got {self.max_seconds}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ChaosConfigError(message)

    def soak_worker_settings(self) -> dict[str, str]:
        """What the workers run with: the breaker must tolerate the deliberate restarts, and reclaims must come
        within the run."""
        return {
            "breaker_restart_limit": str(SOAK_RESTART_LIMIT),
            "claim_min_idle_ms": str(self.claim_min_idle_ms),
            "claim_interval_ms": str(self.claim_interval_ms),
            "batch_size": str(self.batch_size),
            **self.worker_settings,
        }


# ---- counting ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamTally:
    """What Redis holds at the end, by correlation id (dead letters also by the entry they came from)."""

    decided: Counter[str]
    executed: Counter[str]
    commands: Counter[str]
    dead: Counter[str]
    dead_entries: Counter[str]
    dead_reasons: Counter[str]
    input_entries: int
    pending: int
    undelivered: int


@dataclass(frozen=True)
class ChaosCounts:
    sent: int  # acknowledged by XADD (distinct correlation ids)
    sent_invalid: int
    input_entries: int  # more than `sent` when a send was retried after Redis applied it but the reply was lost
    decided: int
    executed: int
    dead_lettered: int
    lost: int  # sent ids neither decided nor dead-lettered
    duplicate_decisions: int
    duplicate_commands: int
    commands_without_execution: int
    duplicate_dead_letters: int  # one stream entry dead-lettered more than once
    invalid_decided: int  # an event with a NaN matrix was decided instead of dead-lettered
    unknown_ids: int  # decided or dead-lettered ids the producer never had acknowledged
    pending: int
    undelivered: int
    dead_reasons: dict[str, int]

    def violations(self) -> list[str]:
        problems = {
            "lost": self.lost,
            "duplicate_decisions": self.duplicate_decisions,
            "duplicate_commands": self.duplicate_commands,
            "commands_without_execution": self.commands_without_execution,
            "duplicate_dead_letters": self.duplicate_dead_letters,
            "invalid_decided": self.invalid_decided,
            "pending": self.pending,
            "undelivered": self.undelivered,
        }
        return [f"{name} = {value}" for name, value in problems.items() if value]


def chaos_counts(sent: Collection[str], invalid: Collection[str], tally: StreamTally) -> ChaosCounts:
    """The soak's verdict from what was sent and what Redis holds."""
    sent_ids = set(sent)
    accounted = set(tally.decided) | set(tally.dead)
    executed_ids = {cid for cid, n in tally.executed.items() if n}
    return ChaosCounts(
        sent=len(sent_ids),
        sent_invalid=len(set(invalid)),
        input_entries=tally.input_entries,
        decided=len(tally.decided),
        executed=len(executed_ids),
        dead_lettered=len(tally.dead),
        lost=len(sent_ids - accounted),
        duplicate_decisions=_extra(tally.decided),
        duplicate_commands=_extra(tally.commands),
        commands_without_execution=sum(n for cid, n in tally.commands.items() if cid not in executed_ids),
        duplicate_dead_letters=_extra(tally.dead_entries),
        invalid_decided=len(set(invalid) & set(tally.decided)),
        unknown_ids=len(accounted - sent_ids),
        pending=tally.pending,
        undelivered=tally.undelivered,
        dead_reasons=dict(tally.dead_reasons),
    )


def _extra(counter: Counter[str]) -> int:
    return sum(n - 1 for n in counter.values() if n > 1)


def read_tally(client: redis.Redis) -> StreamTally:
    decided: Counter[str] = Counter()
    executed: Counter[str] = Counter()
    for fields in _scan(client, DECISIONS_STREAM):
        cid = as_text(fields.get(b"correlation_id"))
        decided[cid] += 1
        if fields.get(b"execute") == b"1":
            executed[cid] += 1
    commands = Counter(as_text(fields.get(b"correlation_id")) for fields in _scan(client, COMMANDS_STREAM))
    dead: Counter[str] = Counter()
    dead_entries: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for fields in _scan(client, DEAD_LETTER_STREAM):
        dead[as_text(fields.get(b"correlation_id"))] += 1
        dead_entries[as_text(fields.get(b"dead_entry_id"))] += 1
        reasons[as_text(fields.get(b"dead_reason")).split(":", 1)[0]] += 1
    pending, undelivered = backlog(client)
    return StreamTally(decided, executed, commands, dead, dead_entries, reasons,
                       int(client.xlen(INPUT_STREAM)), pending, undelivered)


def backlog(client: redis.Redis) -> tuple[int, int]:
    """(pending, undelivered) of the worker group: both 0 means no entry is in anyone's hands or still to read."""
    pending = int(client.xpending(INPUT_STREAM, CONSUMER_GROUP)["pending"])
    group = next(g for g in client.xinfo_groups(INPUT_STREAM) if g["name"] == CONSUMER_GROUP.encode())
    if group.get("lag") is not None:
        return pending, int(group["lag"])
    after = b"(" + group["last-delivered-id"]
    return pending, len(entries(client, INPUT_STREAM, lower=after, count=1))


def _scan(client: redis.Redis, stream: str) -> Iterator[dict[bytes, bytes]]:
    for _, fields in paged(client, stream, page=READ_PAGE):
        yield fields


# ---- the producer --------------------------------------------------------------------------------------------------
def pause_before_next(index: int, rate: float, elapsed_s: float) -> float:
    """How long the producer sleeps before event `index` is due: at most 10 ms (it checks for a stop that often),
    never negative (the event may have fallen due since the caller looked at the clock)."""
    return max(0.0, min(0.01, (index + 1) / rate - elapsed_s))


class AcknowledgedProducer:
    """Sends the events at a paced rate in small pipelined chunks. A chunk that fails (Redis restarting) is sent again
    until Redis acknowledges it; only acknowledged ids count as sent. A chunk that Redis applied before the connection
    broke is applied twice: the copies share correlation ids, which the worker must treat as duplicates."""

    def __init__(self, url: str, workload: Workload, config: ChaosConfig, tag: str) -> None:
        self.client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=5.0)
        self.workload = workload
        self.config = config
        self.tag = tag
        self.sent: list[str] = []
        self.invalid: list[str] = []
        self.retries = 0
        self.elapsed_s = 0.0
        self.error: BaseException | None = None

    def correlation_id(self, index: int) -> str:
        return f"chaos-{self.tag}-{index}"

    def fields(self, index: int) -> dict[bytes, bytes]:
        fields = self.workload.fields(index, self.correlation_id(index))
        if self.is_invalid(index):
            fields[b"matrix"] = INVALID_MATRIX
        return fields

    def is_invalid(self, index: int) -> bool:
        every = self.config.invalid_every
        return every > 0 and index % every == every - 1

    def run(self, deadline: float, stop: threading.Event) -> None:
        try:
            self._run(deadline, stop)
        except BaseException as exc:  # reported by the soak, not lost in a thread
            self.error = exc
        finally:
            self.client.close()

    def _run(self, deadline: float, stop: threading.Event) -> None:
        started = time.monotonic()
        index = 0
        while index < self.config.events and not stop.is_set() and time.monotonic() < deadline:
            self.elapsed_s = time.monotonic() - started
            due = int((time.monotonic() - started) * self.config.rate) + 1
            count = min(due - index, SEND_CHUNK, self.config.events - index)
            if count <= 0:
                time.sleep(pause_before_next(index, self.config.rate, time.monotonic() - started))
                continue
            chunk = range(index, index + count)
            if self._send(chunk, deadline, stop):
                self.sent.extend(self.correlation_id(i) for i in chunk)
                self.invalid.extend(self.correlation_id(i) for i in chunk if self.is_invalid(i))
                index += count
        self.elapsed_s = time.monotonic() - started

    def _send(self, chunk: range, deadline: float, stop: threading.Event) -> bool:
        delay = 0.02
        while not stop.is_set() and time.monotonic() < deadline:
            pipe = self.client.pipeline(transaction=False)
            for i in chunk:
                pipe.xadd(INPUT_STREAM, self.fields(i))  # type: ignore[arg-type]
            try:
                pipe.execute()
                return True
            except REDIS_UNREACHABLE:
                self.retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        return False


# ---- the faults ----------------------------------------------------------------------------------------------------
@dataclass
class WorkerSlot:
    index: int
    process: WorkerProcess
    ready: bool = False
    stalled_until: float | None = None  # SIGSTOPped until then

    def check_ready(self) -> bool:
        if not self.ready and self.process.poll() is None:
            self.ready = READY_MARK in self.process.log_text()
        return self.ready

    @property
    def faultable(self) -> bool:
        return self.stalled_until is None and self.check_ready()


@dataclass
class FaultCounts:
    worker_kills: int = 0
    worker_stalls: int = 0
    worker_starts: int = 0
    unexpected_worker_exits: int = 0
    redis_sigterm_restarts: int = 0
    redis_sigkill_restarts: int = 0
    exit_logs: list[str] = field(default_factory=list)  # the end of each unexpected exit's log


class ChaosDriver:
    """Kills (or stalls) a random ready worker and starts its replacement (or resumes it when the stall is over);
    restarts Redis; restarts any worker that exits by itself and keeps the end of its log: a worker should never exit
    on its own."""

    def __init__(self, stack: LocalStack, rng: random.Random) -> None:
        self.stack = stack
        self.rng = rng
        self.faults = FaultCounts()
        self.slots = [WorkerSlot(i, process, ready=True) for i, process in enumerate(stack.processes)]

    def tend(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for slot in self.slots:
            if slot.stalled_until is not None and now >= slot.stalled_until:
                self._resume(slot)
            code = slot.process.poll()
            if code is not None:
                self.faults.unexpected_worker_exits += 1
                self.faults.exit_logs.append(f"{slot.process.consumer} exited {code}:\n"
                                             + slot.process.log_text()[-2000:])
                log.warning("worker %s exited by itself with %s", slot.process.consumer, code)
                self._replace(slot)
            else:
                slot.check_ready()

    def kill_random_worker(self) -> bool:
        slot = self._pick()
        if slot is None:
            return False
        slot.process.kill()
        self.faults.worker_kills += 1
        self._replace(slot)
        return True

    def stall_random_worker(self, seconds: float) -> bool:
        """SIGSTOP a worker: its entries go idle and are reclaimed while it still holds them; SIGCONT later."""
        slot = self._pick()
        if slot is None:
            return False
        slot.process.signal(signal.SIGSTOP)
        slot.stalled_until = time.monotonic() + seconds
        self.faults.worker_stalls += 1
        return True

    def resume_all(self) -> None:
        for slot in self.slots:
            if slot.stalled_until is not None:
                self._resume(slot)

    def _resume(self, slot: WorkerSlot) -> None:
        slot.process.signal(signal.SIGCONT)
        slot.stalled_until = None

    def _pick(self) -> WorkerSlot | None:
        candidates = [slot for slot in self.slots if slot.faultable]
        return self.rng.choice(candidates) if candidates else None

    def _replace(self, slot: WorkerSlot) -> None:
        slot.process = self.stack.start_worker(slot.index, wait_ready_s=0)
        slot.ready = False
        self.faults.worker_starts += 1

    def restart_redis(self, *, kill: bool, down_s: float) -> None:
        assert self.stack.redis is not None
        log.info("restarting Redis (%s), down %.2fs", "SIGKILL" if kill else "SIGTERM", down_s)
        self.stack.redis.restart(kill=kill, down_for_s=down_s)
        if kill:
            self.faults.redis_sigkill_restarts += 1
        else:
            self.faults.redis_sigterm_restarts += 1


# ---- the run -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChaosReport:
    config: dict[str, Any]
    counts: ChaosCounts
    faults: FaultCounts
    producer_retries: int
    elapsed_s: float
    send_s: float
    settle_s: float
    settled: bool

    @property
    def violations(self) -> list[str]:
        problems = self.counts.violations()
        if not self.settled:
            problems.append("the group did not settle (entries pending or undelivered) within --max-seconds")
        if self.faults.unexpected_worker_exits:
            problems.append(f"{self.faults.unexpected_worker_exits} workers exited by themselves (see their logs)")
        if self.counts.sent < self.config["events"]:
            problems.append(f"only {self.counts.sent} of {self.config['events']} events sent within --max-seconds")
        return problems

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "violations": self.violations,
            "counts": asdict(self.counts),
            "faults": {k: v for k, v in asdict(self.faults).items() if k != "exit_logs"},
            "unexpected_exit_logs": self.faults.exit_logs,
            "producer_retries": self.producer_retries,
            "elapsed_s": round(self.elapsed_s, 2),
            "send_s": round(self.send_s, 2),
            "settle_s": round(self.settle_s, 2),
            "settled": self.settled,
            "config": self.config,
        }


def run_chaos(config: ChaosConfig, *, progress: Callable[[str], None] = lambda line: None) -> ChaosReport:
    """Run the soak once, within `config.max_seconds`, and count the result from Redis."""
    started = time.monotonic()
    deadline = started + config.max_seconds
    rng = random.Random(config.seed)
    workload = Workload.simulated(config.pool_size, seed=config.seed)
    stack = LocalStack(workers=config.workers, worker_settings=config.soak_worker_settings(),
                       run_dir=config.run_dir, redis_fsync_always=True)
    try:
        stack.start(wait_ready_s=STARTUP_TIMEOUT_S)
        progress(f"{config.workers} workers ready in {time.monotonic() - started:.1f}s; logs in {stack.run_dir}")
        driver = ChaosDriver(stack, rng)
        producer = AcknowledgedProducer(stack.url, workload, config, run_id())
        stop = threading.Event()
        sender = threading.Thread(target=producer.run, args=(deadline, stop), name="chaos-producer", daemon=True)
        sender.start()
        try:
            _make_chaos(config, driver, producer, sender, rng, deadline, progress)
        finally:
            stop.set()
            sender.join(timeout=30)
            driver.resume_all()
        if producer.error is not None:
            raise producer.error
        progress(f"sent {len(producer.sent)} in {producer.elapsed_s:.1f}s ({producer.retries} resends); settling")
        settle_started = time.monotonic()
        settled = _settle(stack.url, driver, deadline)
        settle_s = time.monotonic() - settle_started
        tally = _with_redis(stack.url, read_tally)
    finally:
        stack.close()
    return ChaosReport(
        config={**asdict(config), "run_dir": str(config.run_dir) if config.run_dir else None},
        counts=chaos_counts(producer.sent, producer.invalid, tally),
        faults=driver.faults,
        producer_retries=producer.retries,
        elapsed_s=time.monotonic() - started,
        send_s=producer.elapsed_s,
        settle_s=settle_s,
        settled=settled,
    )


def _make_chaos(config: ChaosConfig, driver: ChaosDriver, producer: AcknowledgedProducer, sender: threading.Thread,
                rng: random.Random, deadline: float, progress: Callable[[str], None]) -> None:
    """Faults until the producer is done (and `min_worker_kills` reached): Redis restarts at even shares of the
    sends, worker kills and stalls in between."""
    restart_marks = [config.events * (k + 1) // (config.redis_restarts + 1) for k in range(config.redis_restarts)]
    low, high = config.kill_interval_ms
    next_kill = time.monotonic() + rng.uniform(low, high) / 1e3
    while (sender.is_alive() or driver.faults.worker_kills < config.min_worker_kills) and time.monotonic() < deadline:
        driver.tend()
        if restart_marks and len(producer.sent) >= restart_marks[0]:
            restart_marks.pop(0)
            done = driver.faults.redis_sigkill_restarts + driver.faults.redis_sigterm_restarts
            driver.restart_redis(kill=done % 2 == 0, down_s=config.redis_down_ms / 1e3)
            progress(f"Redis restarted ({'SIGKILL' if done % 2 == 0 else 'SIGTERM'}) at {len(producer.sent)} sent")
        elif time.monotonic() >= next_kill:
            if rng.random() < config.stall_fraction:
                idle_s = config.claim_min_idle_ms / 1e3
                driver.stall_random_worker(rng.uniform(1.5 * idle_s, 3.0 * idle_s))
            else:
                driver.kill_random_worker()
            next_kill = time.monotonic() + rng.uniform(low, high) / 1e3
        time.sleep(POLL_S)


def _settle(url: str, driver: ChaosDriver, deadline: float) -> bool:
    """No more faults: wait until nothing is pending and nothing undelivered (or the deadline)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=5.0)
    try:
        while time.monotonic() < deadline:
            driver.tend()
            try:
                if backlog(client) == (0, 0):
                    return True
            except REDIS_UNREACHABLE:
                pass
            time.sleep(0.1)
        return False
    finally:
        client.close()


def _with_redis(url: str, read: Callable[[redis.Redis], StreamTally]) -> StreamTally:
    client = redis.Redis.from_url(url, socket_timeout=30.0)
    try:
        return read(client)
    finally:
        client.close()


# ---- the command line ----------------------------------------------------------------------------------------------
def render(report: ChaosReport) -> str:
    c, f = report.counts, report.faults
    lines = [
        f"chaos soak: {report.config['events']} events, {report.config['workers']} workers, "
        f"{report.elapsed_s:.1f}s (send {report.send_s:.1f}s, settle {report.settle_s:.1f}s)",
        f"  faults            {f.worker_kills} worker SIGKILLs ({f.worker_starts} restarts), {f.worker_stalls} stalls, "
        f"Redis restarts {f.redis_sigkill_restarts} SIGKILL + {f.redis_sigterm_restarts} SIGTERM, "
        f"{f.unexpected_worker_exits} unexpected worker exits, {report.producer_retries} producer resends",
        f"  sent              {c.sent} ({c.sent_invalid} invalid on purpose; {c.input_entries} stream entries)",
        f"  decided           {c.decided} ({c.executed} executed)",
        f"  dead-lettered     {c.dead_lettered} {dict(sorted(c.dead_reasons.items()))}",
        f"  lost              {c.lost}",
        f"  duplicate decisions {c.duplicate_decisions}, duplicate commands {c.duplicate_commands}, "
        f"commands without an executed decision {c.commands_without_execution}, "
        f"duplicate dead letters {c.duplicate_dead_letters}",
        f"  pending at end    {c.pending} (undelivered {c.undelivered})",
        "  result            " + ("OK" if report.ok else "FAILED: " + "; ".join(report.violations)),
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    d = ChaosConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description="Chaos soak: SIGKILL workers and restart Redis (AOF, appendfsync always) while events flow, "
        "then count from Redis: lost, duplicate decisions and commands, pending.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=d.events, help="events to send")
    parser.add_argument("--workers", type=int, default=d.workers, help="worker processes sharing the group")
    parser.add_argument("--rate", type=float, default=d.rate, help="events/s the producer offers")
    parser.add_argument("--kill-interval-ms", type=int, nargs=2, metavar=("MIN", "MAX"),
                        default=list(d.kill_interval_ms), help="a random ready worker is SIGKILLed every MIN..MAX ms")
    parser.add_argument("--redis-restarts", type=int, default=d.redis_restarts,
                        help="Redis restarts spread over the sends, SIGKILL and SIGTERM in turn")
    parser.add_argument("--redis-down-ms", type=int, default=d.redis_down_ms, help="how long Redis stays down")
    parser.add_argument("--stall-fraction", type=float, default=d.stall_fraction,
                        help="share of worker faults that SIGSTOP a worker past the reclaim idle time, then SIGCONT")
    parser.add_argument("--min-kills", type=int, default=d.min_worker_kills,
                        help="keep killing workers after the last send until this many were killed")
    parser.add_argument("--invalid-every", type=int, default=d.invalid_every,
                        help="every Nth event has a NaN matrix and must be dead-lettered (0: none)")
    parser.add_argument("--max-seconds", type=float, default=d.max_seconds, help="bound on the whole run")
    parser.add_argument("--seed", type=int, default=d.seed, help="seeds the workload and the fault schedule")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="worker XREADGROUP batch")
    parser.add_argument("--claim-min-idle-ms", type=int, default=d.claim_min_idle_ms,
                        help="workers reclaim entries idle this long (a killed worker's)")
    parser.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                        help="extra worker setting, e.g. --set max_deliveries=10 (repeatable)")
    parser.add_argument("--logs", type=Path, default=None, help="keep worker and Redis logs in this directory")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        extra = dict(_setting(item) for item in args.set)
        config = ChaosConfig(
            events=args.events, workers=args.workers, rate=args.rate, kill_interval_ms=tuple(args.kill_interval_ms),
            redis_restarts=args.redis_restarts, redis_down_ms=args.redis_down_ms,
            stall_fraction=args.stall_fraction, min_worker_kills=args.min_kills, invalid_every=args.invalid_every,
            max_seconds=args.max_seconds, seed=args.seed, batch_size=args.batch_size,
            claim_min_idle_ms=args.claim_min_idle_ms, worker_settings=extra, run_dir=args.logs,
        )
    except ChaosConfigError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    say = (lambda line: None) if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        report = run_chaos(config, progress=say)
    except (EmbeddedRedisError, WorkerStartError) as exc:
        print(f"chaos: the soak could not run: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=2) if args.json else render(report))
    return 0 if report.ok else 1


def _setting(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise ChaosConfigError(f"--set takes SETTING=VALUE, got {item!r}")
    return name.strip().lower().removeprefix("tactical_"), value


if __name__ == "__main__":
    raise SystemExit(main())
