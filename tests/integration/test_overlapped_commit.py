"""A batch's commit stays in flight while the next batch is read and decided: every result is still returned once, a
batch failing meanwhile loses neither itself nor the one in flight, and an idle stream leaves nothing in flight for
long. After a full batch the next is read before the commit goes out (read ahead): decided on a clean exit, left
pending while the breaker is open, and neither lost nor doubled when that read fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import redis

from tests.events import many_events
from tests.faults import FaultyModel
from tests.integration.streams import decided_ids, pending_count, read_group, wait_for, wait_settled
from worker.aggregator import AggregatorConfig
from worker.delivery import DeliveryScripts, ensure_group
from worker.group_reader import Message
from worker.inference import AgentEnsemble
from worker.names import DECISIONS_STREAM, INPUT_STREAM
from worker.pipeline import BatchResult, EventPipeline, PipelineConfig, StageError, StreamEntry
from worker.producer import publish_events
from worker.service import IN_FLIGHT_BLOCK_MS, Worker
from worker.settings import WorkerSettings

CONFIG = PipelineConfig(consumer="overlap", processing_lease_ms=30_000, completed_ttl_s=3600, max_deliveries=5,
                        max_event_bytes=65_536)


def publish(client: redis.Redis, n: int, prefix: str) -> set[bytes]:
    ensure_group(client)
    publish_events(client, many_events(n, prefix=prefix, seed=11))
    return {f"{prefix}-{i}".encode() for i in range(n)}


def read(client: redis.Redis, count: int) -> list[StreamEntry]:
    messages = read_group(client, CONFIG.consumer, count)
    return [StreamEntry(entry_id, fields) for entry_id, fields in messages]


def two_batches_of_ten(
    client: redis.Redis, ensemble: AgentEnsemble, prefix: str
) -> tuple[FaultyModel, EventPipeline, list[StreamEntry], list[StreamEntry]]:
    """20 events queued and read as two batches, and a pipeline over a model the test can break or slow down."""
    publish(client, 20, prefix)
    model = FaultyModel(ensemble)
    pipeline = EventPipeline(DeliveryScripts(client), model, AggregatorConfig(), CONFIG)  # type: ignore[arg-type]
    return model, pipeline, read(client, 10), read(client, 10)


def decided(results: list[BatchResult]) -> list[str]:
    return [decision.correlation_id for result in results for decision in result.decisions]


def test_each_batch_result_comes_back_once_one_submit_later(redis_client: redis.Redis, ensemble) -> None:
    ids = publish(redis_client, 30, "ov")
    pipeline = EventPipeline(DeliveryScripts(redis_client), ensemble, AggregatorConfig(), CONFIG)
    batches = [read(redis_client, 10) for _ in range(3)]

    assert pipeline.submit(batches[0]) == [] and pipeline.commit_in_flight
    second = pipeline.submit(batches[1])
    third = pipeline.submit(batches[2])
    last = pipeline.drain()
    assert not pipeline.commit_in_flight and pipeline.drain() == []

    assert [len(r) for r in (second, third, last)] == [1, 1, 1]
    assert decided(second) == [f"ov-{i}" for i in range(10)], "submit returns the previous batch, in order"
    assert decided(third + last) == [f"ov-{i}" for i in range(10, 30)]
    assert decided_ids(redis_client) == dict.fromkeys(ids, 1)
    assert pending_count(redis_client) == 0


def test_batches_keep_the_pipelines_connections(redis_client: redis.Redis, ensemble) -> None:
    """Each script's reply is read on its own connection, the claim's too (its outcomes unused): a reply left unread
    would cost a new connection per batch."""
    publish(redis_client, 50, "conn")
    pipeline = EventPipeline(DeliveryScripts(redis_client), ensemble, AggregatorConfig(), CONFIG)
    pipeline.process(read(redis_client, 10))
    connections = redis_client.info("stats")["total_connections_received"]
    for _ in range(4):
        pipeline.submit(read(redis_client, 10))
    pipeline.drain()

    assert redis_client.info("stats")["total_connections_received"] == connections
    assert pending_count(redis_client) == 0


def test_redis_runs_each_claim_and_commit_in_the_order_the_pipeline_sent_them(redis_client: redis.Redis,
                                                                             ensemble) -> None:
    """A batch's claim goes out before its commit, and the next batch's claim after the commit in flight: Redis must
    run them in that order. Run out of order, a commit that found an entry no longer pending (dead-lettered by an
    operator while its worker stalled) released no lease, and the claim landing after it left one behind."""
    ids = publish(redis_client, 30, "order")
    pipeline = EventPipeline(DeliveryScripts(redis_client), ensemble, AggregatorConfig(), CONFIG)
    pipeline.process(read(redis_client, 10))  # Redis has both scripts from here on (no NOSCRIPT and load)
    first, second = read(redis_client, 10), read(redis_client, 10)
    with redis_client.monitor() as monitor:
        pipeline.submit(first)
        pipeline.submit(second)
        pipeline.drain()
        redis_client.ping()  # marks the end of what the monitor has to show
        run: list[tuple[str, str]] = []  # (script, client) in the order Redis ran them
        while (command := monitor.next_command())["command"] != "PING":
            words = command["command"].split()
            if words[0] == "EVALSHA":
                script = "commit" if words[3] == INPUT_STREAM else "claim"  # the commit's first key
                run.append((script, f"{command['client_address']}:{command['client_port']}"))
    assert [script for script, _ in run] == ["claim", "commit", "claim", "commit"], run
    assert len({client for _, client in run}) == 1, "one connection: Redis runs its commands in the order sent"
    assert decided_ids(redis_client) == dict.fromkeys(ids, 1)


def test_time_a_commit_waits_in_flight_is_not_counted_as_its_batch_latency(redis_client: redis.Redis, ensemble) -> None:
    model, pipeline, first, second = two_batches_of_ten(redis_client, ensemble, "slow")

    pipeline.submit(first)
    model.delay_s = 0.5  # the next batch takes half a second to decide while the first's commit is in flight
    [first_result] = pipeline.submit(second)
    [second_result] = pipeline.drain()

    assert len(first_result.decisions) == 10 and len(second_result.decisions) == 10
    assert first_result.service_seconds < 0.25, "the next batch's half second is not the first batch's latency"
    assert second_result.service_seconds >= 0.5, "it is the next batch's own"
    assert first_result.stage_seconds["commit"] < 0.25


def test_a_batch_failing_while_another_commit_is_in_flight_loses_neither(redis_client: redis.Redis, ensemble) -> None:
    model, pipeline, first, second = two_batches_of_ten(redis_client, ensemble, "fail")

    pipeline.submit(first)
    model.fail = True
    with pytest.raises(StageError, match="inference failed: RuntimeError: injected model failure"):
        pipeline.submit(second)
    assert pipeline.commit_in_flight, "the earlier commit is still there to be read"
    assert decided(pipeline.drain()) == [f"fail-{i}" for i in range(10)]
    assert pending_count(redis_client) == 10, "the failed batch stays pending, nothing acked undecided"

    model.fail = False
    retried = pipeline.process(second)  # as the worker retries it: its own leases are taken over
    assert decided([retried]) == [f"fail-{i}" for i in range(10, 20)]
    assert decided_ids(redis_client) == {f"fail-{i}".encode(): 1 for i in range(20)}
    assert pending_count(redis_client) == 0


def started_worker(redis_url: str, consumer: str, **overrides: Any) -> tuple[Worker, list[BatchResult]]:
    """A worker started up (batches of 25, `overrides` on top), and the list its batch results go to."""
    settings = WorkerSettings.from_env({}, redis_url=redis_url, consumer=consumer, http_addr="127.0.0.1:0",
                                       **{"batch_size": 25, **overrides})
    results: list[BatchResult] = []
    worker = Worker(settings, on_batch=results.append)
    worker.startup()
    return worker, results


def log_submits(pipeline: EventPipeline) -> list[tuple[int, bool]]:
    """From now on, each batch `pipeline` is given to submit, as (its size, whether a commit was in flight)."""
    submitted: list[tuple[int, bool]] = []
    submit = pipeline.submit

    def watched_submit(entries: Sequence[StreamEntry], *,
                       before_commit: Callable[[], None] | None = None) -> list[BatchResult]:
        submitted.append((len(entries), pipeline.commit_in_flight))
        return submit(entries, before_commit=before_commit)

    pipeline.submit = watched_submit  # type: ignore[method-assign]
    return submitted


def after_reading_ahead(worker: Worker, then: Callable[[], None]) -> None:
    """Run `then` each time the worker has received a batch read ahead (its entries in hand, not yet decided)."""
    receive = worker.receive_read_ahead

    def receive_then() -> None:
        read_ahead = worker.reader is not None and worker.reader.awaiting
        receive()
        if read_ahead:
            then()

    worker.receive_read_ahead = receive_then  # type: ignore[method-assign]


@pytest.fixture
def worker_in_this_thread(redis_url: str) -> Iterator[tuple[Worker, list[BatchResult]]]:
    """A worker whose loop the test runs itself (`main_loop` returns once `should_exit` is set), batches of 25."""
    worker, results = started_worker(redis_url, "overlapping")
    yield worker, results
    worker.shutdown()


@pytest.fixture
def worker_with_full_batches(
    worker_in_this_thread: tuple[Worker, list[BatchResult]],
) -> Iterator[tuple[Worker, list[BatchResult], list[tuple[int, bool]], Callable[[], None]]]:
    """The same worker, its loop in a thread not started yet (the last item starts it); the third item logs each
    batch submitted (`log_submits`)."""
    worker, results = worker_in_this_thread
    assert worker.pipeline is not None
    submitted = log_submits(worker.pipeline)
    loop = threading.Thread(target=worker.main_loop, daemon=True)
    yield worker, results, submitted, loop.start
    worker.state.should_exit = True
    if loop.is_alive():
        loop.join(timeout=30)


def test_a_worker_overlaps_full_batches_and_finishes_the_last_when_the_stream_runs_dry(
    redis_client: redis.Redis, worker_with_full_batches
) -> None:
    worker, results, submitted, start = worker_with_full_batches
    ids = publish(redis_client, 500, "busy")  # queued first: every read is a full batch of 25
    start()
    wait_settled(redis_client, 500)
    wait_for(lambda: sum(len(r.decisions) for r in results) == 500, what="every batch's result recorded")

    assert any(in_flight for _, in_flight in submitted), (
        "full batches were decided while the previous commit was in flight")
    assert not worker.pipeline.commit_in_flight, "an idle stream leaves no commit unread"  # type: ignore[union-attr]
    assert sorted(decided(results)) == sorted(cid.decode() for cid in ids), "each decision recorded once"
    assert decided_ids(redis_client) == dict.fromkeys(ids, 1)
    registry = worker.telemetry.metrics.registry
    processed = sum(registry.get_sample_value("tactical_events_processed_total", {"outcome": outcome}) or 0
                    for outcome in ("executed", "hold", "duplicate", "dead_letter"))
    assert processed == 500, "the metrics count every overlapped batch once"


@pytest.fixture
def looping_worker(redis_url: str) -> Iterator[Callable[..., tuple[Worker, list[BatchResult], list[tuple[int, bool]]]]]:
    """`start(before_loop=None, **settings)`: a worker (batches of 25, `settings` on top) serving through a
    `FaultyModel`, its loop in a thread once `before_loop(worker)` has run; it returns the worker, its batch results
    and a log of each batch submitted as (its size, whether a commit was in flight). Stopped at the end."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start(before_loop: Callable[[Worker], None] | None = None,
              **overrides: Any) -> tuple[Worker, list[BatchResult], list[tuple[int, bool]]]:
        worker, results = started_worker(redis_url, "looping", **overrides)
        pipeline = worker.pipeline
        assert pipeline is not None
        pipeline.ensemble = FaultyModel(pipeline.ensemble)  # type: ignore[assignment]
        submitted = log_submits(pipeline)
        if before_loop is not None:
            before_loop(worker)
        loop = threading.Thread(target=worker.main_loop, daemon=True)
        loop.start()
        started.append((worker, loop))
        return worker, results, submitted

    yield start
    for worker, loop in started:
        worker.state.should_exit = True
        loop.join(timeout=30)
        worker.shutdown()


def test_a_trickle_of_events_is_decided_while_the_last_commit_runs(redis_client: redis.Redis,
                                                                    looping_worker) -> None:
    """Events one at a time: after each short batch the worker waits for the next events while Redis runs the
    commit, instead of waiting for its reply; each event is still decided and recorded once."""
    _, results, submitted = looping_worker()
    ensure_group(redis_client)
    events = many_events(40, prefix="trickle", seed=5)
    for event in events:
        publish_events(redis_client, [event])
        time.sleep(0.001)
    wait_settled(redis_client, 40)
    wait_for(lambda: sum(len(r.decisions) for r in results) == 40, what="every result recorded")

    assert any(in_flight for size, in_flight in submitted if size < 25), (
        f"no short batch was decided while the previous commit was in flight: {submitted}")
    assert sorted(decided(results)) == sorted(event.correlation_id for event in events), "each recorded once"
    assert decided_ids(redis_client) == {event.correlation_id.encode(): 1 for event in events}


def test_an_idle_stream_leaves_the_last_result_unrecorded_briefly(redis_client: redis.Redis, looping_worker) -> None:
    """The read after a short batch waits IN_FLIGHT_BLOCK_MS, not the worker's block_ms (2 s here): then the commit's
    reply is read, and the batch's result, metrics and breaker success are recorded."""
    blocks: list[int | None] = []  # the block of each read made with a commit in flight

    def watch_reads(worker: Worker) -> None:
        reader = worker.reader
        assert reader is not None
        read = reader.read

        def watched(start: str | bytes, count: int, block_ms: int | None = None) -> list[Message]:
            if worker.pipeline.commit_in_flight:  # type: ignore[union-attr]
                blocks.append(block_ms)
            return read(start, count, block_ms)

        reader.read = watched  # type: ignore[method-assign]

    worker, results, _ = looping_worker(watch_reads, block_ms=2000)
    ensure_group(redis_client)
    for round_ in range(3):
        published = time.monotonic()
        publish_events(redis_client, [many_events(1, prefix=f"idle{round_}")[0]])

        def recorded(n: int = round_ + 1) -> bool:
            return len(decided(results)) == n

        wait_for(recorded, interval_s=0.005, what="the result recorded")
        waited = time.monotonic() - published
        assert waited < 1.0, f"the result was recorded {waited:.2f} s after its event: the read used the full block"
        wait_for(lambda: not worker.pipeline.commit_in_flight, what="no commit left unread")  # type: ignore[union-attr]
    assert blocks and set(blocks) == {IN_FLIGHT_BLOCK_MS}, blocks
    registry = worker.telemetry.metrics.registry
    assert sum(registry.get_sample_value("tactical_events_processed_total", {"outcome": outcome}) or 0
               for outcome in ("executed", "hold")) == 3


def test_a_read_failing_with_a_commit_in_flight_still_records_that_batch(redis_client: redis.Redis,
                                                                         looping_worker) -> None:
    """The read's connection drops while the last batch's commit is in flight. That commit ran, and its reply came
    back on its own connection: the batch's result is recorded, not dropped with the read."""
    failed: list[bool] = []

    def drop_a_read_in_flight(worker: Worker) -> None:
        reader = worker.reader
        assert reader is not None
        read = reader.read

        def dropping(start: str | bytes, count: int, block_ms: int | None = None) -> list[Message]:
            if worker.pipeline.commit_in_flight and not failed:  # type: ignore[union-attr]
                failed.append(True)
                time.sleep(0.05)  # the read waited, then its connection dropped; the commit's reply came meanwhile
                raise redis.ConnectionError("injected: the read's connection dropped")
            return read(start, count, block_ms)

        reader.read = dropping  # type: ignore[method-assign]

    ensure_group(redis_client)
    publish_events(redis_client, many_events(3, prefix="dropped"))
    worker, results, _ = looping_worker(drop_a_read_in_flight)
    wait_settled(redis_client, 3)
    wait_for(lambda: failed and not worker.pipeline.commit_in_flight, what="the read failed")  # type: ignore[union-attr]
    wait_for(lambda: len(decided(results)) >= 3, timeout_s=10, what="the batch's result recorded")
    assert sorted(decided(results)) == [f"dropped-{i}" for i in range(3)], "recorded once each"
    assert worker.telemetry.window.snapshot().errors == {"read": 1}


def test_a_batch_failing_while_the_one_before_commits_counts_toward_the_breaker(redis_client: redis.Redis,
                                                                                 looping_worker) -> None:
    """A batch fails while the batch before it is still committing. The breaker hears of that success first, then
    of the failure: two failed tries in a row open it at a threshold of 2, as they would with nothing in flight."""

    def fail_after_the_first_batch(worker: Worker) -> None:
        pipeline = worker.pipeline
        assert pipeline is not None
        submit = pipeline.submit

        def then_fail(entries: Sequence[StreamEntry], *,
                      before_commit: Callable[[], None] | None = None) -> list[BatchResult]:
            finished = submit(entries, before_commit=before_commit)
            if entries[0].fields[b"correlation_id"] == b"first-0":
                publish_events(redis_client, many_events(1, prefix="failing"))  # read while first-0 commits
                pipeline.ensemble.fail = True  # type: ignore[attr-defined]
            return finished

        pipeline.submit = then_fail  # type: ignore[method-assign]

    ensure_group(redis_client)
    publish_events(redis_client, many_events(1, prefix="first"))
    # The failed entry is retried when reclaimed, 0.3 s later: the second failed try.
    worker, results, _ = looping_worker(fail_after_the_first_batch, breaker_failure_threshold=2,
                                        claim_min_idle_ms=300, claim_interval_ms=100)
    wait_for(lambda: worker.breaker.state.name == "OPEN", timeout_s=30, what="the breaker open")
    assert worker.telemetry.window.snapshot().errors.get("inference") == 2, "opened by the second failed try"
    assert decided(results) == ["first-0"]


def test_a_batch_failing_while_the_one_before_is_refused_counts_both_and_retries_both(redis_client: redis.Redis,
                                                                                     looping_worker) -> None:
    """The commit in flight is refused (a string under the decisions stream's name) and the next batch fails once in
    inference: the refusal is counted and the refused batch read again at once, as any refusal, not left pending
    for a reclaim; once the string is gone, each event is decided once."""
    model: list[FaultyModel] = []

    def fail_after_the_first_batch(worker: Worker) -> None:
        pipeline = worker.pipeline
        assert pipeline is not None
        model.append(pipeline.ensemble)  # type: ignore[arg-type]
        submit = pipeline.submit

        def then_fail(entries: Sequence[StreamEntry], *,
                      before_commit: Callable[[], None] | None = None) -> list[BatchResult]:
            finished = submit(entries, before_commit=before_commit)
            if entries[0].fields[b"correlation_id"] == b"refused-0":
                publish_events(redis_client, many_events(1, prefix="failing"))
                model[0].fail_calls = 2  # the batch's pass and its event's try alone: the batch fails
            return finished

        pipeline.submit = then_fail  # type: ignore[method-assign]

    ensure_group(redis_client)
    redis_client.set(DECISIONS_STREAM, "someone else's string")
    publish_events(redis_client, many_events(1, prefix="refused"))
    worker, _, _ = looping_worker(fail_after_the_first_batch)
    wait_for(lambda: worker.telemetry.window.snapshot().errors.get("commit", 0) >= 1, timeout_s=4,
             what="the refusal counted (not left for a reclaim after the 5 s min-idle)")
    assert worker.telemetry.window.snapshot().errors.get("inference", 0) >= 1

    redis_client.delete(DECISIONS_STREAM)
    wait_settled(redis_client, 2)
    assert decided_ids(redis_client) == {b"refused-0": 1, b"failing-0": 1}
    assert "reclaim" not in worker.telemetry.window.snapshot().errors


def test_a_requested_reconnect_reads_the_commit_in_flight_first(redis_client: redis.Redis,
                                                                worker_with_full_batches) -> None:
    """The health monitor's recovery action reconnects Redis; the batch whose commit was in flight is still
    recorded, not dropped with the connection its reply was coming on."""
    worker, results, _, start = worker_with_full_batches
    in_flight_at_reconnect: list[bool] = []
    reconnect = worker.reconnect

    def watched_reconnect() -> None:
        in_flight_at_reconnect.append(worker.state.reconnect_requested and worker.pipeline.commit_in_flight)  # type: ignore[union-attr]
        reconnect()

    worker.reconnect = watched_reconnect  # type: ignore[method-assign]
    ids = publish(redis_client, 2000, "reconnect")
    start()
    while pending_count(redis_client) or redis_client.xinfo_groups(INPUT_STREAM)[0]["lag"]:
        worker.request_reconnect()
        time.sleep(0.02)
    wait_for(lambda: sum(len(r.decisions) for r in results) == 2000, timeout_s=10,
             what="every batch's result recorded across the reconnects")
    assert any(in_flight_at_reconnect), "some reconnects came with a commit in flight"
    assert decided_ids(redis_client) == dict.fromkeys(ids, 1)
    assert worker.telemetry.window.snapshot().errors.get("read", 0) == 0, "no commit reply was lost"


def test_a_full_batch_reads_the_next_before_its_commit_goes_out_and_records_the_one_before_meanwhile(
    redis_client: redis.Redis, worker_in_this_thread
) -> None:
    """Redis runs commands in order: a read sent after a full batch's commit would wait for that commit to run. The
    read of the next batch goes out first; its reply is read after the commit has gone out and the batch before is
    recorded, so Redis answers the read and runs the commit while the worker records."""
    worker, results = worker_in_this_thread
    # "read" (waits for new entries), "read ahead" (never waits) or "commit", as sent; "recorded" (a batch's
    # result) and "received" (the reply of a read ahead), as done
    log: list[str] = []
    assert worker.reader is not None and worker.pipeline is not None
    send_read, receive = worker.reader.send, worker.reader.receive
    send_commit, record_results = worker.pipeline.scripts.send_commit, worker.record_results

    def logged_read(start_id: str | bytes, count: int, block_ms: int | None = None) -> None:
        if start_id == ">":  # not the re-read of this consumer's own pending entries at startup
            log.append("read" if block_ms is not None else "read ahead")
        send_read(start_id, count, block_ms)

    def logged_receive() -> list[Message]:
        if log and log[-1] != "read":
            log.append("received")
        return receive()

    def logged_commit(*args: Any) -> Any:
        log.append("commit")
        if log.count("commit") >= 12:
            worker.state.should_exit = True
        return send_commit(*args)

    def logged_record(finished: list[BatchResult]) -> None:
        log.extend("recorded" for _ in finished)
        record_results(finished)

    worker.reader.send = logged_read  # type: ignore[method-assign]
    worker.reader.receive = logged_receive  # type: ignore[method-assign]
    worker.pipeline.scripts.send_commit = logged_commit  # type: ignore[method-assign]
    worker.record_results = logged_record  # type: ignore[method-assign]
    publish(redis_client, 500, "ahead")  # queued first: every read is a full batch of 25
    worker.main_loop()

    # The first batch is read; each after it was read ahead, its read sent before the commit of the batch before
    # and received after that commit went out and the batch before that one was recorded.
    assert log[:4] == ["read", "read ahead", "commit", "received"], log
    steady = log[4:4 + 10 * 4]
    assert steady == ["read ahead", "commit", "recorded", "received"] * 10, log
    assert log.count("read") == 1, f"every batch after the first was read ahead: {log}"
    assert not worker.reader.awaiting
    committed = decided_ids(redis_client)
    assert set(committed.values()) == {1} and sorted(decided(results)) == sorted(c.decode() for c in committed)
    assert pending_count(redis_client) == 0


def test_a_clean_exit_decides_and_commits_the_batch_read_ahead(redis_client: redis.Redis,
                                                               worker_in_this_thread) -> None:
    worker, results = worker_in_this_thread

    def then_signal() -> None:
        worker.state.should_exit = True  # SIGTERM arrives with a batch read ahead in hand

    after_reading_ahead(worker, then_signal)
    publish(redis_client, 500, "exit")
    worker.main_loop()

    decided_now = decided_ids(redis_client)
    assert sum(len(r.decisions) for r in results) == len(decided_now) == 50, "two batches: the first and the one ahead"
    assert set(decided_now.values()) == {1}
    assert pending_count(redis_client) == 0, "nothing this worker took is left pending"
    assert redis_client.xinfo_groups(INPUT_STREAM)[0]["lag"] == 450, "nothing more was read after the signal"


def test_entries_read_ahead_wait_while_the_breaker_is_open_then_are_decided_once(
    redis_client: redis.Redis, worker_with_full_batches
) -> None:
    worker, results, _, start = worker_with_full_batches
    opened: list[int] = []

    def then_open() -> None:
        if not opened:
            opened.append(len(worker._read_ahead))
            worker.breaker.force_open("test: opened with a batch read ahead")

    after_reading_ahead(worker, then_open)
    ids = publish(redis_client, 100, "breaker")
    start()
    wait_for(lambda: opened and not worker.pipeline.commit_in_flight, what="the breaker open")  # type: ignore[union-attr]
    time.sleep(0.3)
    assert opened == [25]
    assert sum(len(r.decisions) for r in results) == 25, "only the batch decided before the breaker opened"
    assert pending_count(redis_client) == 25, "the batch read ahead waits, pending on this consumer"

    with worker.breaker_lock:
        worker.breaker.reset("test")
    wait_settled(redis_client, 100)
    assert decided_ids(redis_client) == dict.fromkeys(ids, 1)


@pytest.mark.parametrize("failure", ["connection lost after the read", "NOGROUP before the read"])
def test_a_failed_read_ahead_commits_the_batch_decided_then_loses_and_doubles_nothing(
    redis_client: redis.Redis, worker_with_full_batches, failure: str
) -> None:
    """The read ahead fails (the connection drops after Redis delivered the entries, or the group is gone): the batch
    already decided is still committed, the breaker counts no failed batch, and after recovery every event is
    decided once — the entries delivered by the failed read are re-read from this consumer's pending list once."""
    worker, results, _, start = worker_with_full_batches
    reader = worker.reader
    assert reader is not None
    send, receive = reader.send, reader.receive
    sends: list[bool] = []  # each read of new entries sent: whether it never blocks (a read ahead)
    failed: list[str] = []

    # The first read of new entries is the loop's; the second reads ahead.
    def failing_second_send(start_id: str | bytes, count: int, block_ms: int | None = None) -> None:
        if start_id == ">":
            sends.append(block_ms is None)
        if len(sends) == 2 and failure.startswith("NOGROUP") and not failed:
            assert sends[1], "a read ahead never blocks"
            failed.append(failure)
            raise redis.ResponseError("NOGROUP No such key 'synergy_events' or consumer group (injected)")
        send(start_id, count, block_ms)

    def failing_second_receive() -> list[Message]:
        messages = receive()
        if len(sends) == 2 and failure.startswith("connection") and not failed:
            assert sends[1], "a read ahead never blocks"
            failed.append(failure)
            raise redis.ConnectionError("injected: connection lost after reading ahead")
        return messages

    reader.send = failing_second_send  # type: ignore[method-assign]
    reader.receive = failing_second_receive  # type: ignore[method-assign]
    ids = publish(redis_client, 200, "lost")
    start()
    wait_settled(redis_client, 200)
    wait_for(lambda: sum(len(r.decisions) for r in results) == 200, what="every batch's result recorded")
    assert decided(results[:1]) == [f"lost-{i}" for i in range(25)], "the batch decided before the failure went first"
    assert sum(r.duplicates for r in results) == 0, "no entry was read (and decided) twice"
    assert decided_ids(redis_client) == dict.fromkeys(ids, 1)
    assert failed == [failure]
    assert worker.breaker.consecutive_failures == 0 and worker.breaker.state.name == "CLOSED"
    connection_errors = 1 if failure.startswith("connection") else 0
    assert worker.telemetry.window.snapshot().errors == ({"read": 1} if connection_errors else {}), (
        "a lost connection is a read error; a missing group is recreated; neither is a failed batch")


def test_a_read_ahead_failing_with_its_batch_raises_the_batch_failure_alone(
    redis_client: redis.Redis, worker_with_full_batches
) -> None:
    """Redis goes away between the read ahead and the commit: the commit cannot be sent and the read's reply is lost.
    The batch's failure is the one counted and waited out; the read's, raised with it, is not raised again once
    Redis is back (a second error, a "Redis unavailable" warning and a backoff for an outage already over)."""
    worker, results, _, start = worker_with_full_batches
    reader, pipeline = worker.reader, worker.pipeline
    assert reader is not None and pipeline is not None
    receive, send_commit = reader.receive, pipeline.scripts.send_commit
    failed: list[str] = []

    def lost_commit(*args: Any) -> Any:
        if reader.awaiting and not failed:  # the first read ahead is out
            failed.append("commit")
            raise redis.ConnectionError("injected: Error 32 while writing to socket. Broken pipe.")
        return send_commit(*args)

    def lost_reply() -> list[Message]:
        messages = receive()
        if failed == ["commit"]:
            failed.append("read")
            raise redis.ConnectionError("injected: connection lost after reading ahead")
        return messages

    pipeline.scripts.send_commit = lost_commit  # type: ignore[method-assign]
    reader.receive = lost_reply  # type: ignore[method-assign]
    ids = publish(redis_client, 200, "outage")
    start()
    wait_settled(redis_client, 200)
    wait_for(lambda: sum(len(r.decisions) for r in results) == 200, what="every batch's result recorded")
    assert failed == ["commit", "read"]
    assert decided_ids(redis_client) == dict.fromkeys(ids, 1)
    assert sum(r.duplicates for r in results) == 0
    assert worker.telemetry.window.snapshot().errors == {"commit": 1}, "one outage, counted once"


def test_a_clean_exit_leaves_the_batch_read_ahead_pending_while_the_breaker_is_open(
    redis_client: redis.Redis, worker_in_this_thread
) -> None:
    worker, results = worker_in_this_thread

    def then_open_and_signal() -> None:
        worker.breaker.force_open("test: opened with a batch read ahead")
        worker.state.should_exit = True

    after_reading_ahead(worker, then_open_and_signal)
    publish(redis_client, 100, "open-exit")
    worker.main_loop()

    assert sum(len(r.decisions) for r in results) == len(decided_ids(redis_client)) == 25
    assert pending_count(redis_client) == 25, "an open breaker takes no events, even on the way out: they wait"
