"""`tacticalctl stream info | trim`: XINFO STREAM / GROUPS / CONSUMERS with heartbeat liveness; retention."""

from __future__ import annotations

import json
import time
from typing import cast

import pytest
import redis

from tests.cli.conftest import Ctl
from tests.cli.streams import deliver_without_ack, publish, read_new
from worker.delivery import ensure_group
from worker.heartbeat import write_heartbeat
from worker.names import COMMANDS_STREAM, CONSUMER_GROUP, DEAD_LETTER_STREAM, DECISIONS_STREAM, INPUT_STREAM
from worker.stream_entries import entries


def test_info_tables_name_groups_consumers_and_liveness(ctl: Ctl, redis_client: redis.Redis) -> None:
    publish(redis_client, 4)
    deliver_without_ack(redis_client, "ghost", 2)
    deliver_without_ack(redis_client, "alive-1", 1)
    write_heartbeat(redis_client, "alive-1", interval_s=10.0, info={})
    write_heartbeat(redis_client, "starting-2", interval_s=10.0, info={})
    result = ctl("stream", "info")
    assert result.exit_code == 0
    out = result.stdout
    assert "tactical_group" in out and "entries added" in out
    assert "no heartbeat" in out and "alive" in out and "starting-2" in out
    doc = json.loads(ctl("stream", "info", "--json").stdout)
    assert (doc["length"], doc["entries_added"]) == (4, 4)
    (group,) = doc["groups"]
    assert (group["pending"], group["lag"], group["entries_read"]) == (3, 1, 3)
    assert {c["name"]: c["alive"] for c in group["consumers"]} == {"ghost": False, "alive-1": True}
    assert doc["live_without_group"] == ["starting-2"]


def test_info_of_a_missing_stream_says_so(ctl: Ctl) -> None:
    result = ctl("stream", "info", "--stream", "nope")
    assert result.exit_code == 3
    assert "stream 'nope' does not exist" in result.stderr


def test_info_of_a_key_of_another_type_names_its_type(ctl: Ctl, redis_client: redis.Redis) -> None:
    redis_client.set("not-a-stream", "x")
    result = ctl("stream", "info", "--stream", "not-a-stream")
    assert result.exit_code == 3
    assert "'not-a-stream' is a string, not a stream" in result.stderr


def test_info_names_any_of_the_systems_streams_that_holds_another_type(ctl: Ctl, redis_client: redis.Redis) -> None:
    # Where the worker's WRONGTYPE refusal leads: Redis's error does not name the key, this does.
    publish(redis_client, 2)
    redis_client.set(DEAD_LETTER_STREAM, "junk")
    result = ctl("stream", "info")
    assert result.exit_code == 1, result.output
    assert f"{DEAD_LETTER_STREAM} is a string, not a stream" in result.stderr and "RENAME" in result.stderr
    assert "stream synergy_events" in result.stdout  # the input stream is still shown
    assert json.loads(ctl("stream", "info", "--json").stdout)["not_streams"] == {DEAD_LETTER_STREAM: "string"}
    redis_client.delete(DEAD_LETTER_STREAM)
    assert ctl("stream", "info").exit_code == 0


def _old_decisions(client: redis.Redis, count: int, hours_ago: float) -> list[bytes]:
    seconds, micros = client.time()
    start = seconds * 1000 + micros // 1000 - int(hours_ago * 3_600_000)
    return [cast(bytes, client.xadd(DECISIONS_STREAM, {"n": str(i)}, id=f"{start}-{i + 1}")) for i in range(count)]


def test_trim_shows_what_would_go_then_trims_with_yes(ctl: Ctl, redis_client: redis.Redis) -> None:
    _old_decisions(redis_client, 4, hours_ago=48)
    kept = redis_client.xadd(DECISIONS_STREAM, {"n": "new"})

    dry = ctl("stream", "trim", "--older-than", "24h")
    assert dry.exit_code == 0, dry.stdout + dry.stderr
    assert DECISIONS_STREAM in dry.stdout and "older than 24h" in dry.stdout
    assert "would remove" in dry.stdout
    assert "dry run: would remove 4 entries; nothing removed. Add --yes to trim." in dry.stdout
    assert redis_client.xlen(DECISIONS_STREAM) == 5
    planned = json.loads(ctl("stream", "trim", "--older-than", "24h", "--json").stdout)
    assert {s["stream"]: (s["would_remove"], s["would_remove_exact"]) for s in planned["streams"]} == {
        INPUT_STREAM: (0, True), DECISIONS_STREAM: (4, True), COMMANDS_STREAM: (0, True)}

    applied = json.loads(ctl("stream", "trim", "--older-than", "24h", "--yes", "--json").stdout)
    assert applied["applied"] and applied["removed"] == {DECISIONS_STREAM: 4} and applied["audit_id"]
    assert {s["stream"]: s["cutoff_reason"] for s in applied["streams"]} == {
        INPUT_STREAM: "no such stream", DECISIONS_STREAM: "older than 86400 s", COMMANDS_STREAM: "no such stream"}
    assert [entry_id for entry_id, _ in entries(redis_client, DECISIONS_STREAM)] == [kept]

    again = ctl("stream", "trim", "--older-than", "24h", "--yes")
    assert again.exit_code == 0 and "nothing to trim" in again.stdout


def test_trim_keeps_what_a_worker_holds_and_says_why(ctl: Ctl, redis_client: redis.Redis) -> None:
    publish(redis_client, 3)
    held = deliver_without_ack(redis_client, "ghost", 1)

    doc = json.loads(ctl("stream", "trim", "--older-than", "1ms", "--stream", INPUT_STREAM, "--yes", "--json").stdout)

    [plan] = doc["streams"]
    assert plan["cutoff_id"] == held[0].decode()
    assert plan["cutoff_reason"] == "group tactical_group: oldest pending entry"
    assert redis_client.xlen(INPUT_STREAM) == 3  # the pending entry is the oldest: nothing before it


@pytest.mark.parametrize(("args", "said"), [
    (["--stream", DEAD_LETTER_STREAM], "dead letters wait for an operator"),
    (["--older-than", "soon"], "--older-than"),
])
def test_trim_refuses_what_it_cannot_use(ctl: Ctl, args: list[str], said: str) -> None:
    result = ctl("stream", "trim", *args)
    assert result.exit_code == 3 and said in result.stderr


def test_prune_consumers_shows_then_removes_with_yes(ctl: Ctl, redis_client: redis.Redis) -> None:
    ensure_group(redis_client)
    redis_client.xadd(INPUT_STREAM, {"correlation_id": "c-1"})
    [(entry_id, _)] = read_new(redis_client, "gone-worker")
    redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, entry_id)
    time.sleep(0.2)
    dry = ctl("stream", "prune-consumers", "--idle", "100ms")
    assert dry.exit_code == 0 and "gone-worker" in dry.stdout and "dry run" in dry.stdout
    assert "Add --yes to remove this name." in dry.stdout
    doc = json.loads(ctl("stream", "prune-consumers", "--idle", "100ms", "--yes", "--json").stdout)
    assert doc["removed"] == ["gone-worker"] and doc["audit_id"]
    assert redis_client.xinfo_consumers(INPUT_STREAM, CONSUMER_GROUP) == []
    assert "no consumer to remove" in ctl("stream", "prune-consumers", "--idle", "100ms").stdout
    assert ctl("stream", "prune-consumers", "--idle", "soon").exit_code == 3


def test_info_is_one_snapshot_while_a_worker_reads_and_acks(redis_url: str, redis_client: redis.Redis) -> None:
    # Read one XINFO after another, a busy group could show more entries read than the stream had added, or a
    # pending count its consumers do not sum to: the figures an operator compares.
    import threading

    from worker.ops.stream_info import read_stream_overview

    ensure_group(redis_client)
    stop = threading.Event()

    def busy_worker() -> None:
        client = redis.Redis.from_url(redis_url)
        while not stop.is_set():
            pipe = client.pipeline(transaction=False)
            for _ in range(20):
                pipe.xadd(INPUT_STREAM, {"n": "1"})
            pipe.execute()
            ids = [entry_id for entry_id, _ in read_new(client, "w-1", count=20)]
            if ids:
                client.xack(INPUT_STREAM, CONSUMER_GROUP, *ids[: len(ids) // 2])  # half stays pending
        client.close()

    worker = threading.Thread(target=busy_worker, daemon=True)
    worker.start()
    try:
        for _ in range(300):
            overview = read_stream_overview(redis_client)
            [group] = overview.groups
            assert overview.entries_added is not None
            assert (group.entries_read or 0) <= overview.entries_added, overview  # None: nothing read yet
            assert group.pending == sum(c.pending for c in group.consumers), overview
    finally:
        stop.set()
        worker.join(timeout=10)


def test_groups_created_and_destroyed_while_info_reads_show_their_consumers(redis_url: str,
                                                                           redis_client: redis.Redis) -> None:
    # Downstream readers come and go: a group made between a look at the groups and the snapshot showed pending
    # entries and no consumer holding them.
    import threading

    from worker.ops.stream_info import read_stream_overview

    publish(redis_client, 50)
    stop = threading.Event()

    def churn() -> None:
        client = redis.Redis.from_url(redis_url)
        while not stop.is_set():
            for name in ("g0", "g1", "g2"):
                client.xgroup_create(INPUT_STREAM, name, id="0")
                client.xreadgroup(name, "reader", {INPUT_STREAM: ">"}, count=5)
                client.xgroup_destroy(INPUT_STREAM, name)
        client.close()

    churner = threading.Thread(target=churn, daemon=True)
    churner.start()
    try:
        seen = 0
        for _ in range(300):
            for group in read_stream_overview(redis_client).groups:
                seen += group.pending > 0
                assert group.pending == sum(c.pending for c in group.consumers), group
        assert seen > 0, "the churn was never caught mid-way: the test proved nothing"
    finally:
        stop.set()
        churner.join(timeout=10)


def test_trim_at_maxmemory_says_what_it_removed_when_the_audit_entry_is_refused(
    ctl: Ctl, redis_client: redis.Redis
) -> None:
    # The runbook's remedy for OOM: Redis takes the XTRIMs (they free memory) but refuses the audit entry's XADD. The
    # trim happened: the operator must be told what went, and that the audit trail misses it, not "refused".
    _old_decisions(redis_client, 4, hours_ago=48)
    kept = redis_client.xadd(DECISIONS_STREAM, {"n": "new"})
    redis_client.config_set("maxmemory", 1)
    try:
        result = ctl("stream", "trim", "--older-than", "24h", "--yes")
        left = [entry_id for entry_id, _ in entries(redis_client, DECISIONS_STREAM)]
        as_json = ctl("stream", "trim", "--older-than", "1ms", "--yes", "--json")
    finally:
        redis_client.config_set("maxmemory", 0)
    assert result.exit_code == 1, result.output
    assert "removed 4 entries" in result.stdout
    assert "audit entry not written" in result.stdout and "maxmemory" in result.stdout
    assert left == [kept]
    doc = json.loads(as_json.stdout)
    assert as_json.exit_code == 1
    assert doc["removed"] == {DECISIONS_STREAM: 1} and doc["audit_id"] is None and "maxmemory" in doc["audit_error"]


def test_prune_consumers_at_maxmemory_says_what_it_removed_when_the_audit_entry_is_refused(
    ctl: Ctl, redis_client: redis.Redis
) -> None:
    ensure_group(redis_client)
    redis_client.xadd(INPUT_STREAM, {"correlation_id": "c-1"})
    [(entry_id, _)] = read_new(redis_client, "gone-worker")
    redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, entry_id)
    time.sleep(0.2)
    redis_client.config_set("maxmemory", 1)
    try:
        result = ctl("stream", "prune-consumers", "--idle", "100ms", "--yes")
    finally:
        redis_client.config_set("maxmemory", 0)
    assert result.exit_code == 1, result.output
    assert "removed 1 consumers" in result.stdout and "audit entry not written" in result.stdout
    assert redis_client.xinfo_consumers(INPUT_STREAM, CONSUMER_GROUP) == []
