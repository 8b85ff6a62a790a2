"""The worker's lifecycle: startup → main loop → shutdown (uvicorn's shape).

The main loop reads a batch, hands it to the pipeline, and between batches does the periodic work: reclaiming
entries stuck on dead consumers, heartbeats, model reloads, breaker resets. Signal handlers only set flags: the first
SIGTERM/SIGINT drains (the batch in hand is committed, nothing more is read), a second forces exit.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import redis

from worker.aggregator import AggregatorConfig
from worker.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    publish_breaker_state,
    record_restart,
    skip_earlier_reset_requests,
)
from worker.connection import (
    REDIS_FAILED,
    REDIS_FAILOVER,
    REDIS_REFUSING_WRITES,
    REDIS_UNREACHABLE,
    Backoff,
    RedisAuthError,
    connect,
    is_permission_refusal,
)
from worker.delivery import (
    DeliveryScripts,
    StreamNames,
    delete_consumers_without_pending,
    ensure_group,
    forgive_rereads,
    pending_delivery_counts,
)
from worker.group_reader import GroupReader, Message
from worker.heartbeat import Heartbeat
from worker.http_server import HealthServer
from worker.inference import AgentEnsemble, row_invariant_kernels
from worker.monitor import HealthMonitor
from worker.names import DEFAULT_DB
from worker.pipeline import BatchResult, EventPipeline, PipelineConfig, StageError, StreamEntry
from worker.redis_text import as_text
from worker.security import effective_settings
from worker.settings import WorkerSettings, redact_url
from worker.telemetry import Telemetry

log = logging.getLogger("tactical.worker")

# While a commit is in flight, a read waits this long at most for new events before the commit's reply is read: Redis
# runs the commit meanwhile, so at a steady trickle of events the worker decides the next one instead of waiting for
# the reply (at 1,000 events/s here, p50 −0.16 to −0.81 ms in paired runs, the more the busier the machine). The
# bound is how long an idle stream leaves results unrecorded.
IN_FLIGHT_BLOCK_MS = 5
# Batches short of a full one are recorded (metrics, window, books) together: with the first batch that settles once the
# first held has waited this long, or once a full batch's worth is held, the stream goes idle or the worker sleeps or
# stops. Recording a batch of one event costs ~80 µs, most of it fixed, and at a steady trickle (1,000 events/s, one
# event a batch) it took ~15 % of the worker's CPU and sat between one decision and the next read. Metrics lag the
# decisions by this, plus one read's wait with a commit in flight (IN_FLIGHT_BLOCK_MS): ~10 ms at most.
RECORD_HOLD_S = IN_FLIGHT_BLOCK_MS / 1e3
YOUNG_GC_THRESHOLD = 100_000  # allocations the young generation takes before a collection (default 700)
# A batch that failed: Redis's part, or a stage's (named: mypy reads no `*` in an except).
BATCH_FAILED: tuple[type[Exception], ...] = (*REDIS_FAILED, StageError)


class ForcedExit(BaseException):
    """A second shutdown signal: stop now, leaving unfinished entries pending for another consumer."""


@dataclass
class LoopState:
    started_at: float = 0.0
    should_exit: bool = False
    redis_up: bool = False
    read_own_pending: bool = True  # after a (re)connect, first finish what this consumer was given before
    # The re-read is this worker's own retry (Redis was unreachable or refused): it does not count against an
    # entry's max_deliveries, or a Redis outage would dead-letter sound events.
    retrying_own_pending: bool = False
    # Where the re-read of this consumer's pending entries goes on from. One pass reads each entry once: one that
    # fails again is left pending for the reclaim, where every try counts, not re-read (and never counted) for ever.
    own_pending_from: bytes | str = "0"
    reconnect_requested: bool = False
    next_reclaim: float = 0.0
    # What the loop is doing with Redis: a connection error is counted in tactical_errors_total under it.
    operation: str = "read"


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        aggregator: AggregatorConfig | None = None,
        streams: StreamNames | None = None,
        on_batch: Callable[[BatchResult], None] | None = None,
    ) -> None:
        self.settings = settings
        # What a backup records as this worker's configuration (passwords masked), sent with each heartbeat: the
        # operator taking the backup may not share the workers' environment. The settings are frozen: worked out once.
        self.shared_settings = effective_settings(settings)
        self.streams = streams or StreamNames()
        self.aggregator = aggregator or AggregatorConfig.from_env()
        self.on_batch = on_batch  # called with each batch once it is recorded (metrics, books): see hold_for_recording
        self.state = LoopState()
        self.client: redis.Redis | None = None
        self.ensemble: AgentEnsemble | None = None
        self.pipeline: EventPipeline | None = None
        self.reader: GroupReader | None = None
        self.telemetry = Telemetry(window_s=settings.stats_window_s)
        self.breaker = CircuitBreaker(BreakerConfig.from_settings(settings))
        self.breaker_lock = threading.Lock()
        self.restart_count = 0
        self.monitor: HealthMonitor | None = None
        self.http: HealthServer | None = None
        self.heartbeat: Heartbeat | None = None
        self._signals = 0
        self._shutting_down = False
        # The loop or the startup died of an exception: the heartbeat goes, its last beat stays for triage to name it.
        self._crashed = False
        # Entries read while the previous batch's commit had not gone out yet (`send_read_ahead`): the next step decides
        # them before reading again.
        self._read_ahead: list[StreamEntry] = []
        self._read_ahead_error: Exception | None = None  # raised once the batch decided before it is committed
        # Re-reads of own pending entries that were our retries, forgiven here only when Redis's count could not be
        # set back (an ACL user without XCLAIM): forgiven for this worker, not for another that takes them over.
        self._own_retries: Counter[bytes] = Counter()
        self._forgive_refused_logged = False
        self._batches_settled = 0  # commits whose reply was read: progress, for the backoff
        # Committed batches not recorded yet (RECORD_HOLD_S), and when the first came.
        self._unrecorded: list[BatchResult] = []
        self._unrecorded_since = 0.0
        self._batch_fallbacks = 0  # batches decided one event at a time since the last report of them
        self._last_fallback_error = ""
        self._next_fallback_report = 0.0
        self._held = contextlib.ExitStack()  # what startup() takes for the worker's life and shutdown() gives back

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def run(self) -> int:
        self.install_signal_handlers()
        try:
            self.startup()
            if not self.state.should_exit:
                self.main_loop()
        except ForcedExit:
            log.warning("forced exit: entries in hand stay pending and will be reclaimed by another consumer")
        except BaseException:
            self._crashed = True
            raise
        finally:
            # Giving back what startup took (threads, heartbeat, connections) is short and bounded: a signal now
            # does not cut it off halfway (handle_signal), or a forced exit would leave the heartbeat behind.
            self._shutting_down = True
            self.shutdown()
        return 1 if self._signals > 1 else 0

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.handle_signal)
        signal.signal(signal.SIGINT, self.handle_signal)

    def handle_signal(self, signum: int, frame: FrameType | None = None) -> None:
        self._signals += 1
        if self._signals > 1:
            if self._shutting_down:
                log.warning("%s received again: already stopping, exit 1 once the connections are given back",
                            signal.Signals(signum).name)
                return
            raise ForcedExit
        log.info("%s received: finishing the batch in hand, then exiting", signal.Signals(signum).name)
        self.state.should_exit = True

    def startup(self) -> None:
        s = self.settings
        self.state.started_at = time.monotonic()
        log.info("worker %s starting: redis %s, models %s", s.consumer, redact_url(s.redis_url), s.models_dir)
        # This process only serves: the kernels that keep an event's outputs independent of its batch stay selected
        # for its whole life, rather than being switched on and off (process-wide flags) around every forward pass,
        # ~6 µs a call. shutdown() switches them back.
        self._held.enter_context(row_invariant_kernels)
        self.ensemble = self.load_models()
        self.telemetry.metrics.set_model(self.ensemble.version, 0.0)
        self.client = connect(s.redis_url, client_name=f"tactical-worker:{s.consumer}", read_timeout_s=s.block_ms / 1e3)
        db = int(self.client.connection_pool.connection_kwargs.get("db") or 0)
        if db != DEFAULT_DB:  # a URL without its /2 reads database 0: a worker that runs and never sees an event
            log.warning("worker %s reads Redis database %d, not %d where the runbook's producers and tools are: "
                        "check TACTICAL_REDIS_URL ends in /%d", s.consumer, db, DEFAULT_DB, DEFAULT_DB)
        heartbeat = Heartbeat(self.client, s.consumer, s.heartbeat_interval_s)
        if not self.take_consumer_name(heartbeat):
            # Stopped while Redis was unreachable, or while another worker's heartbeat held the name: neither it nor
            # the consumer is ours, nothing was taken, nothing is to finish.
            return
        self.heartbeat = heartbeat
        self.record_start()
        self.pipeline = EventPipeline(
            DeliveryScripts(self.client, self.streams),
            self.ensemble,
            self.aggregator,
            PipelineConfig(
                consumer=s.consumer,
                processing_lease_ms=s.processing_lease_ms,
                completed_ttl_s=s.completed_ttl_s,
                max_deliveries=s.max_deliveries,
                max_event_bytes=s.max_event_bytes,
            ),
        )
        self.reader = GroupReader(self.client, self.streams.input, self.streams.group, s.consumer)
        self.monitor = HealthMonitor(self, interval_s=s.health_interval_s).start()
        self.http = HealthServer(
            s.http_host, s.http_port, metrics=self.telemetry.metrics,
            health_snapshot=lambda: self.monitor.health() if self.monitor else {},
            state_snapshot=lambda: self.monitor.state() if self.monitor else {},
        ).start()
        # Torch, numpy and the models leave ~200k long-lived objects; a full collection walking them pauses the hot
        # path for ~80 ms. Frozen, they are never traversed again: full collections see only what came later.
        gc.freeze()
        # Each event allocates hundreds of short-lived containers, freed by reference counting; at the default
        # threshold (700) the young generation was collected every few events for nothing, ~5 µs an event at full
        # load (`python -m bench.ab --max`: worker CPU −6.5 µs an event, better in 16 of 20 pairs). The rare cycle
        # waits a little longer; a collection at this threshold takes ~0.6 ms.
        gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
        log.info("worker %s ready: model %s, group %s on %s, http http://%s:%d", s.consumer, self.ensemble.version,
                 self.streams.group, self.streams.input, s.http_host, self.http.port)

    def take_consumer_name(self, heartbeat: Heartbeat) -> bool:
        """Wait for Redis, then take this worker's consumer name (its first heartbeat). Redis going away in between —
        restarted, failing over — is waited for again, not a crash: the first try's beat, if it landed, is this
        process's own and is taken over. False when the worker was stopped first."""
        while True:
            self.wait_for_redis()
            if self.state.should_exit:
                return False
            try:
                return heartbeat.claim_name(self.heartbeat_info, stopping=lambda: self.state.should_exit)
            except REDIS_UNREACHABLE as exc:
                self.state.redis_up = False
                log.warning("Redis went away while this worker took its name (%s): waiting for it again", exc)

    def record_start(self) -> None:
        """Count this start in Redis: restarts over the limit within the window open the breaker."""
        s = self.settings
        try:
            skip_earlier_reset_requests(self._client(), s.consumer)
            self.restart_count = record_restart(self._client(), s.consumer, time.time(),
                                                window_s=s.breaker_restart_window_s)
        except redis.ResponseError as exc:  # e.g. read-only after a failover: the loop backs off from it too
            log.error("this start could not be counted (Redis refused: %s); the restart limit cannot see it", exc)
            return
        except REDIS_UNREACHABLE as exc:
            # Not tried again: the count may have landed before the connection broke, and counted twice a start would
            # bring the restart limit closer. The loop waits for Redis, as after any outage.
            self.state.redis_up = False
            log.warning("this start may not have been counted (Redis went away: %s); the loop waits for Redis", exc)
            return
        with self.breaker_lock:
            if self.breaker.record_restarts(self.restart_count):
                log.error("circuit breaker open: %s", self.breaker.last_reason)

    def load_models(self) -> AgentEnsemble:
        from models.bundle import serving_bundle_dir

        bundle_dir = serving_bundle_dir(self.settings.models_dir)
        ensemble = AgentEnsemble.load(bundle_dir, threads=self.settings.torch_threads)
        log.info("loaded model bundle %s from %s", ensemble.version, bundle_dir)
        return ensemble

    def reload_models(self, bundle_dir: Path) -> None:
        """Load, verify and warm a bundle (in the caller's thread), then swap it in between two batches."""
        log.info("loading model bundle %s", bundle_dir)
        ensemble = AgentEnsemble.load(bundle_dir, threads=self.settings.torch_threads)
        previous = self.ensemble
        self.ensemble = ensemble
        if self.pipeline is not None:
            self.pipeline.ensemble = ensemble
        self.telemetry.metrics.set_model(ensemble.version, 0.0)
        log.warning("model bundle %s → %s (%s)", getattr(previous, "version", "none"), ensemble.version, bundle_dir)

    def request_reconnect(self) -> None:
        self.state.reconnect_requested = True

    def shutdown(self) -> None:
        try:
            self.record_held()
            self.flush_batch_fallbacks(force=True)
        finally:
            self.release_resources()

    def release_resources(self) -> None:
        """Give back what startup took: the HTTP server, the monitor, the heartbeat, the connections."""
        if self.http is not None:
            self.http.stop()
        if self.monitor is not None:
            self.monitor.stop()
        self._held.close()
        client = self.client
        if client is None:
            return
        with contextlib.suppress(redis.RedisError):  # unreachable, or refusing writes (a failover): exit cleanly
            if self.heartbeat is not None:  # the name is this worker's (a worker refused it touches neither)
                self.heartbeat.stop(keep_last_beat=self._crashed)
                self.forget_consumer_if_idle(client)
        if self.pipeline is not None:
            self.pipeline.scripts.close()
        if self.reader is not None:
            self.reader.close()
        client.close()
        self.client = None
        if self.heartbeat is None:  # never took its name: "stopped" would read as the live worker of that name
            log.info("worker %s did not start", self.settings.consumer)
        elif self._crashed:
            log.error("worker %s stopped on an error (its last beat is kept a day: `tacticalctl triage worker-down` "
                      "names it)", self.settings.consumer)
        else:
            log.info("worker %s stopped", self.settings.consumer)

    def forget_consumer_if_idle(self, client: redis.Redis) -> None:
        """A clean exit with nothing pending removes this consumer from the group, so restarts don't pile up names.
        Checked and deleted in one script: an entry claimed to this worker meanwhile (`pending claim`, its heartbeat
        still live) would be dropped with the name."""
        delete_consumers_without_pending(client, [self.settings.consumer], self.streams)

    # ---- the loop --------------------------------------------------------------------------------------------
    def main_loop(self) -> None:
        backoff = Backoff()
        try:
            while not self.state.should_exit:
                try:
                    if self.step():
                        backoff.reset()  # only on confirmed progress: a commit still in flight may yet be refused
                except RedisAuthError:
                    raise  # not transient: the same credentials will be refused again
                except REDIS_UNREACHABLE as exc:
                    operation = self.state.operation
                    self.finish_arrived_commit()
                    self.release_read_ahead()
                    self.state.redis_up = False
                    self.reread_own_pending(retry=True)
                    self.telemetry.record_error(operation)
                    self.state.operation = "read"
                    delay = backoff.next_delay()
                    log.warning("Redis unavailable (%s): retrying in %.2fs; unacked entries stay pending", exc, delay)
                    self.sleep(delay)
                except StageError as exc:
                    refusal = self.settle_before_failure()
                    self.telemetry.record_error(exc.stage, exc.events)
                    with self.breaker_lock:
                        self.breaker.record_failure(str(exc))
                    log.exception("batch failed; its entries stay pending and will be retried: %s", exc)
                    if refusal is not None:
                        self.refused(refusal, backoff.next_delay())
                    else:
                        self.sleep(backoff.next_delay())
                except redis.ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        log.warning("consumer group %s missing (Redis lost its data?): recreating", self.streams.group)
                        self.release_read_ahead()
                        self.state.reconnect_requested = True  # reconnecting creates the group, riding out failures
                        continue
                    self.refused(exc, backoff.next_delay())
            self.finish_read_ahead()
        finally:
            self.finish_in_flight()

    def step(self) -> bool:
        """One turn of the loop: periodic work, then one batch read and decided (if the breaker lets it). True when
        the turn confirmed progress: a commit's reply read, or nothing to read (Redis answered).

        A batch's commit is left in flight while the next batch is read and decided; its reply is read just before
        the next commit goes out. A full batch suggests more are waiting: the read of the next batch is sent before
        its commit goes out (`send_read_ahead`), and its reply read once the batch before is recorded
        (`receive_read_ahead`). After a short batch the next read waits for new events while Redis runs the commit,
        rather than the worker waiting idle for its reply; it waits `IN_FLIGHT_BLOCK_MS` at most, then the reply is
        read, so results, metrics and the breaker lag an idle stream by no more. A breaker trial is finished at once.
        """
        if self.state.reconnect_requested or not self.state.redis_up:
            self.reconnect()
        pipeline = self._pipeline()
        self.periodic(time.monotonic())
        with self.breaker_lock:
            allowed = self.breaker.allow()
            trial = self.breaker.state is BreakerState.HALF_OPEN
        if not allowed or trial:
            self.release_read_ahead()  # a trial takes one event; an open breaker none
        if not allowed:
            self.drain()
            self.sleep(min(self.settings.block_ms / 1e3, 0.1))  # events wait in the stream
            return True
        count = 1 if trial else self.settings.batch_size
        settled_before = self._batches_settled
        entries, self._read_ahead = self._read_ahead, []
        if not entries:
            entries = self.read_batch(count=count)
        if not entries and trial:
            # No new event to try: a stale pending one will do (reclaim runs only while closed), or a lone worker
            # whose batch failed would stay half-open, its entries undecided, until new traffic came.
            _, entries = self.claim_stale("0-0", count=1)
        if entries:
            full = len(entries) == count and not trial
            try:
                try:
                    finished = pipeline.submit(entries, before_commit=self.send_read_ahead if full else None)
                except redis.RedisError:
                    self.state.operation = pipeline.stage  # counted as an error of what failed, not of the read
                    raise
                self.record_results(finished)  # while Redis answers the read sent ahead and runs the commit
            finally:
                self.receive_read_ahead()  # even when the batch failed: its read is never left unread
                # Taken here, not after: a read ahead failing with its batch (one outage) is dropped with the batch's
                # failure, raised in its place (what the read delivered is re-read all the same), not kept to be
                # raised again once Redis is back.
                error, self._read_ahead_error = self._read_ahead_error, None
            if error is not None:
                self.drain()  # the batch it followed is committed and recorded first
                raise error
        if not entries or trial:
            self.drain()
        if not entries:
            with self.breaker_lock:  # no event, no verdict: failures stay counted, a half-open trial waits for one
                self.breaker.record_idle()
        return not entries or self._batches_settled > settled_before

    def send_read_ahead(self) -> None:
        """Send the read of the next batch now, between deciding a full batch and sending its commit. Redis runs
        commands in order: sent after the commit, this read would wait for the commit to run (milliseconds for a full
        batch) while the worker sat idle; sent before it, the next batch is decided while Redis runs the commit.
        The reply is read after the commit has gone out and the batch before is recorded (`receive_read_ahead`):
        Redis answers the read and runs the commit while the worker records, and neither waits for the other.

        Only new entries are read ahead: while this consumer's own pending entries are being re-read (after a
        reconnect), the batch in hand is among them until its commit goes out. A failed read does not fail the
        batch already decided: its commit goes out, then `step` raises the error."""
        if self.state.should_exit or self.state.read_own_pending:  # after a shutdown signal, nothing more is read
            return
        assert self.reader is not None, "startup() builds the reader first"
        try:
            self.reader.send(">", self.settings.batch_size)
        except REDIS_FAILED as exc:
            self.read_ahead_failed(exc)

    def receive_read_ahead(self) -> None:
        """The entries of the read sent ahead, if one was: the next step decides them."""
        if self.reader is None or not self.reader.awaiting:
            return
        try:
            self._read_ahead = self._entries(self.reader.receive())
        except REDIS_FAILED as exc:
            self.read_ahead_failed(exc)

    def read_ahead_failed(self, exc: Exception) -> None:
        self.reread_own_pending()  # whatever the read delivered before failing is re-read first
        self._read_ahead_error = exc

    def refused(self, exc: redis.ResponseError, delay: float) -> None:
        """Redis answered but refused a command: read-only after a failover, out of memory, not permitted to this
        user, a key of the wrong type. The worker does not crash or skip anything: what it holds stays pending (read
        again first), the refusal counts as an error and a breaker failure (the breaker opens if it lasts), and the
        loop tries again after `delay`. After a failover the connection is made again: the address may lead to the
        new primary by now."""
        self.finish_in_flight()  # refused elsewhere (a heartbeat, a read): its reply is still there, recorded
        self.release_read_ahead()
        self.reread_own_pending(retry=True)
        if isinstance(exc, REDIS_FAILOVER) or str(exc).startswith("UNBLOCKED"):
            self.state.reconnect_requested = True
        self.count_refusal(exc, delay)
        self.sleep(delay)

    def count_refusal(self, exc: redis.ResponseError, delay: float) -> None:
        """A refusal is an error of the operation refused and a breaker failure: health and the breaker show a Redis
        that answers PING but takes no writes."""
        operation, self.state.operation = self.state.operation, "read"
        self.telemetry.record_error(operation)
        with self.breaker_lock:
            self.breaker.record_failure(f"Redis refused the {operation}: {exc}")
        log.error("Redis refused the %s (%s): retrying in %.2fs; unacked entries stay pending", operation, exc, delay)

    def release_read_ahead(self) -> None:
        """Let go of entries read ahead that will not be decided now: they stay pending on this consumer and are
        read again first (`read_own_pending`) when events are taken again."""
        if self._read_ahead:
            self._read_ahead = []
            self.reread_own_pending()

    def finish_read_ahead(self) -> None:
        """On a clean exit: the batch read ahead is decided and committed too, so nothing this worker took is left
        pending — unless the breaker is not closed (it takes no events, or one), or Redis or the batch fails: then
        its entries stay pending for another consumer."""
        entries, self._read_ahead = self._read_ahead, []
        if not entries:
            return
        with self.breaker_lock:
            breaker_state = self.breaker.state
        if breaker_state is not BreakerState.CLOSED:
            log.warning("circuit breaker %s: the %d entries read ahead stay pending", breaker_state.name.lower(),
                        len(entries))
            return
        try:
            self.process(entries)
        except BATCH_FAILED as exc:
            self._pipeline().abandon()
            log.warning("the batch read ahead was not committed (%s): its %d entries stay pending", exc, len(entries))

    def drain(self) -> None:
        """Read the reply of the commit in flight, if any, and record its batch."""
        operation, self.state.operation = self.state.operation, "commit"  # what an error here is counted as
        results = self._pipeline().drain()
        self.state.operation = operation
        self.record_results(results)
        self.record_held()

    def settle_before_failure(self) -> redis.ResponseError | None:
        """A batch failed while the one before it was committing: that commit's reply is read first, so its verdict
        reaches the breaker before this failure does (its late success would wipe the failure from the count).
        Returns Redis's refusal of that commit, to be handled as any refusal (its entries read again); an
        unreachable Redis abandons it (committed or pending: nothing is lost), and the next read finds Redis out."""
        try:
            self.drain()  # a Redis error abandons the commit
        except redis.ResponseError as refusal:
            return refusal
        except REDIS_UNREACHABLE:
            pass
        return None

    def finish_arrived_commit(self) -> None:
        """After a connection failed (the read's, say): a commit reply that has begun to come back on its own
        connection (checked without blocking) is read and its batch recorded; one that has not is abandoned, without
        waiting for a Redis that may be gone (its entries are committed or still pending: nothing is lost either
        way, and the caller reads its own pending entries again)."""
        pipeline = self._pipeline()
        if not pipeline.commit_reply_arrived:
            pipeline.abandon()
            return
        try:
            self.drain()  # a Redis error abandons the commit
        except redis.RedisError as exc:
            log.warning("the commit in flight failed too (%s): its entries stay pending and are read again", exc)

    def finish_in_flight(self) -> None:
        """On the way out: the commit in flight is read if Redis still answers; else its entries stay pending (or
        were committed) and nothing is lost either way."""
        if self.pipeline is None or not self.pipeline.commit_in_flight:
            return
        try:
            self.drain()  # a Redis error abandons the commit
        except redis.RedisError as exc:  # unreachable, or refused: either way its entries are committed or pending
            log.warning("the last commit's reply was lost (%s): its entries are committed or still pending", exc)

    def reconnect(self) -> None:
        if self.state.reconnect_requested:
            self.state.reconnect_requested = False
            self.finish_in_flight()  # its reply first: the disconnect below closes the connection it comes on
            self._client().connection_pool.disconnect()
            self.release_read_ahead()
            self.reread_own_pending()
        self.wait_for_redis()

    def wait_for_redis(self) -> None:
        backoff = Backoff()
        client = self._client()
        while not self.state.should_exit:
            try:
                client.ping()
                created = ensure_group(client, self.streams)
                if created:
                    log.info("created consumer group %s on %s", self.streams.group, self.streams.input)
                self.state.redis_up = True
                return
            except RedisAuthError:
                raise  # not transient: the same credentials will be refused again
            except REDIS_UNREACHABLE as exc:
                delay = backoff.next_delay()
                log.warning("Redis at %s unreachable (%s): retrying in %.2fs",
                            redact_url(self.settings.redis_url), exc, delay)
                self.sleep(delay)
            except REDIS_REFUSING_WRITES as exc:  # a failover in progress, memory full: waited out too
                delay = backoff.next_delay()
                self.count_refusal(exc, delay)
                self.sleep(delay)

    def periodic(self, now: float) -> None:
        self.flush_batch_fallbacks(now=now)
        self.state.operation = "heartbeat"
        if self.heartbeat is not None and self.heartbeat.beat_if_due(self.heartbeat_info):
            with self.breaker_lock:
                publish_breaker_state(self._client(), self.settings.consumer, self.breaker)
        # Not while this consumer's own entries are due to be read again (after a Redis failure): they look stale only
        # because it backed off, and a reclaim would count a delivery against each; the re-read does not.
        if (now >= self.state.next_reclaim and self.breaker.state is BreakerState.CLOSED
                and not self.state.read_own_pending):
            self.state.operation = "reclaim"
            self.state.next_reclaim = now + self.settings.claim_interval_ms / 1e3
            self.reclaim_stale_entries()
        self.state.operation = "read"

    def heartbeat_info(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "model_version": None if self.ensemble is None else self.ensemble.version,
            "state": self.monitor.health_doc.get("state") if self.monitor else "starting",
            "breaker": self.breaker.state.name.lower(),
            "http": None if self.http is None else f"{self.settings.http_host}:{self.http.port}",
            "settings": self.shared_settings,
        }

    def reread_own_pending(self, *, retry: bool = False) -> None:
        """Read this consumer's pending entries again (from the first) before new ones. `retry`: the re-read is this
        worker's own retry after Redis failed, not counted against max_deliveries."""
        self.state.read_own_pending = True
        self.state.retrying_own_pending = self.state.retrying_own_pending or retry
        self.state.own_pending_from = "0"

    def read_batch(self, count: int, *, block: bool = True) -> list[StreamEntry]:
        if self.state.read_own_pending:
            # Entries delivered to this consumer but not committed (e.g. the connection dropped mid-batch). The commit
            # in flight is read first: until Redis has run it, its entries are pending too and would come back here.
            self.drain()
            while True:
                messages = self._read_group(self.state.own_pending_from, block=None, count=count)
                if not messages:
                    break
                self.state.own_pending_from = messages[-1][0]
                entries = self._entries(messages)
                if entries:  # else all were deleted from the stream (now acked): read on
                    if self.state.retrying_own_pending:
                        self.forgive_retry([e.entry_id for e in entries])
                    return self._with_delivery_counts(entries)
            self.end_own_pending_pass()
        return self._entries(self._read_group(">", block=self.block_ms() if block else None, count=count))

    def forgive_retry(self, entry_ids: list[bytes]) -> None:
        """These entries were just read again as this worker's own retry: not a delivery. Set back in Redis's count,
        which every consumer reads; under an ACL user without XCLAIM, forgiven in this worker's memory only."""
        try:
            forgive_rereads(self._client(), entry_ids, self.streams, self.settings.consumer)
        except redis.ResponseError as exc:
            if not is_permission_refusal(exc):
                raise
            if not self._forgive_refused_logged:
                self._forgive_refused_logged = True
                log.warning("the Redis user may not run XCLAIM (%s): retries are forgiven by this worker only, and an "
                            "entry another consumer takes over carries them as deliveries; load the shipped "
                            "runbook/acl/users.acl", exc)
            self._own_retries.update(entry_ids)

    def block_ms(self) -> int:
        """How long a read waits for new events: `block_ms`, or while a commit is in flight `IN_FLIGHT_BLOCK_MS` at
        most (that commit's reply is read when the read comes back empty)."""
        if self.pipeline is not None and self.pipeline.commit_in_flight:
            return min(self.settings.block_ms, IN_FLIGHT_BLOCK_MS)
        return self.settings.block_ms

    def end_own_pending_pass(self) -> None:
        """Every entry this consumer held has been read once: what is still pending (it failed again) is the
        reclaim's now. Of the retries forgiven, only those of entries still pending are kept."""
        self.state.read_own_pending = self.state.retrying_own_pending = False
        self.state.own_pending_from = "0"
        if self._own_retries:
            still = pending_delivery_counts(self._client(), list(self._own_retries), self.streams,
                                            self.settings.consumer)
            self._own_retries = Counter({entry_id: n for entry_id, n in self._own_retries.items() if entry_id in still})

    def _read_group(self, start: str | bytes, block: int | None, count: int) -> list[Message]:
        assert self.reader is not None, "startup() builds the reader first"
        return self.reader.read(start, count, block)

    def _entries(self, messages: list[Message]) -> list[StreamEntry]:
        """The entries read. A pending entry deleted from the stream comes back without fields: nothing to decide,
        just ack it."""
        gone = [entry_id for entry_id, fields in messages if not fields]
        if gone:
            self._client().xack(self.streams.input, self.streams.group, *gone)
        return [StreamEntry(entry_id, fields) for entry_id, fields in messages if fields]

    def reclaim_stale_entries(self) -> int:
        """XAUTOCLAIM entries idle past the min-idle from any consumer (a dead one's, or ours) and decide them."""
        reclaimed = 0
        start: bytes | str = "0-0"
        while not self.state.should_exit:
            next_start, entries = self.claim_stale(start, count=self.settings.batch_size)
            if entries:
                log.info("reclaimed %d entries idle over %d ms", len(entries), self.settings.claim_min_idle_ms)
                self.process(entries)
                reclaimed += len(entries)
            if next_start in (b"0-0", "0-0"):
                break
            start = next_start
        return reclaimed

    def claim_stale(self, start: bytes | str, count: int) -> tuple[bytes | str, list[StreamEntry]]:
        """Up to `count` entries idle past the min-idle, from `start`, now this consumer's, with their delivery
        counts; and where the next call starts (0-0: the scan is done)."""
        next_start, messages, deleted = self._client().xautoclaim(
            self.streams.input, self.streams.group, self.settings.consumer,
            min_idle_time=self.settings.claim_min_idle_ms, start_id=start, count=count,
        )
        if deleted:
            log.info("%d pending entries were deleted from the stream; dropped from the group", len(deleted))
        entries = [StreamEntry(entry_id, fields) for entry_id, fields in messages if fields]
        return next_start, self._with_delivery_counts(entries) if entries else []

    def _with_delivery_counts(self, entries: list[StreamEntry]) -> list[StreamEntry]:
        """The entries with their delivery counts, less the re-reads that were this worker's own retries."""
        counts = pending_delivery_counts(self._client(), [e.entry_id for e in entries], self.streams,
                                         self.settings.consumer)
        return [StreamEntry(e.entry_id, e.fields, max(1, counts.get(e.entry_id, 1) - self._own_retries[e.entry_id]))
                for e in entries]

    def process(self, entries: list[StreamEntry]) -> BatchResult:
        """Decide and commit a batch start to finish (the commit in flight, if any, is finished first)."""
        pipeline = self._pipeline()
        self.drain()
        result = pipeline.process(entries)
        self.record_results([result])
        self.record_held()  # nothing is left in flight: the next read may block for the full block_ms
        return result

    def record_results(self, results: list[BatchResult]) -> None:
        for result in results:
            self._batches_settled += 1
            with self.breaker_lock:
                self.breaker.record_success()  # its commit came back: the pipeline works end to end
            self.hold_for_recording(result)
            for letter in result.dead_letters:
                cid = letter.correlation_id or "(no valid correlation id)"
                log.warning("dead-lettered event %s (entry %s): %s", cid,
                            as_text(letter.entry_id), letter.reason)
            if result.batch_error is not None:
                self.report_batch_fallback(result.batch_error)
            for failed in result.failed:
                log.error("event %s failed in %s even alone (%s): it stays pending and is retried, then "
                          "dead-lettered after %d deliveries; the rest of its batch was committed",
                          failed.correlation_id, failed.stage, failed.reason, self.settings.max_deliveries)

    def hold_for_recording(self, result: BatchResult) -> None:
        """Record `result` with the batches held before it, now if a full batch's worth is held or the first has
        waited RECORD_HOLD_S; else later (`record_held`: the next drain, sleep or stop does it too)."""
        now = time.monotonic()
        if not self._unrecorded:
            self._unrecorded_since = now
        self._unrecorded.append(result)
        held_events = sum(held.read for held in self._unrecorded)  # a few batches: short ones are what is held
        if held_events >= self.settings.batch_size or now - self._unrecorded_since >= RECORD_HOLD_S:
            self.record_held()

    def record_held(self) -> None:
        """Record the batches held, in the order they were committed, then hand each to `on_batch`."""
        if self._unrecorded:
            held, self._unrecorded = self._unrecorded, []
            self.telemetry.record_batches(held)
            if self.on_batch is not None:
                for result in held:
                    self.on_batch(result)

    def report_batch_fallback(self, error: str) -> None:
        """A batch failed as a whole and its events were decided one at a time: nothing is lost, but every such
        batch is slower and the agents' batched path is broken. Logged at most once a minute, with how often."""
        self._batch_fallbacks += 1
        self._last_fallback_error = error
        self.flush_batch_fallbacks()

    def flush_batch_fallbacks(self, *, now: float | None = None, force: bool = False) -> None:
        """Log the batches decided one event at a time since the last report, once a minute is up (or `force`)."""
        now = time.monotonic() if now is None else now
        if self._batch_fallbacks and (force or now >= self._next_fallback_report):
            log.warning("%d batch(es) failed as a whole and were decided one event at a time (last: %s); counted in "
                        "tactical_errors_total{operation=\"batch\"}", self._batch_fallbacks, self._last_fallback_error)
            self._batch_fallbacks = 0
            self._next_fallback_report = now + 60.0

    def _pipeline(self) -> EventPipeline:
        assert self.pipeline is not None, "startup() builds the pipeline first"
        return self.pipeline

    def sleep(self, seconds: float) -> None:
        """Sleep in short steps so a shutdown signal is honoured promptly. Batches held for recording are recorded
        first: a backoff through an outage would hold them far longer than RECORD_HOLD_S."""
        self.record_held()
        deadline = time.monotonic() + seconds
        while not self.state.should_exit and (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(remaining, 0.05))

    def _client(self) -> redis.Redis:
        assert self.client is not None, "startup() connects first"
        return self.client
