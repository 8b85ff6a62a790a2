"""`tacticalctl decision CID`: one event's decision as the worker recorded it, its command, or where it is instead."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable
from typing import cast

import numpy as np
import redis

from bench.workload import Workload
from tests.cli.conftest import Ctl
from worker.decision_entry import decision_votes
from worker.names import (
    COMMANDS_STREAM,
    DEAD_LETTER_STREAM,
    DECISIONS_STREAM,
    INPUT_STREAM,
    completed_key,
    processing_key,
)
from worker.process import WorkerProcess
from worker.stream_entries import entries


def test_a_decided_event_shows_its_votes_reason_and_command_as_the_worker_wrote_them(
    ctl: Ctl, redis_url: str, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    workload = Workload.simulated()
    for i in range(20):
        redis_client.xadd(INPUT_STREAM, workload.fields(i, f"why-{i}"))  # type: ignore[arg-type]  # redis-py: fields, an invariant dict
    redis_client.xadd(INPUT_STREAM, {"correlation_id": "why-bad", "event_type": "SYNERGY_DETECTED"})
    start_worker(redis_url)
    deadline = time.monotonic() + 60
    while redis_client.xlen(DECISIONS_STREAM) < 20 or redis_client.xlen(DEAD_LETTER_STREAM) < 1:
        assert time.monotonic() < deadline, "the worker did not decide the events"
        time.sleep(0.1)
    decisions = {f[b"correlation_id"].decode(): (i, f) for i, f in entries(redis_client, DECISIONS_STREAM)}
    executed = next(cid for cid, (_, f) in decisions.items() if f[b"execute"] == b"1")
    held = next(cid for cid, (_, f) in decisions.items() if f[b"execute"] == b"0")

    result = ctl("decision", executed, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    [found] = doc["decisions"]
    entry_id, fields = decisions[executed]
    assert (found["decision_id"], found["execute"], found["action"]) == (entry_id.decode(), True,
                                                                          fields[b"action"].decode())
    assert doc["decisions_scanned"] >= 20, "the newest decisions scanned too, for a second decision of this id"
    stored = decision_votes(fields)
    assert {agent: tuple(p) for agent, p in found["votes"].items()} == stored and len(stored) == 3
    assert all(abs(sum(p) - 1) < 1e-5 for p in stored.values())
    assert np.argmax([found["scores"][a] for a in ("short", "hold", "long")]) == ("short", "hold", "long").index(
        found["action"])
    assert set(found["timings_ms"]) == {"validate", "claim", "inference", "aggregate"}
    [(command_id, command)] = [(i, f) for i, f in entries(redis_client, COMMANDS_STREAM)
                               if f[b"correlation_id"] == executed.encode()]
    assert found["command"]["command_id"] == command_id.decode()
    assert found["command"]["side"] == {"long": "BUY", "short": "SELL"}[found["action"]]
    assert found["command"]["quantity"] == command[b"quantity"].decode() != "0"
    shown = ctl("decision", executed)
    assert "EXECUTED" in shown.stdout and found["reason"] in " ".join(shown.stdout.split())
    assert f"command {command_id.decode()}: {found['command']['side']}" in shown.stdout
    for agent in ("fvg", "momentum", "entry"):
        assert agent in shown.stdout

    # A day later its completed key has expired: found by the scan, the same record.
    redis_client.delete(completed_key(held))
    later = json.loads(ctl("decision", held, "--json").stdout)
    assert later["decisions_scanned"] > 0 and later["decisions"][0]["execute"] is False
    assert later["decisions"][0]["command"] is None and later["decisions"][0]["command_missing"] is False

    bad = ctl("decision", "why-bad")
    assert bad.exit_code == 1 and "dead-lettered" in bad.stdout


def test_an_event_in_flight_or_unknown_or_from_an_older_worker(ctl: Ctl, redis_client: redis.Redis) -> None:
    redis_client.set(processing_key("busy"), "host-a:7|1700000000000-0", px=60_000)
    busy = ctl("decision", "busy")
    assert busy.exit_code == 0 and "in flight: host-a:7 holds its lease for entry 1700000000000-0" in busy.stdout

    nothing = ctl("decision", "never-sent", "--json")
    assert nothing.exit_code == 1
    assert json.loads(nothing.stdout)["found"] is False
    assert "not decided yet" in ctl("decision", "never-sent").stdout

    # An entry a worker before the binary fields wrote: one text field per number.
    event_id = redis_client.xadd(INPUT_STREAM, {"correlation_id": "old"})
    redis_client.xadd(DECISIONS_STREAM, {
        "correlation_id": "old", "event_id": event_id, "execute": "0", "action": "hold", "score": "0.5",
        "reason": "below threshold", "vote_fvg": "0.25,0.5,0.25", "vote_momentum": "0.25,0.5,0.25",
        "vote_entry": "0.25,0.5,0.25", "confidence_fvg": "0.5", "confidence_momentum": "0.5",
        "confidence_entry": "0.5", "score_short": "0.25", "score_hold": "0.5", "score_long": "0.25",
        "inference_ms": "0.2"})
    [old] = json.loads(ctl("decision", "old", "--json").stdout)["decisions"]
    assert old["votes"]["momentum"] == [0.25, 0.5, 0.25] and old["confidences"]["entry"] == 0.5
    assert (old["scores"]["hold"], old["timings_ms"]) == (0.5, {"inference": 0.2})
    assert old["latency_ms"] >= 0

    # Decided twice (again after its completed key expired): both shown, exit 1.
    redis_client.xadd(DECISIONS_STREAM, {"correlation_id": "old", "execute": "0", "action": "hold"})
    twice = ctl("decision", "old")
    assert twice.exit_code == 1 and "2 decisions for old" in twice.stdout



def test_a_correlation_id_decided_twice_is_shown_twice_while_its_completed_key_exists(
        ctl: Ctl, redis_client: redis.Redis) -> None:
    # A completed key evicted (volatile-*), or cleaned, and the event redelivered: decided again, key set again.
    for _ in range(2):
        did = redis_client.xadd(DECISIONS_STREAM, {"correlation_id": "dup", "execute": "1", "action": "long",
                                                   "score": "0.9", "reason": "executed"})
        redis_client.xadd(COMMANDS_STREAM, {"correlation_id": "dup", "side": "BUY", "quantity": "1"})
    redis_client.set(completed_key("dup"), did)
    result = ctl("decision", "dup", "--json")
    assert len(json.loads(result.stdout)["decisions"]) == 2 and result.exit_code == 1


def test_a_score_that_is_not_finite_is_no_traceback_and_the_json_is_json(ctl: Ctl, redis_client: redis.Redis) -> None:
    redis_client.xadd(DECISIONS_STREAM, {"correlation_id": "n", "execute": "0", "action": "hold", "score": "nan",
                                         "reason": "x", "confidences_f32le": struct.pack("<3f", float("nan"), 1, 1)})
    shown = ctl("decision", "n")
    assert shown.exit_code == 0 and "Traceback" not in shown.stderr, shown.stderr[-300:]
    json.loads(ctl("decision", "n", "--json").stdout, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def test_a_completed_key_that_holds_no_entry_id_is_a_note_not_a_redis_refusal(
        ctl: Ctl, redis_client: redis.Redis) -> None:
    redis_client.set(completed_key("k"), "done")  # tools date such keys by TTL (`keys list`): they exist
    redis_client.xadd(DECISIONS_STREAM, {"correlation_id": "k", "execute": "0", "action": "hold", "score": "0.5",
                                         "reason": "x"})
    result = ctl("decision", "k")
    assert result.exit_code == 0, result.stderr


def test_a_malformed_event_id_is_no_traceback(ctl: Ctl, redis_client: redis.Redis) -> None:
    redis_client.xadd(DECISIONS_STREAM, {"correlation_id": "e", "event_id": "?", "execute": "0", "action": "hold",
                                         "score": "0.5", "reason": "x"})
    result = ctl("decision", "e")
    assert "Traceback" not in result.stderr and result.exit_code == 0, result.stderr[-300:]


def test_each_decision_of_an_id_gets_its_own_command_even_when_the_clock_stepped_back(
    ctl: Ctl, redis_client: redis.Redis
) -> None:
    """A stream's ids never go back: after the clock stepped back, the decisions stream's ids may run ahead of the
    commands stream's, and a decision's command then has an earlier id. Two decisions of one id (one decided again)
    each get their own command, never the other's."""
    ahead_ms = int(time.time() * 1000) + 60_000
    redis_client.xadd(DECISIONS_STREAM, {"correlation_id": "ahead", "execute": "0"}, id=f"{ahead_ms}-0")
    first = cast(bytes, redis_client.xadd(COMMANDS_STREAM, {"correlation_id": "twice", "side": "BUY"}))
    redis_client.xadd(DECISIONS_STREAM, {"correlation_id": "twice", "execute": "1", "action": "long"})
    second = cast(bytes, redis_client.xadd(COMMANDS_STREAM, {"correlation_id": "twice", "side": "SELL"}))
    redis_client.xadd(DECISIONS_STREAM, {"correlation_id": "twice", "execute": "1", "action": "short"})
    doc = json.loads(ctl("decision", "twice", "--json").stdout)
    assert [(d["action"], d["command"]["command_id"]) for d in doc["decisions"]] == [
        ("short", second.decode()), ("long", first.decode())]
    assert "SELL" in ctl("decision", "twice").stdout
