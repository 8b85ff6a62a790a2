"""The operator commands against a real running `tactical-worker` process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import redis

from tests.cli.conftest import Ctl, worker_url
from tests.cli.streams import deliver_without_ack, pending_of, publish
from worker.alerts import recent_alerts
from worker.names import DECISIONS_STREAM
from worker.process import WorkerProcess
from worker.stream_entries import entries


def eventually(check: Callable[[], bool], *, timeout_s: float = 30.0, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.1)


def test_a_running_worker_is_healthy_alive_and_closed(
    ctl: Ctl, redis_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(redis_url, heartbeat_interval_s=0.5)
    url = worker_url(worker)
    eventually(lambda: ctl("health", worker_url=url).exit_code == 0, what="a healthy worker")
    result = ctl("health", "--json", worker_url=url)
    doc = json.loads(result.stdout)
    assert (doc["state"], doc["consumer"], doc["check"]) == ("healthy", worker.consumer, "ok")

    state = ctl("health", "state", worker_url=url)
    assert state.exit_code == 0
    assert "redis" in state.stdout and "consumer_lag" in state.stdout and "circuit breaker closed" in state.stdout

    eventually(lambda: ctl("breaker", "status", worker_url=url).exit_code == 0, what="a published closed breaker")
    status = json.loads(ctl("breaker", "status", "--json", worker_url=url).stdout)
    assert status["workers"][worker.consumer]["state_name"] == "closed"
    assert status["http"]["state"] == "closed"

    info = json.loads(ctl("stream", "info", "--json").stdout)
    alive = {c["name"]: c["alive"] for g in info["groups"] for c in g["consumers"]}
    assert alive.get(worker.consumer, worker.consumer in info["live_without_group"])


def test_breaker_reset_closes_a_breaker_opened_inside_a_running_worker(
    ctl: Ctl, redis_url: str, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # A restart limit of 0 makes the worker's own start exceed it: the breaker opens inside the worker, as after a
    # crash loop, and stays open (no half-open trial for 10 minutes).
    worker = start_worker(redis_url, breaker_restart_limit=0, breaker_reset_timeout_s=600, heartbeat_interval_s=0.5,
                          health_recovery_s=0.5)
    url = worker_url(worker)
    eventually(lambda: ctl("breaker", "status", worker_url=url).exit_code == 2, what="an open breaker")
    assert ctl("health", worker_url=url).exit_code == 2

    publish(redis_client, 3)
    time.sleep(1.0)
    assert redis_client.xlen(DECISIONS_STREAM) == 0  # while open, events wait in the stream

    reset = ctl("breaker", "reset", "--yes", "--json", worker_url=url)
    assert reset.exit_code == 0, reset.output
    receipt = json.loads(reset.stdout)
    assert receipt["honoured_by"] == [worker.consumer] and receipt["waiting_on"] == []
    audit = next(a for a in recent_alerts(redis_client, count=50) if a.id == receipt["audit_id"])
    assert (audit.severity, audit.kind) == ("AUDIT", "breaker_reset") and audit.actor

    eventually(lambda: ctl("breaker", "status", worker_url=url).exit_code == 0, what="the breaker to close")
    eventually(lambda: redis_client.xlen(DECISIONS_STREAM) >= 3, what="the waiting events to be decided")
    # Random test events carry low model confidence, so health may settle at degraded: it leaves critical.
    eventually(lambda: ctl("health", worker_url=url).exit_code < 2, what="health to leave critical")
    kinds = [e["kind"] for e in json.loads(ctl("breaker", "history", "--json").stdout)["entries"]]
    assert kinds[:1] == ["breaker_open"] and "breaker_reset" in kinds and "breaker_closed" in kinds


def test_pending_claim_hands_a_dead_consumers_entries_to_a_live_worker(
    ctl: Ctl, redis_url: str, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    publish(redis_client, 3, prefix="parked")
    parked = deliver_without_ack(redis_client, "crashed-worker", 3)  # as a worker that crashed mid-batch
    # The live worker reclaims idle entries by itself only after 8 s: until then, only the claim moves them.
    worker = start_worker(redis_url, claim_min_idle_ms=8000)

    refused = ctl("pending", "claim", "--to", "crashed-worker", "--idle", "0", "--yes")
    assert refused.exit_code == 3 and "no live heartbeat" in refused.stderr

    result = ctl("pending", "claim", "--to", worker.consumer, "--idle", "0", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["moved"] == [i.decode() for i in parked]
    assert set(pending_of(redis_client).values()) == {worker.consumer.encode()}
    eventually(lambda: redis_client.xlen(DECISIONS_STREAM) >= 3 and not pending_of(redis_client),
               what="the claimed entries to be decided by the live worker")


def test_dead_letter_replay_leaves_an_event_decided_since_from_a_resend(
    ctl: Ctl, redis_url: str, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    """The runbook's order: an event stuck on a dead worker is dead-lettered (`pending dead-letter`), the producer
    sends it again and a worker decides it, then `dead-letter replay --all --yes`. The replay used to say "replayed 1"
    and delete the dead letter while the worker only acked the copy as a duplicate (its completed key): nothing was
    decided, the duplicate counter rose. It is left out, listed with its decision, and the dead letter stays."""
    from worker.names import DEAD_LETTER_STREAM, INPUT_STREAM, completed_key

    publish(redis_client, 1, prefix="resent")
    deliver_without_ack(redis_client, "crashed-worker", 1)
    assert ctl("pending", "dead-letter", "--reason", "stuck on a dead worker", "--idle", "0", "--yes").exit_code == 0
    [(dead_id, _)] = entries(redis_client, DEAD_LETTER_STREAM)
    start_worker(redis_url)
    publish(redis_client, 1, prefix="resent")  # the producer's resend
    eventually(lambda: redis_client.exists(completed_key("resent-0")) == 1, what="the resend to be decided")
    completed = redis_client.get(completed_key("resent-0"))
    assert isinstance(completed, bytes)
    decision = completed.decode()

    dry = ctl("dead-letter", "replay", "--all", "--json")
    assert json.loads(dry.stdout)["decided"] == {dead_id.decode(): decision}
    done = ctl("dead-letter", "replay", "--all", "--yes", "--json")
    assert done.exit_code == 1, done.output  # nothing to replay
    doc = json.loads(done.stdout)
    assert (doc["replayed"], doc["decided"]) == ({}, {dead_id.decode(): decision})
    assert redis_client.xlen(DEAD_LETTER_STREAM) == 1 and redis_client.xlen(INPUT_STREAM) == 2
    said = ctl("dead-letter", "replay", "--all", "--yes")
    assert "decided since" in said.stdout and decision in said.stdout
    assert [f[b"correlation_id"] for _, f in entries(redis_client, DECISIONS_STREAM)] == [b"resent-0"]


def test_dead_letter_replay_leaves_an_event_decided_since_once_its_completed_key_expired(
    ctl: Ctl, redis_url: str, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    """As above, a day later: the resend's completed key has expired (TACTICAL_COMPLETED_TTL_S). The replay used to
    put the event back and the worker decided it a second time. Its decision in tactical_decisions tells it."""
    from worker.names import DEAD_LETTER_STREAM, completed_key

    publish(redis_client, 1, prefix="resent")
    deliver_without_ack(redis_client, "crashed-worker", 1)
    assert ctl("pending", "dead-letter", "--reason", "stuck on a dead worker", "--idle", "0", "--yes").exit_code == 0
    [(dead_id, _)] = entries(redis_client, DEAD_LETTER_STREAM)
    start_worker(redis_url, completed_ttl_s=1)
    publish(redis_client, 1, prefix="resent")  # the producer's resend
    eventually(lambda: redis_client.xlen(DECISIONS_STREAM) == 1, what="the resend to be decided")
    [(decision, _)] = entries(redis_client, DECISIONS_STREAM)
    eventually(lambda: redis_client.exists(completed_key("resent-0")) == 0, what="its completed key to expire")

    done = ctl("dead-letter", "replay", "--all", "--yes", "--json")
    assert done.exit_code == 1, done.output  # nothing to replay
    doc = json.loads(done.stdout)
    assert (doc["replayed"], doc["decided"]) == ({}, {dead_id.decode(): decision.decode()})
    assert redis_client.xlen(DEAD_LETTER_STREAM) == 1
    time.sleep(1.5)  # a replay would have been decided by now
    assert [f[b"correlation_id"] for _, f in entries(redis_client, DECISIONS_STREAM)] == [b"resent-0"]
