"""`tacticalctl backup` / `restore` against real servers and real workers: the disaster-recovery round trip."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import pytest
import redis
from typer.testing import CliRunner, Result

from tacticalctl.app import app
from tests.events import many_events
from tests.integration.streams import command_ids, decided_ids, executed_decisions, pending_count, wait_for
from worker import stream_entries
from worker.backup import checksum_path, sha256_path
from worker.embedded_redis import EmbeddedRedis, free_port
from worker.events import encode_event
from worker.heartbeat import write_heartbeat
from worker.names import (
    ALERTS_STREAM,
    BREAKER_RESTARTS_KEY,
    COMMANDS_STREAM,
    CONSUMER_GROUP,
    DEAD_LETTER_STREAM,
    DECISIONS_STREAM,
    INPUT_STREAM,
    completed_key,
)
from worker.producer import publish_events
from worker.records import SynergyEvent
from worker.redis_text import server_label
from worker.restore import verify_restored_models
from worker.settings import default_models_dir
from worker.stream_archive import CHUNK

CLEAN_ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TACTICAL_REDIS_PASSWORD_FILE": "", "TACTICAL_REDIS_TLS_CA": "",
             "TACTICAL_REDIS_TLS_CERT": "", "TACTICAL_REDIS_TLS_KEY": ""}


def tacticalctl(redis_url: str, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["--redis-url", redis_url, *args], env={**CLEAN_ENV, **(env or {})},
                              catch_exceptions=False)


def events(n: int, prefix: str, seed: int = 0) -> list[SynergyEvent]:
    return many_events(n, prefix=prefix, seed=seed, directions=(-1, 1))


def alert_kinds(client: redis.Redis) -> list[bytes]:
    return [fields[b"kind"] for _, fields in stream_entries.entries(client, ALERTS_STREAM)]


@pytest.fixture
def source(tmp_path: Path):
    with EmbeddedRedis(data_dir=tmp_path / "source", appendonly=False) as server:
        yield server


@pytest.fixture
def target(tmp_path: Path):
    with EmbeddedRedis(data_dir=tmp_path / "target", appendonly=False) as server:
        yield server


def test_round_trip_under_load_decides_every_event_exactly_once(tmp_path: Path, source: EmbeddedRedis,
                                                                 target: EmbeddedRedis, start_worker) -> None:
    a = redis.Redis.from_url(source.url())
    publish_events(a, events(200, "early"))
    worker = start_worker(source.url(), consumer="source-worker", claim_min_idle_ms=600_000, batch_size=10)
    wait_for(lambda: a.xlen(DECISIONS_STREAM) >= 200 and pending_count(a) == 0, what="200 early decisions")

    # A consumer that dies holding 50 entries: 20 re-sends of decided events and 30 new ones, given to it alone.
    with a.pipeline(transaction=True) as pipe:
        for event in events(20, "early") + events(30, "orphan", seed=1):
            pipe.xadd(INPUT_STREAM, encode_event(event))  # type: ignore[arg-type]
        pipe.xreadgroup(CONSUMER_GROUP, "ghost", {INPUT_STREAM: ">"}, count=50)
        pipe.execute()
    assert len(a.xpending_range(INPUT_STREAM, CONSUMER_GROUP, "-", "+", 100, consumername="ghost")) == 50

    stop_producing = threading.Event()

    def produce() -> None:
        live = events(3000, "live", seed=2)
        for start in range(0, len(live), 20):
            if stop_producing.is_set():
                return
            publish_events(a, live[start:start + 20])
            time.sleep(0.04)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_for(lambda: a.xlen(DECISIONS_STREAM) >= 400, what="the worker deciding live events")
        archive = tmp_path / "backups" / "tactical.tar.gz"
        archive.parent.mkdir()
        result = tacticalctl(source.url(), "backup", str(archive), "--json")
        assert result.exit_code == 0, result.output
        assert worker.poll() is None and producer.is_alive(), "the backup ran while events were being decided"
        audit_id = json.loads(result.stdout)["audit_id"]
        decided_at_backup = a.xlen(DECISIONS_STREAM)
        wait_for(lambda: a.xlen(DECISIONS_STREAM) > decided_at_backup + 50, what="the worker still deciding")
    finally:
        stop_producing.set()
        producer.join()
    expiry_at_source = a.pexpiretime(completed_key("early-0"))
    # The backup's own audit entry (the running worker may have alerted since: a health transition under load).
    [(_, audited)] = stream_entries.entries(a, ALERTS_STREAM, lower=audit_id, upper=audit_id)
    assert audited[b"kind"] == b"backup"
    worker.kill()  # the disaster: the source is gone with whatever it decided after the backup
    a.close()
    source.stop(kill=True)

    report = json.loads(result.stdout)
    assert report["sha256"] == checksum_path(archive).read_text().split()[0]
    assert report["keys"]["completed"] >= 200

    models_dir = tmp_path / "restored-models"
    restored = tacticalctl(target.url(), "restore", str(archive), "--models-dir", str(models_dir), "--json")
    assert restored.exit_code == 0, restored.output
    restore_doc = json.loads(restored.stdout)
    assert restore_doc["verified"] is True and restore_doc["differences"] == []

    b = redis.Redis.from_url(target.url())
    ghost = b.xpending_range(INPUT_STREAM, CONSUMER_GROUP, "-", "+", 100, consumername="ghost")
    assert len(ghost) == 50 and {row["times_delivered"] for row in ghost} == {1}
    assert b.pexpiretime(completed_key("early-0")) == expiry_at_source
    assert any(member.startswith(b"source-worker@")
               for member in cast(list[bytes], b.zrange(BREAKER_RESTARTS_KEY, 0, -1)))
    assert alert_kinds(b)[-1] == b"restore"
    held = stream_entries.entries(b, DECISIONS_STREAM)
    expected = {fields[b"correlation_id"] for _, fields in stream_entries.entries(b, INPUT_STREAM)}
    assert {f"orphan-{i}".encode() for i in range(30)} <= expected

    start_worker(target.url(), consumer="target-worker", models_dir=models_dir, claim_min_idle_ms=300)
    wait_for(lambda: b.xlen(DECISIONS_STREAM) >= len(expected) and pending_count(b) == 0
             and b.xinfo_groups(INPUT_STREAM)[0]["lag"] == 0, timeout_s=60, what="every event decided")
    time.sleep(0.5)  # anything decided twice would show up now

    kept = stream_entries.entries(b, DECISIONS_STREAM, count=len(held))
    assert kept == held, "the decisions the backup held are kept as they were"
    decided = decided_ids(b)
    assert set(decided) == expected
    assert max(decided.values()) == 1, [cid for cid, n in decided.items() if n > 1][:5]
    assert command_ids(b) == executed_decisions(b)
    assert pending_count(b) == 0


def _small_state(client: redis.Redis) -> None:
    publish_events(client, events(5, "small"))
    client.xgroup_create(INPUT_STREAM, CONSUMER_GROUP, id="0")
    client.xreadgroup(CONSUMER_GROUP, "c1", {INPUT_STREAM: ">"}, count=2)
    decision = client.xadd(DECISIONS_STREAM, {"correlation_id": "small-0"})
    client.set(completed_key("small-0"), decision, ex=3600)


def test_a_backup_holds_redis_for_copies_and_reads_them_in_short_ranges(tmp_path: Path,
                                                                         source: EmbeddedRedis) -> None:
    """The snapshot's transaction only COPYs the streams: no DUMP of a whole stream holds Redis (~0.8 s at 50,000 +
    50,000 entries). The copies are read in ranges of at most CHUNK entries, between which Redis serves the
    workers, and deleted. The operator is told how long the transaction held Redis (Redis's clock)."""
    a = redis.Redis.from_url(source.url())
    pipe = a.pipeline(transaction=False)
    for event in events(1200, "held"):
        pipe.xadd(INPUT_STREAM, encode_event(event))  # type: ignore[arg-type]
    pipe.execute()
    a.config_set("slowlog-log-slower-than", 0)
    a.config_set("slowlog-max-len", 10_000)
    a.slowlog_reset()

    result = tacticalctl(source.url(), "backup", str(tmp_path / "b.tar.gz"), "--no-models", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    commands = [entry["command"] for entry in a.slowlog_get(10_000)]
    copies_us = sum(entry["duration"] for entry in a.slowlog_get(10_000) if entry["command"].startswith(b"COPY "))
    assert not [c for c in commands if c.startswith(b"DUMP " + INPUT_STREAM.encode())], "no DUMP of the stream"
    ranges = [c.split() for c in commands if c.startswith(b"XRANGE tactical:backup:")]
    assert len(ranges) >= 1200 // CHUNK and all(int(c[-1]) <= CHUNK for c in ranges), ranges
    assert copies_us > 0 and report["redis"]["snapshot_held_ms"] >= copies_us / 1000  # it spans every COPY
    assert report["redis"]["method"].startswith("streams: COPY in one MULTI/EXEC")
    info = a.info("server")
    assert report["redis"]["server"] == server_label(info) and report["redis"]["version"] == info["redis_version"]
    assert not list(a.scan_iter(match="tactical:backup:*")), "the copies are deleted"
    text = tacticalctl(source.url(), "backup", str(tmp_path / "c.tar.gz"), "--no-models")
    assert "the snapshot held Redis" in text.stdout


@contextmanager
def _no_room_for_copies(client: redis.Redis) -> Iterator[None]:
    """maxmemory with room for a backup's own writes (its audit entry), not for copies of the streams."""
    publish_events(client, events(200, "more"))
    streams = sum(client.memory_usage(name) or 0 for name in (INPUT_STREAM, DECISIONS_STREAM))
    client.config_set("maxmemory", str(int(client.info("memory")["used_memory"]) + streams))
    try:
        yield
    finally:
        client.config_set("maxmemory", "0")


def test_without_memory_for_copies_a_backup_dumps_in_the_transaction_and_says_so(
    tmp_path: Path, source: EmbeddedRedis, target: EmbeddedRedis
) -> None:
    a = redis.Redis.from_url(source.url())
    _small_state(a)
    with _no_room_for_copies(a):
        result = tacticalctl(source.url(), "backup", str(tmp_path / "b.tar.gz"), "--no-models", "--json")
    assert result.exit_code == 0, result.output
    method = json.loads(result.stdout)["redis"]["method"]
    assert method.startswith("streams: DUMP in one MULTI/EXEC (dump: copies of the streams"), method
    assert "maxmemory" in method

    restored = tacticalctl(target.url(), "restore", str(tmp_path / "b.tar.gz"), "--no-models", "--json")
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["verified"] is True
    b = redis.Redis.from_url(target.url())
    assert b.xrange(INPUT_STREAM) == a.xrange(INPUT_STREAM)
    assert b.xpending_range(INPUT_STREAM, CONSUMER_GROUP, "-", "+", 10) != []


def test_a_rebuilt_stream_keeps_its_ids_counters_groups_and_pending_entries(
    tmp_path: Path, source: EmbeddedRedis, target: EmbeddedRedis
) -> None:
    """What a DUMP kept, the entry-by-entry archive keeps too: deleted ids and counters (XINFO STREAM), each group's
    last-delivered-id and entries-read, consumers without pending entries, each pending entry's consumer, delivery
    count and idle time. A pending entry whose stream entry was deleted has no content to restore: said, and not a
    difference."""
    a = redis.Redis.from_url(source.url())
    _small_state(a)  # 5 events, 2 of them pending on c1
    [(first, _), (second, _)] = stream_entries.entries(a, INPUT_STREAM, count=2)
    a.xclaim(INPUT_STREAM, CONSUMER_GROUP, "c2", 0, [second], retrycount=4)
    a.xgroup_createconsumer(INPUT_STREAM, CONSUMER_GROUP, "idle-consumer")
    a.xgroup_create(INPUT_STREAM, "audit-readers", id=second)
    odd_group = b"readers \xff"  # not UTF-8, and a pending entry of it deleted
    a.xgroup_create(INPUT_STREAM, odd_group, id="0")
    a.xreadgroup(odd_group, "r", {INPUT_STREAM: ">"}, count=1)  # type: ignore[arg-type]  # typed str; bytes go as given
    a.xdel(INPUT_STREAM, first)  # pending on c1, its entry gone
    a.xadd(DEAD_LETTER_STREAM, {"kind": "x"}, id="1-1")
    a.xdel(DEAD_LETTER_STREAM, "1-1")  # an empty stream with a history
    a.xgroup_create(DECISIONS_STREAM + "-none", "g", mkstream=True)  # not backed up: not a tactical stream
    a.execute_command("XADD", INPUT_STREAM, "*", "k", "v1", "k", "v2")  # a repeated field name keeps both values
    a.xadd(COMMANDS_STREAM, {"c": "1"})
    a.xgroup_create(COMMANDS_STREAM, "downstream", id="0")
    a.pexpire(COMMANDS_STREAM, 1500)  # expires while it sits in the archive, groups and all
    archive = tmp_path / "b.tar.gz"
    assert tacticalctl(source.url(), "backup", str(archive), "--no-models").exit_code == 0
    time.sleep(1.6)

    restored = tacticalctl(target.url(), "restore", str(archive), "--no-models", "--json")
    assert restored.exit_code == 0, restored.output
    doc = json.loads(restored.stdout)
    assert doc["verified"] is True, doc["differences"]
    assert doc["pending_without_entry"] == {f"{INPUT_STREAM}/{CONSUMER_GROUP}": [first.decode()],
                                            f"{INPUT_STREAM}/readers \ufffd": [first.decode()]}
    assert doc["expired"] == 1 and not redis.Redis.from_url(target.url()).exists(COMMANDS_STREAM)
    text = tacticalctl(target.url(), "restore", str(archive), "--no-models", "--force", "--yes")
    assert f"{INPUT_STREAM}/{CONSUMER_GROUP}: 1 pending entries not restored" in text.stdout, text.output
    # What the runbook does next, with what the target now holds: c2's one entry (c1's had no entry to restore).
    assert "next: start the workers" in text.stdout and "reclaim the 1 restored pending entries" in text.stdout
    b = redis.Redis.from_url(target.url())
    for stream in (INPUT_STREAM, DEAD_LETTER_STREAM):
        want, got = a.xinfo_stream(stream), b.xinfo_stream(stream)
        for name in ("length", "last-generated-id", "max-deleted-entry-id", "entries-added", "first-entry"):
            assert got[name] == want[name], (stream, name)
    assert b.xrange(INPUT_STREAM) == a.xrange(INPUT_STREAM)
    groups = {g["name"]: g for g in b.xinfo_groups(INPUT_STREAM)}
    assert groups[b"audit-readers"]["last-delivered-id"] == second and groups[b"audit-readers"]["pending"] == 0
    assert {c["name"] for c in b.xinfo_consumers(INPUT_STREAM, CONSUMER_GROUP)} == {b"c1", b"c2", b"idle-consumer"}
    [row] = b.xpending_range(INPUT_STREAM, CONSUMER_GROUP, "-", "+", 10)
    assert (row["message_id"], row["consumer"], row["times_delivered"]) == (second, b"c2", 4)
    assert not b.exists(DECISIONS_STREAM + "-none")


def test_restore_refuses_a_non_empty_target_unless_forced(tmp_path: Path, source: EmbeddedRedis) -> None:
    a = redis.Redis.from_url(source.url())
    _small_state(a)
    archive = tmp_path / "b.tar.gz"
    assert tacticalctl(source.url(), "backup", str(archive), "--no-models").exit_code == 0
    a.xadd(INPUT_STREAM, encode_event(events(1, "after")[0]))  # type: ignore[arg-type]
    a.set(completed_key("after-0"), "1-1")

    refused = tacticalctl(source.url(), "restore", str(archive), "--no-models")
    assert refused.exit_code == 2
    assert refused.stderr.startswith("tacticalctl: the target is not empty") and refused.stderr.count("\n") == 1
    assert a.xlen(INPUT_STREAM) == 6, "nothing was changed"

    shown = tacticalctl(source.url(), "restore", str(archive), "--no-models", "--force", "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["applied"] is False, "--force alone shows what it would do"
    assert a.xlen(INPUT_STREAM) == 6
    forced = tacticalctl(source.url(), "restore", str(archive), "--no-models", "--force", "--yes", "--json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["verified"] is True
    assert a.xlen(INPUT_STREAM) == 5
    assert not a.exists(completed_key("after-0")), "--force replaces the target's tactical keys"
    assert a.exists(completed_key("small-0"))


def test_models_only_restores_the_bundles_onto_a_new_host_and_leaves_a_live_redis_alone(
    tmp_path: Path, source: EmbeddedRedis
) -> None:
    """The runbook's Service Recovery: the worker host is lost, Redis is fine and busy. Restoring the whole archive
    would roll Redis back (decisions lost, events decided twice); --models-only touches only the models directory."""
    a = redis.Redis.from_url(source.url())
    _small_state(a)
    archive = tmp_path / "b.tar.gz"
    assert tacticalctl(source.url(), "backup", str(archive)).exit_code == 0
    a.xadd(INPUT_STREAM, encode_event(events(1, "after")[0]))  # type: ignore[arg-type]
    a.set(completed_key("after-0"), "1-1")
    before = {name: a.xlen(name) for name in (INPUT_STREAM, DECISIONS_STREAM)}
    write_heartbeat(a, "other-host:1", interval_s=30.0, info={})  # a worker on another host still runs

    refused = tacticalctl(source.url(), "restore", str(archive), "--models-dir", str(tmp_path / "new-host"))
    assert refused.exit_code == 2 and "--models-only" in refused.stderr

    new_host = tmp_path / "new-host"
    result = tacticalctl(source.url(), "restore", str(archive), "--models-only", "--models-dir", str(new_host))
    assert result.exit_code == 0, result.output
    assert "Redis: left as it is (--models-only)" in result.stdout
    # Nothing of Redis is restored: no "streams to restore" table, no target contents (workers running there are
    # no reason to stop), as the dry run says too (below).
    assert "streams to restore" not in result.stdout and "running workers" not in result.stdout, result.stdout
    assert f"next: `tacticalctl models verify --models-dir {new_host}`, then start the worker" in result.stdout
    verified = next(line for line in result.stdout.splitlines() if line.startswith("verified"))
    assert "model files match the backup" in verified and "streams" not in verified  # only what was checked
    assert {name: a.xlen(name) for name in before} == before and a.exists(completed_key("after-0"))
    shipped = default_models_dir()
    current = (shipped / "CURRENT").read_text().strip()
    assert (new_host / "CURRENT").read_text().strip() == current
    assert (new_host / current / "fvg.pt").read_bytes() == (shipped / current / "fvg.pt").read_bytes()
    assert alert_kinds(a)[-1] == b"restore"

    both = tacticalctl(source.url(), "restore", str(archive), "--models-only", "--no-models")
    assert both.exit_code == 3

    # A file damaged on the host is rewritten by the next restore (--force: it differs), and the check reads what
    # is on disk.
    (new_host / current / "fvg.pt").write_bytes(b"damaged")
    dry = tacticalctl(source.url(), "restore", str(archive), "--models-only", "--models-dir", str(new_host),
                      "--dry-run")
    assert f"model bundles: into {new_host}; files there that differ: 1" in dry.stdout
    assert "Redis: left as it is (--models-only)" in dry.stdout and "streams to restore" not in dry.stdout
    assert dry.exit_code == 2 and "add --force --yes to overwrite them, or name another --models-dir" in dry.stderr
    assert "--no-models" not in dry.stderr, "with --models-only, --no-models leaves nothing to restore"
    files = {f"models/{current}/fvg.pt": {"sha256": sha256_path(shipped / current / "fvg.pt")}}
    assert verify_restored_models(new_host, files) == (f"model file {current}/fvg.pt differs from the backup (sha256)",)
    again = tacticalctl(source.url(), "restore", str(archive), "--models-only", "--models-dir", str(new_host),
                        "--force", "--yes")
    assert again.exit_code == 0, again.output
    assert f"model bundles: into {new_host}; 1 that differed overwritten (--force)" in again.stdout
    assert verify_restored_models(new_host, files) == ()


def test_models_only_restores_the_bundles_on_a_new_host_before_redis_is_back(
    tmp_path: Path, source: EmbeddedRedis
) -> None:
    """The runbook's Full System Recovery: the models are restored on a new host, often before Redis answers. Nothing
    of the restore needs Redis but its audit entry: the bundles are restored and verified, the entry not written is
    said (record it by hand), exit 1. A restore of Redis still needs Redis, as before."""
    archive = _backup_of_small_state(tmp_path, source)
    nobody = f"redis://127.0.0.1:{free_port()}/2"
    shipped = default_models_dir()
    current = (shipped / "CURRENT").read_text().strip()
    files = {f"models/{current}/fvg.pt": {"sha256": sha256_path(shipped / current / "fvg.pt")}}

    dry = tacticalctl(nobody, "restore", str(archive), "--models-only", "--models-dir", str(tmp_path / "new-host"),
                      "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "Redis: left as it is (--models-only)" in dry.stdout and "dry run: nothing changed" in dry.stdout
    assert "the restore will not be audited in tactical_alerts unless Redis answers" in dry.stdout
    assert not (tmp_path / "new-host").exists()

    new_host = tmp_path / "new-host"
    result = tacticalctl(nobody, "restore", str(archive), "--models-only", "--models-dir", str(new_host))
    assert result.exit_code == 1, result.output
    assert "Redis: left as it is (--models-only)" in result.stdout
    verified = next(line for line in result.stdout.splitlines() if line.startswith("verified"))
    assert "model files match the backup" in verified and "audit entry" not in verified, verified
    not_written = next(line for line in result.stdout.splitlines() if line.startswith("audit entry not written"))
    assert "Redis unreachable at redis://127.0.0.1:" in not_written and "record it by hand" in not_written
    assert f"next: `tacticalctl models verify --models-dir {new_host}`, then start the worker" in result.stdout
    assert (new_host / "CURRENT").read_text().strip() == current
    assert verify_restored_models(new_host, files) == ()

    as_json = tmp_path / "new-host-json"
    doc_run = tacticalctl(nobody, "restore", str(archive), "--models-only", "--models-dir", str(as_json), "--json")
    assert doc_run.exit_code == 1, doc_run.output
    doc = json.loads(doc_run.stdout)
    assert doc["applied"] is True and doc["verified"] is True and doc["audit_id"] is None
    assert doc["audit_error"].startswith("Redis unreachable at redis://127.0.0.1:")
    assert doc["target"] is None, "Redis was not read: nothing is known of it"
    assert f"{current}/fvg.pt" in doc["model_files_written"]
    assert verify_restored_models(as_json, files) == ()

    whole = tacticalctl(nobody, "restore", str(archive), "--models-dir", str(tmp_path / "whole"))
    assert whole.exit_code == 2 and whole.stderr.startswith("tacticalctl: Redis unreachable at "), whole.output
    assert not (tmp_path / "whole").exists()

    # With Redis answering, as before: exit 0, audited.
    a = redis.Redis.from_url(source.url())
    up = tacticalctl(source.url(), "restore", str(archive), "--models-only", "--models-dir", str(tmp_path / "up"),
                     "--json")
    assert up.exit_code == 0, up.output
    doc = json.loads(up.stdout)
    assert doc["audit_error"] is None and doc["target"] is None, "Redis is not read for a models-only plan"
    last_id, last = stream_entries.entries(a, ALERTS_STREAM, count=1, newest_first=True)[0]
    assert (last_id.decode(), last[b"kind"], last[b"models_only"]) == (doc["audit_id"], b"restore", b"true")


def test_restore_refuses_while_a_worker_runs_against_the_target(tmp_path: Path, source: EmbeddedRedis,
                                                                target: EmbeddedRedis) -> None:
    _small_state(redis.Redis.from_url(source.url()))
    archive = tmp_path / "b.tar.gz"
    assert tacticalctl(source.url(), "backup", str(archive), "--no-models").exit_code == 0
    b = redis.Redis.from_url(target.url())
    write_heartbeat(b, "host:4242", interval_s=30, info={})
    result = tacticalctl(target.url(), "restore", str(archive), "--no-models", "--force", "--yes")
    assert result.exit_code == 2
    assert "workers are running against the target (host:4242)" in result.stderr
    assert not b.exists(INPUT_STREAM)


def test_a_damaged_or_altered_archive_is_refused(tmp_path: Path, source: EmbeddedRedis,
                                                 target: EmbeddedRedis) -> None:
    _small_state(redis.Redis.from_url(source.url()))
    archive = tmp_path / "b.tar.gz"
    assert tacticalctl(source.url(), "backup", str(archive)).exit_code == 0

    damaged = tmp_path / "damaged.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    shutil.copy(checksum_path(archive), checksum_path(damaged))
    result = tacticalctl(target.url(), "restore", str(damaged), "--no-models")
    assert result.exit_code == 2
    assert "does not match" in result.stderr and "damaged or was altered" in result.stderr

    # Altered with care: a member rewritten and the archive rebuilt, no .sha256 beside it. The manifest catches it.
    altered = tmp_path / "altered.tar.gz"
    with tarfile.open(archive) as original, tarfile.open(altered, "w:gz") as rebuilt:
        for member in original:
            content = original.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "redis/completed.jsonl":
                content = content.replace(b"small-0", b"small-9")
            member.size = len(content)
            rebuilt.addfile(member, io.BytesIO(content))
    result = tacticalctl(target.url(), "restore", str(altered), "--no-models")
    assert result.exit_code == 2
    assert "member 'redis/completed.jsonl' has SHA-256" in result.stderr
    assert redis.Redis.from_url(target.url()).dbsize() == 0


def test_completed_keys_keep_their_expiry_and_later_ones_stay_out(tmp_path: Path, source: EmbeddedRedis,
                                                                  target: EmbeddedRedis) -> None:
    a = redis.Redis.from_url(source.url())
    _small_state(a)
    a.set(completed_key("short-lived"), a.xadd(DECISIONS_STREAM, {"correlation_id": "short-lived"}), px=600)
    a.set(completed_key("from-the-future"), "99999999999999-0", ex=3600)  # a decision newer than the snapshot
    archive = tmp_path / "b.tar.gz"
    result = tacticalctl(source.url(), "backup", str(archive), "--no-models", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["keys"]["completed_newer_than_snapshot"] == 1
    time.sleep(0.7)  # the short-lived key's absolute expiry passes while it sits in the archive

    restored = tacticalctl(target.url(), "restore", str(archive), "--no-models", "--json")
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["expired"] == 1
    b = redis.Redis.from_url(target.url())
    assert b.exists(completed_key("small-0"))
    assert b.pexpiretime(completed_key("small-0")) == a.pexpiretime(completed_key("small-0"))
    assert not b.exists(completed_key("short-lived"))
    assert not b.exists(completed_key("from-the-future"))


def test_the_archive_carries_configuration_but_no_secret(tmp_path: Path, source: EmbeddedRedis,
                                                         target: EmbeddedRedis) -> None:
    _small_state(redis.Redis.from_url(source.url()))
    secret_file = tmp_path / "redis.password"
    env = {"TACTICAL_BATCH_SIZE": "42", "TACTICAL_API_TOKEN": "tok-SECRET-1",
           "TACTICAL_REDIS_URL": "redis://tactical-worker:pw-SECRET-2@redis.internal:6379/2",
           "TACTICAL_BACKUP_PASSWORD_FILE": str(secret_file)}
    archive = tmp_path / "b.tar.gz"
    assert tacticalctl(source.url(), "backup", str(archive), env=env).exit_code == 0
    content = gzip.decompress(archive.read_bytes())
    assert b"SECRET" not in content
    assert b"pw-SECRET-2" not in archive.read_bytes()

    env_file = tmp_path / "restored.env"
    result = tacticalctl(target.url(), "restore", str(archive), "--models-dir", str(tmp_path / "m"),
                         "--config-out", str(env_file))
    assert result.exit_code == 0, result.output
    lines = env_file.read_text().splitlines()
    assert lines[0].startswith("# the TACTICAL_* environment of the `tacticalctl backup` run (no worker was running")
    restored_env = dict(line.split("=", 1) for line in lines if not line.startswith("#"))
    assert restored_env["TACTICAL_BATCH_SIZE"] == "42"
    assert restored_env["TACTICAL_REDIS_URL"] == "redis://tactical-worker:***@redis.internal:6379/2"
    assert restored_env["TACTICAL_BACKUP_PASSWORD_FILE"] == str(secret_file)
    assert "TACTICAL_API_TOKEN" not in restored_env
    shipped = default_models_dir()
    current = (shipped / "CURRENT").read_text().strip()
    manifest = Path(current, "manifest.json")
    assert (tmp_path / "m" / manifest).read_bytes() == (shipped / manifest).read_bytes()


def test_the_archive_carries_the_running_workers_settings_not_only_the_operators_shell(
        tmp_path: Path, source: EmbeddedRedis, target: EmbeddedRedis, start_worker) -> None:
    client = redis.Redis.from_url(source.url())
    _small_state(client)
    worker = start_worker(source.url(), consumer="w-37", batch_size=37, max_deliveries=7)
    # A second worker that differs: its value is noted beside the first's, not lost.
    other = start_worker(source.url(), consumer="w-38", batch_size=38, max_deliveries=7)
    wait_for(lambda: all(b"settings" in (client.get(f"tactical:heartbeat:{name}") or b"") for name in ("w-37", "w-38")),
             what="both heartbeats with their settings")
    archive = tmp_path / "b.tar.gz"
    env = {"TACTICAL_BATCH_SIZE": "42", "TACTICAL_BACKUP_PASSWORD_FILE": "/run/secrets/backup"}  # the operator's shell
    backed_up = tacticalctl(source.url(), "backup", str(archive), "--no-models", env=env)
    assert backed_up.exit_code == 0, backed_up.output
    assert "the settings of 2 running workers (w-37, w-38)" in backed_up.stdout, backed_up.stdout
    assert worker.stop() == 0 and other.stop() == 0

    env_file = tmp_path / "restored.env"
    restored = tacticalctl(target.url(), "restore", str(archive), "--no-models", "--config-out", str(env_file),
                           "--json")
    assert restored.exit_code == 0, restored.output
    report = json.loads(restored.stdout)
    assert report["worker_settings"]["w-37"]["batch_size"] == 37
    lines = env_file.read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines if not line.startswith("#"))
    assert values["TACTICAL_BATCH_SIZE"] == "37", lines  # what the workers ran with, not the shell's 42
    assert values["TACTICAL_MAX_DELIVERIES"] == "7"
    assert values["TACTICAL_REDIS_URL"] == source.url()
    assert "# TACTICAL_BATCH_SIZE differs between workers; w-37 ran with the value below, w-38: 38" in lines
    assert values["TACTICAL_BACKUP_PASSWORD_FILE"] == "/run/secrets/backup"  # no worker setting: from the shell
    assert "TACTICAL_CONSUMER" not in values  # each process names its own


def test_dry_run_verifies_and_changes_nothing(tmp_path: Path, source: EmbeddedRedis, target: EmbeddedRedis) -> None:
    _small_state(redis.Redis.from_url(source.url()))
    archive = tmp_path / "b.tar.gz"
    assert tacticalctl(source.url(), "backup", str(archive), "--no-models").exit_code == 0
    result = tacticalctl(target.url(), "restore", str(archive), "--no-models", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run: nothing changed" in result.stdout and "target: empty" in result.stdout
    assert redis.Redis.from_url(target.url()).dbsize() == 0
    assert Counter(alert_kinds(redis.Redis.from_url(source.url())))[b"backup"] == 1


def test_a_stream_name_holding_another_type_is_archived_and_said(tmp_path: Path, source: EmbeddedRedis,
                                                                  target: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(source.url())
    _small_state(client)
    client.delete(INPUT_STREAM)
    client.set(INPUT_STREAM, "not a stream")  # someone else's key under the stream's name
    archive = tmp_path / "b.tar.gz"
    result = tacticalctl(source.url(), "backup", str(archive), "--no-models", "--json")
    assert result.exit_code == 1, result.output  # was 0, with the stream shown as absent
    assert "synergy_events is a string, not a stream: archived as it is" in result.stderr
    state = next(s for s in json.loads(result.stdout)["redis"]["streams"] if s["name"] == INPUT_STREAM)
    assert (state["exists"], state["other_type"]) == (False, "string")
    restored = tacticalctl(target.url(), "restore", str(archive), "--no-models")
    assert restored.exit_code == 0, restored.output  # what was there comes back as it was
    assert redis.Redis.from_url(target.url()).get(INPUT_STREAM) == b"not a stream"


def test_an_archive_path_that_is_a_directory_is_one_line(tmp_path: Path, source: EmbeddedRedis) -> None:
    (tmp_path / "b.tar.gz").mkdir()
    result = tacticalctl(source.url(), "backup", str(tmp_path / "b.tar.gz"), "--no-models", "--force")
    assert result.exit_code == 2
    assert "is a directory: name the archive file" in result.stderr and result.stderr.count("\n") == 1


def _backup_of_small_state(tmp_path: Path, source: EmbeddedRedis) -> Path:
    _small_state(redis.Redis.from_url(source.url()))
    archive = tmp_path / "b.tar.gz"
    assert tacticalctl(source.url(), "backup", str(archive)).exit_code == 0
    return archive


def _rebuilt_with_checksums(archive: Path, out: Path, edit: Callable[[str, bytes], bytes]) -> Path:
    """`archive` with members changed by `edit` and the manifest's hashes made to match: what only a malformed
    writer, or someone altering it with care, would produce."""
    with tarfile.open(archive) as original:
        members = [(member, original.extractfile(member).read()) for member in original]  # type: ignore[union-attr]
    edited = [(member, content if member.name == "manifest.json" else edit(member.name, content))
              for member, content in members]
    manifest = json.loads(edited[0][1])
    for member, content in edited[1:]:
        if isinstance(manifest.get("files"), dict) and member.name in manifest["files"]:
            manifest["files"][member.name] = {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}
    edited[0] = (edited[0][0], edit("manifest.json", json.dumps(manifest).encode()))
    with tarfile.open(out, "w:gz") as rebuilt:
        for member, content in edited:
            member.size = len(content)
            rebuilt.addfile(member, io.BytesIO(content))
    return out


def _only(member: str, change: Callable[[bytes], bytes]) -> Callable[[str, bytes], bytes]:
    """An archive edit that changes one member's content and leaves the others as they are."""
    return lambda name, content: change(content) if name == member else content


def _refused_untouched(target: EmbeddedRedis, archive: Path, out: Path, edit: Callable[[str, bytes], bytes]) -> str:
    """Restore `archive` edited by `edit` (checksums made to match): refused, exit 2, one line, the target empty.
    Returns what was said."""
    result = tacticalctl(target.url(), "restore", str(_rebuilt_with_checksums(archive, out, edit)), "--no-models")
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output, result.output
    assert redis.Redis.from_url(target.url()).dbsize() == 0, "refused with the archive, before anything was written"
    return result.stderr


def test_a_malformed_archive_with_matching_checksums_is_one_line_not_a_traceback(
    tmp_path: Path, source: EmbeddedRedis, target: EmbeddedRedis
) -> None:
    archive = _backup_of_small_state(tmp_path, source)

    def without_redis_section(content: bytes) -> bytes:
        manifest = json.loads(content)
        del manifest["redis"]
        return json.dumps(manifest).encode()

    said = _refused_untouched(target, archive, tmp_path / "m.tar.gz", _only("manifest.json", without_redis_section))
    assert "manifest.json is malformed" in said

    for member in ("redis/streams.jsonl", "redis/stream_entries.jsonl"):
        not_json = _only(member, lambda content: b"not json\n" + content)
        assert f"{member} is malformed" in _refused_untouched(target, archive, tmp_path / "s.tar.gz", not_json)
    def stream_record_without_last_id(content: bytes) -> bytes:
        lines = [json.loads(line) for line in content.splitlines()]
        for doc in lines:
            if doc["kind"] == "stream" and doc["stream"] == INPUT_STREAM:
                del doc["last_id"]
        return b"".join(json.dumps(doc).encode() + b"\n" for doc in lines)
    said = _refused_untouched(target, archive, tmp_path / "l.tar.gz", _only("redis/stream_entries.jsonl",
                                                                          stream_record_without_last_id))
    assert "missing 'last_id'" in said, said
    unknown_record = _only("redis/stream_entries.jsonl",
                           lambda content: content + b'{"kind": "script", "stream": "synergy_events"}\n')
    said = _refused_untouched(target, archive, tmp_path / "r.tar.gz", unknown_record)
    assert "redis/stream_entries.jsonl is malformed" in said and "unknown record kind 'script'" in said


def test_an_archive_of_format_1_restores_and_one_of_a_newer_format_is_refused_naming_why(
    tmp_path: Path, source: EmbeddedRedis, target: EmbeddedRedis
) -> None:
    # Format 1 held every stream as a DUMP, as a backup without memory for copies still does.
    a = redis.Redis.from_url(source.url())
    _small_state(a)
    archive = tmp_path / "b.tar.gz"
    with _no_room_for_copies(a):
        assert tacticalctl(source.url(), "backup", str(archive), "--no-models").exit_code == 0

    def format_named(name: str) -> Callable[[bytes], bytes]:
        return lambda content: json.dumps({**json.loads(content), "format": name}).encode()

    newer = _only("manifest.json", format_named("tactical-backup/3"))
    said = _refused_untouched(target, archive, tmp_path / "n.tar.gz", newer)
    assert "format 'tactical-backup/3'" in said and "written by a newer tacticalctl" in said, said

    old = _rebuilt_with_checksums(archive, tmp_path / "old.tar.gz", _only("manifest.json",
                                                                          format_named("tactical-backup/1")))
    restored = tacticalctl(target.url(), "restore", str(old), "--no-models", "--json")
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["verified"] is True
    assert redis.Redis.from_url(target.url()).xrange(INPUT_STREAM) == a.xrange(INPUT_STREAM)


def test_a_config_out_that_cannot_be_written_is_refused_before_the_restore(
    tmp_path: Path, source: EmbeddedRedis, target: EmbeddedRedis
) -> None:
    archive = _backup_of_small_state(tmp_path, source)
    result = tacticalctl(target.url(), "restore", str(archive), "--no-models",
                         "--config-out", str(tmp_path / "no-such-dir" / "x.env"))
    assert result.exit_code == 3 and "--config-out" in result.stderr, result.output
    assert redis.Redis.from_url(target.url()).dbsize() == 0


def test_a_config_out_that_exists_is_not_overwritten_without_force(
    tmp_path: Path, source: EmbeddedRedis, target: EmbeddedRedis
) -> None:
    archive = _backup_of_small_state(tmp_path, source)
    existing = tmp_path / "worker.env"
    existing.write_text("TACTICAL_BATCH_SIZE=50\n")
    result = tacticalctl(target.url(), "restore", str(archive), "--no-models", "--config-out", str(existing))
    assert result.exit_code == 3 and "exists: name another file, or add --force" in result.stderr, result.output
    assert existing.read_text() == "TACTICAL_BATCH_SIZE=50\n"
    assert redis.Redis.from_url(target.url()).dbsize() == 0, "refused before Redis was touched"


def test_a_key_outside_what_its_member_holds_is_not_restored(
    tmp_path: Path, source: EmbeddedRedis, target: EmbeddedRedis
) -> None:
    archive = _backup_of_small_state(tmp_path, source)

    def key_renamed(content: bytes) -> bytes:
        doc = json.loads(content.splitlines()[0])
        return json.dumps({**doc, "key": "session:admin"}).encode() + b"\n"

    completed_key_renamed = _only("redis/completed.jsonl", key_renamed)
    said = _refused_untouched(target, archive, tmp_path / "k.tar.gz", completed_key_renamed)
    assert "redis/completed.jsonl holds the key 'session:admin'" in said

    def stream_renamed(content: bytes) -> bytes:
        doc = json.loads(content.splitlines()[0])
        return json.dumps({**doc, "stream": "session:admin"}).encode() + b"\n" + content
    said = _refused_untouched(target, archive, tmp_path / "e.tar.gz", _only("redis/stream_entries.jsonl",
                                                                          stream_renamed))
    assert "redis/stream_entries.jsonl holds the key 'session:admin'" in said

    # Altered without its checksums: refused as that, whatever the altered line holds.
    with tarfile.open(archive) as original:
        members = [(m, original.extractfile(m).read()) for m in original]  # type: ignore[union-attr]
    with tarfile.open(tmp_path / "altered.tar.gz", "w:gz") as altered:
        for member, content in members:
            content = completed_key_renamed(member.name, content)
            member.size = len(content)
            altered.addfile(member, io.BytesIO(content))
    said = tacticalctl(target.url(), "restore", str(tmp_path / "altered.tar.gz"), "--no-models").stderr
    assert "member 'redis/completed.jsonl' has SHA-256" in said, said


def test_a_models_dir_that_is_a_file_is_refused_before_redis_is_cleared(
    tmp_path: Path, source: EmbeddedRedis, target: EmbeddedRedis
) -> None:
    archive = _backup_of_small_state(tmp_path, source)
    client = redis.Redis.from_url(target.url())
    client.set(completed_key("kept"), "1-1")
    a_file = tmp_path / "models.txt"
    a_file.write_text("not a directory\n")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")

    for models_dir, said in ((a_file, f"{a_file} is not a directory"),
                             (a_file / "models", f"{a_file / 'models'} cannot be created: {a_file} is not a directory"),
                             (dangling, f"{dangling} is a symlink to nothing")):
        result = tacticalctl(target.url(), "restore", str(archive), "--force", "--yes", "--models-dir",
                             str(models_dir))

        assert result.exit_code == 2, result.output
        assert said in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert client.exists(completed_key("kept")), "refused before the target was cleared"


def test_sigterm_stops_a_backup_as_ctrl_c_does(tmp_path: Path, source: EmbeddedRedis,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # `timeout` or a supervisor ends a backup with SIGTERM: its copies (as much memory again as the streams) and its
    # staging directory must go, as they do on Ctrl-C, not stay for the hour the copies take to expire.
    import os
    import signal

    import worker.backup as backup_module
    from tacticalctl.backup import _sigterm_as_interrupt
    from worker.settings import WorkerSettings

    a = redis.Redis.from_url(source.url())
    _small_state(a)
    real_write = backup_module.write_stream

    def write_then_terminated(*args: object, **kwargs: object) -> int:  # the signal lands while copies are read
        written = real_write(*args, **kwargs)  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
        return written

    monkeypatch.setattr(backup_module, "write_stream", write_then_terminated)
    original = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), _sigterm_as_interrupt():
        backup_module.create_backup(a, tmp_path / "b.tar.gz", settings=WorkerSettings.from_env({}),
                                    models_dir=None, actor="test", source_url="x")
    assert signal.getsignal(signal.SIGTERM) is original
    assert not list(a.scan_iter(match="tactical:backup:*")), "the copies are deleted"
    assert not list(tmp_path.glob(".tactical-backup-*")) and not (tmp_path / "b.tar.gz").exists()


def _models_with_current_linked(tmp_path: Path) -> Path:
    """A models directory whose CURRENT bundle is a symbolic link to a directory elsewhere (a shared store)."""
    shipped, models, store = default_models_dir(), tmp_path / "linked-models", tmp_path / "store"
    current = (shipped / "CURRENT").read_text().strip()
    models.mkdir()
    shutil.copy(shipped / "CURRENT", models / "CURRENT")
    shutil.copytree(shipped / current, store / current)
    (models / current).symlink_to(store / current, target_is_directory=True)
    return models


def test_a_bundle_directory_that_is_a_link_is_archived_and_restored(tmp_path: Path, source: EmbeddedRedis) -> None:
    """The worker follows a linked bundle; the backup left it out without a word, and the restored directory could
    not start a worker (CURRENT named a bundle that was not there)."""
    models = _models_with_current_linked(tmp_path)
    current = (models / "CURRENT").read_text().strip()
    archive = tmp_path / "b.tar.gz"
    made = tacticalctl(source.url(), "backup", str(archive), "--models-dir", str(models))
    assert made.exit_code == 0, made.output
    assert "CURRENT names" not in made.stdout

    restored = tmp_path / "restored-models"
    result = tacticalctl(source.url(), "restore", str(archive), "--models-only", "--models-dir", str(restored))
    assert result.exit_code == 0, result.output
    assert (restored / current / "manifest.json").is_file()
    listed = tacticalctl(source.url(), "models", "list", "--models-dir", str(restored))
    assert listed.exit_code == 0, listed.output


def test_a_current_that_names_no_bundle_is_said_by_the_backup(tmp_path: Path, source: EmbeddedRedis) -> None:
    models = tmp_path / "models"
    shutil.copytree(default_models_dir(), models)
    (models / "CURRENT").write_text("20991231T000000Z-gone\n")
    made = tacticalctl(source.url(), "backup", str(tmp_path / "b.tar.gz"), "--models-dir", str(models))
    assert made.exit_code == 0, made.output  # the Redis state is saved all the same
    assert "CURRENT names 20991231T000000Z-gone, which is not a bundle there" in " ".join(made.stdout.split())


def test_the_backup_says_when_the_running_workers_serve_another_models_directory(
    tmp_path: Path, source: EmbeddedRedis
) -> None:
    client = redis.Redis.from_url(source.url())
    theirs = tmp_path / "theirs"
    write_heartbeat(client, "w-elsewhere:1", interval_s=30.0, info={"settings": {"models_dir": str(theirs)}})
    made = tacticalctl(source.url(), "backup", str(tmp_path / "b.tar.gz"), "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["models"]["workers_elsewhere"] == [str(theirs)]


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_force_never_replaces_what_is_not_a_regular_file(tmp_path: Path, source: EmbeddedRedis, kind: str) -> None:
    import os

    archive = tmp_path / "latest.tar.gz"
    if kind == "link":
        (tmp_path / "real.tar.gz").write_bytes(b"keep")
        archive.symlink_to(tmp_path / "real.tar.gz")
    else:
        os.mkfifo(archive)
    result = tacticalctl(source.url(), "backup", str(archive), "--no-models", "--force")
    assert result.exit_code == 2
    assert "is not a regular file" in result.stderr and result.stderr.count("\n") == 1
    assert archive.is_symlink() if kind == "link" else archive.is_fifo()


def test_an_archive_directory_it_cannot_write_in_is_one_line(tmp_path: Path, source: EmbeddedRedis) -> None:
    """/sys takes no new file, even from root (a read-only directory does not stop root)."""
    result = tacticalctl(source.url(), "backup", "/sys/tactical.tar.gz", "--no-models")
    assert result.exit_code == 2
    assert "cannot write in /sys" in result.stderr and result.stderr.count("\n") == 1


def test_models_only_from_an_archive_without_models_is_refused(tmp_path: Path, source: EmbeddedRedis) -> None:
    archive = tmp_path / "b.tar.gz"
    assert tacticalctl(source.url(), "backup", str(archive), "--no-models").exit_code == 0
    for dry_run in ((), ("--dry-run",)):
        result = tacticalctl(source.url(), "restore", str(archive), "--models-only", "--models-dir",
                             str(tmp_path / "new-host"), *dry_run)
        assert result.exit_code == 2, result.output
        assert "holds no model bundles" in result.stderr
    assert not (tmp_path / "new-host").exists()


@pytest.mark.parametrize("where", ["write_stream", "audit"])
def test_an_interrupted_backup_says_what_it_left(tmp_path: Path, source: EmbeddedRedis,
                                                 monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Ctrl-C or SIGTERM (made an interrupt) while the streams are read leaves nothing; after the archive is renamed
    into place (its audit entry next) it leaves a complete archive: either way the operator is told, exit 130."""
    import worker.backup as backup_module

    _small_state(redis.Redis.from_url(source.url()))

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(backup_module, where, interrupted)
    archive = tmp_path / "b.tar.gz"
    result = tacticalctl(source.url(), "backup", str(archive), "--no-models")
    assert result.exit_code == 130
    if where == "write_stream":
        assert "interrupted: no archive written" in result.stderr and not archive.exists()
    else:
        assert f"interrupted after {archive} was written: it is complete" in " ".join(result.stderr.split())
        assert archive.is_file()
