"""Client-side round trips: from the producer's XADD to the reply being readable.

The producer stamps `perf_counter()` just before sending each correlation id; a reader thread blocks on the
target's output and stamps each correlation id as its reply arrives. The same driver measures the worker, the floor,
the reference loop and the Celery peer, so their figures compare like for like.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import redis

from bench.workload import Workload
from worker.stream_entries import newest_id, read_after

MAX_SEND_CHUNK = 200  # events per pipelined send when the producer is behind schedule (or under --max)
READ_COUNT = 1000
READ_BLOCK_MS = 100
SWITCH_INTERVAL_S = 0.0002  # the reader thread must not wait 5 ms (the default) for the producer's GIL


class RoundTripError(RuntimeError):
    """A target did not answer; the message says which and what to look at."""


class Target(Protocol):
    """Something events are sent to and whose replies can be read back by correlation id."""

    name: str

    def send(self, items: Sequence[tuple[str, Mapping[bytes, bytes]]]) -> None: ...

    def receive(self, block_ms: int) -> list[str]:
        """Correlation ids whose replies became readable; waits up to `block_ms` for the first."""
        ...

    def close(self) -> None: ...


class StreamTarget:
    """XADD to `input_stream`; replies are entries of `output_stream` carrying a top-level `correlation_id`."""

    def __init__(self, name: str, redis_url: str, input_stream: str, output_stream: str) -> None:
        self.name = name
        self.input_stream = input_stream
        self.output_stream = output_stream
        self._sender = redis.Redis.from_url(redis_url)
        self._reader = redis.Redis.from_url(redis_url, socket_timeout=READ_BLOCK_MS / 1e3 + 10)
        self._last_id: bytes | str = newest_id(self._reader, output_stream) or "0-0"

    def send(self, items: Sequence[tuple[str, Mapping[bytes, bytes]]]) -> None:
        if len(items) == 1:
            self._sender.xadd(self.input_stream, items[0][1])  # type: ignore[arg-type]
            return
        pipe = self._sender.pipeline(transaction=False)
        for _, fields in items:
            pipe.xadd(self.input_stream, fields)  # type: ignore[arg-type]
        pipe.execute()

    def receive(self, block_ms: int) -> list[str]:
        entries = read_after(self._reader, self.output_stream, self._last_id, count=READ_COUNT, block_ms=block_ms)
        if not entries:
            return []
        self._last_id = entries[-1][0]
        return [fields[b"correlation_id"].decode() for _, fields in entries if b"correlation_id" in fields]

    def close(self) -> None:
        self._sender.close()
        self._reader.close()


@dataclass(frozen=True)
class Load:
    """A fixed `rate` per second, or (rate None) as fast as the target takes them with `backlog` in flight."""

    rate: float | None
    duration_s: float
    backlog: int = 1000

    def __post_init__(self) -> None:
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be > 0 events/s, got {self.rate}")
        if self.duration_s <= 0:
            raise ValueError(f"duration must be > 0 s, got {self.duration_s}")
        if self.backlog < 1:
            raise ValueError(f"backlog must be at least 1, got {self.backlog}")


@dataclass(frozen=True)
class RoundTrips:
    target: str
    latencies_s: tuple[float, ...]  # one per completed event, in no particular order
    sent: int
    elapsed_s: float  # first send → last reply (or → end of sending when nothing came back)

    @property
    def completed(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput_eps(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0


@contextmanager
def _short_switch_interval() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


class _Replies:
    """The reader thread: stamps each expected correlation id when its reply is read."""

    def __init__(self, target: Target, sent_at: Mapping[str, float]) -> None:
        self.target = target
        self.sent_at = sent_at
        self.done_at: dict[str, float] = {}
        self.progress = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"replies-{target.name}", daemon=True)

    def start(self) -> _Replies:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                ids = self.target.receive(READ_BLOCK_MS)
                now = time.perf_counter()
                for correlation_id in ids:
                    if correlation_id in self.sent_at and correlation_id not in self.done_at:
                        self.done_at[correlation_id] = now
                if ids:
                    self.progress.set()
        except BaseException as exc:  # reported to the measuring thread, which raises it
            self.error = exc
            self.progress.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=READ_BLOCK_MS / 1e3 * 5 + 10)

    def check(self) -> None:
        if self.error is not None:
            raise RoundTripError(f"reading replies from {self.target.name} failed: {self.error}") from self.error


def measure_round_trips(
    target: Target,
    workload: Workload,
    load: Load,
    id_prefix: str,
    *,
    drain_timeout_s: float = 30.0,
    alive: Callable[[], None] = lambda: None,
) -> RoundTrips:
    """Send for `load.duration_s`, then wait (up to `drain_timeout_s`) for the replies still due.
    `alive` raises if the process behind the target died, so a crash is reported rather than timed out."""
    sent_at: dict[str, float] = {}
    replies = _Replies(target, sent_at)
    sent = 0
    with _short_switch_interval():
        replies.start()
        try:
            started = time.perf_counter()
            deadline = started + load.duration_s
            while (now := time.perf_counter()) < deadline:
                replies.check()
                if load.rate is not None:
                    due = int((now - started) * load.rate) + 1 - sent
                    if due <= 0:
                        time.sleep(min((sent + 1) / load.rate - (now - started), 0.002))
                        continue
                else:
                    due = load.backlog - (sent - len(replies.done_at))
                    if due <= 0:
                        replies.progress.wait(0.005)
                        replies.progress.clear()
                        continue
                count = min(due, MAX_SEND_CHUNK)
                ids = [f"{id_prefix}-{sent + k}" for k in range(count)]
                items = [(cid, workload.fields(sent + k, cid)) for k, cid in enumerate(ids)]
                stamp = time.perf_counter()
                for cid in ids:
                    sent_at[cid] = stamp
                target.send(items)
                sent += count
            sending_ended = time.perf_counter()
            drain_deadline = sending_ended + drain_timeout_s
            while len(replies.done_at) < sent and time.perf_counter() < drain_deadline:
                replies.check()
                alive()
                replies.progress.wait(0.05)
                replies.progress.clear()
        finally:
            replies.stop()
    replies.check()
    done = replies.done_at
    latencies = tuple(done[cid] - sent_at[cid] for cid in done)
    last = max(done.values()) if done else sending_ended
    return RoundTrips(target=target.name, latencies_s=latencies, sent=sent, elapsed_s=last - started)


def wait_until_answering(
    target: Target,
    workload: Workload,
    id_prefix: str,
    *,
    timeout_s: float,
    alive: Callable[[], None] = lambda: None,
) -> None:
    """Send one probe and wait for its reply: the target is up, connected and warm enough to answer."""
    sent_at: dict[str, float] = {}
    replies = _Replies(target, sent_at).start()
    try:
        cid = f"{id_prefix}-probe"
        sent_at[cid] = time.perf_counter()
        target.send([(cid, workload.fields(0, cid))])
        deadline = time.monotonic() + timeout_s
        while cid not in replies.done_at:
            replies.check()
            alive()
            if time.monotonic() > deadline:
                raise RoundTripError(f"{target.name} did not answer a probe event within {timeout_s:.0f}s")
            replies.progress.wait(0.05)
            replies.progress.clear()
    finally:
        replies.stop()
