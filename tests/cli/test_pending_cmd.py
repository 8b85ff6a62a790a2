"""`tacticalctl pending`, `pending claim` and `pending dead-letter` moving real stuck entries."""

from __future__ import annotations

import json
import time

import pytest
import redis
from redis.typing import StreamIdT

from tests.cli.conftest import Ctl
from tests.cli.streams import deliver_without_ack, pending_of, publish
from worker.alerts import recent_alerts
from worker.heartbeat import write_heartbeat
from worker.names import CONSUMER_GROUP, DEAD_LETTER_STREAM, INPUT_STREAM
from worker.ops.pending import PendingUnavailable, read_pending_entries
from worker.stream_entries import entries


def test_summary_names_holders_and_their_liveness(ctl: Ctl, redis_client: redis.Redis) -> None:
    publish(redis_client, 4)
    deliver_without_ack(redis_client, "ghost", 3)
    result = ctl("pending")
    assert result.exit_code == 0
    assert "3 pending entries" in result.stdout
    assert "ghost (no heartbeat)" in result.stdout
    doc = json.loads(ctl("pending", "--json").stdout)
    assert set(doc) == {"count", "min_id", "max_id", "consumers", "live_consumers"}
    assert doc["consumers"] == {"ghost": 3}


def test_summary_of_entries_a_dead_consumer_holds_says_what_happens_to_them(
    ctl: Ctl, redis_client: redis.Redis
) -> None:
    # Seen live after a worker was SIGKILLed (or after a restore): "vm:1 (no heartbeat) 3" and nothing more — is it
    # stuck, who takes it, what to run?
    publish(redis_client, 4)
    deliver_without_ack(redis_client, "ghost", 3)
    text = " ".join(ctl("pending").stdout.split())  # as wrapped at the terminal's width
    assert "reclaims them once idle past its TACTICAL_CLAIM_MIN_IDLE_MS (default 1 s)" in text, text
    assert "no worker beats now: start one" in text, text
    assert "pending claim --to" not in text, "a claim needs a live worker to hand them to: it would be refused"
    write_heartbeat(redis_client, "alive-1", interval_s=10.0, info={})
    text = " ".join(ctl("pending").stdout.split())
    assert "no worker beats" not in text and "`tacticalctl pending claim --to <live worker> --yes`" in text, text
    deliver_without_ack(redis_client, "alive-1", 1)
    every_id: list[StreamIdT] = [i for i, _ in entries(redis_client, INPUT_STREAM)]
    # every entry now on a live worker: in flight
    redis_client.xclaim(INPUT_STREAM, CONSUMER_GROUP, "alive-1", 0, every_id[:3])
    assert "reclaims" not in ctl("pending").stdout


def test_extended_lists_entries_with_delivery_counts_filtered_by_idle_and_consumer(
    ctl: Ctl, redis_client: redis.Redis
) -> None:
    publish(redis_client, 3)
    old = deliver_without_ack(redis_client, "ghost", 2)
    time.sleep(1.5)  # ghost's entries idle 1.5 s, other's well under the 1 s asked, even on a loaded machine
    deliver_without_ack(redis_client, "other", 1)
    doc = json.loads(ctl("pending", "--extended", "--idle", "1000", "--json").stdout)
    assert [e["id"] for e in doc["entries"]] == [i.decode() for i in old]
    assert all(set(e) == {"id", "consumer", "idle_ms", "times_delivered"} for e in doc["entries"])
    assert all(e["times_delivered"] == 1 for e in doc["entries"])
    only_other = json.loads(ctl("pending", "--extended", "--consumer", "other", "--json").stdout)
    assert [e["consumer"] for e in only_other["entries"]] == ["other"]
    text = ctl("pending", "--extended").stdout
    assert "deliveries" in text and "ghost (no heartbeat)" in text


def test_claim_to_a_consumer_without_heartbeat_is_refused(ctl: Ctl, redis_client: redis.Redis) -> None:
    publish(redis_client, 2)
    deliver_without_ack(redis_client, "ghost", 2)
    result = ctl("pending", "claim", "--to", "nobody", "--idle", "0", "--yes")
    assert result.exit_code == 3
    assert "'nobody' has no live heartbeat" in result.stderr
    assert set(pending_of(redis_client).values()) == {b"ghost"}


def test_claim_dry_run_changes_nothing_and_yes_moves_stuck_entries(ctl: Ctl, redis_client: redis.Redis) -> None:
    publish(redis_client, 3)
    stuck = deliver_without_ack(redis_client, "ghost", 3)
    write_heartbeat(redis_client, "alive-1", interval_s=10.0, info={})
    time.sleep(0.15)

    dry = ctl("pending", "claim", "--to", "alive-1", "--idle", "100")
    assert dry.exit_code == 0
    assert "dry run: nothing changed" in dry.stdout
    assert set(pending_of(redis_client).values()) == {b"ghost"}
    assert recent_alerts(redis_client, count=10) == []

    done = ctl("pending", "claim", "--to", "alive-1", "--idle", "100", "--yes", "--json")
    assert done.exit_code == 0
    doc = json.loads(done.stdout)
    assert doc["moved"] == [i.decode() for i in stuck] and doc["applied"] is True
    assert (doc["min_idle_ms"], doc["to_consumer"]) == (100, "alive-1")  # a number, as scripts compare it
    assert pending_of(redis_client) == dict.fromkeys(stuck, b"alive-1")
    audit = recent_alerts(redis_client, count=1)[-1]
    assert audit.id == doc["audit_id"]
    assert (audit.severity, audit.kind, audit.fields["to_consumer"], audit.fields["count"]) == (
        "AUDIT", "pending_claim", "alive-1", "3")
    assert audit.actor


def test_claim_leaves_entries_younger_than_idle(ctl: Ctl, redis_client: redis.Redis) -> None:
    publish(redis_client, 2)
    deliver_without_ack(redis_client, "ghost", 2)
    write_heartbeat(redis_client, "alive-1", interval_s=10.0, info={})
    result = ctl("pending", "claim", "--to", "alive-1", "--idle", "60000", "--yes")
    assert "nothing to claim" in result.stdout
    assert set(pending_of(redis_client).values()) == {b"ghost"}


def test_claim_leaves_an_entry_whose_data_is_gone_pending_and_says_so(ctl: Ctl, redis_client: redis.Redis) -> None:
    """A pending entry deleted from the stream (XDEL, a producer's MAXLEN): Redis 7's XCLAIM drops it from the group
    without a trace, and the claim used to report it "left alone (acknowledged or picked up meanwhile)". It stays
    pending where it was, listed as gone, for `pending dead-letter` to record."""
    publish(redis_client, 3)
    deleted, *kept = deliver_without_ack(redis_client, "ghost", 3)
    redis_client.xdel(INPUT_STREAM, deleted)
    write_heartbeat(redis_client, "alive-1", interval_s=10.0, info={})
    time.sleep(0.15)

    result = ctl("pending", "claim", "--to", "alive-1", "--idle", "100", "--yes", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["moved"] == [i.decode() for i in kept]
    assert (doc["gone"], doc["skipped"]) == ([deleted.decode()], [])
    assert pending_of(redis_client) == {deleted: b"ghost", **dict.fromkeys(kept, b"alive-1")}
    audit = recent_alerts(redis_client, count=1)[-1]
    assert (audit.fields["count"], audit.fields["gone_ids"]) == ("2", deleted.decode())

    again = ctl("pending", "claim", "--to", "alive-1", "--idle", "100", "--from", "ghost", "--yes")
    assert "data gone from the stream" in again.stdout and "acknowledged or picked up" not in again.stdout
    dead = ctl("pending", "dead-letter", "--reason", "lost", "--idle", "100", "--consumer", "ghost", "--yes", "--json")
    assert json.loads(dead.stdout)["moved"] == [deleted.decode()]
    [(_, fields)] = entries(redis_client, DEAD_LETTER_STREAM)
    assert b"fields lost" in fields[b"dead_reason"]


def test_dead_letter_keeps_original_fields_acks_and_audits(ctl: Ctl, redis_client: redis.Redis) -> None:
    publish(redis_client, 3)
    stuck = deliver_without_ack(redis_client, "ghost", 2)
    originals = {entry_id: fields for entry_id, fields in entries(redis_client, INPUT_STREAM)}
    time.sleep(0.15)

    dry = ctl("pending", "dead-letter", "--reason", "poison event", "--idle", "100")
    assert "dry run" in dry.stdout
    assert redis_client.xlen(DEAD_LETTER_STREAM) == 0 and len(pending_of(redis_client)) == 2

    done = ctl("pending", "dead-letter", "--reason", "poison event", "--idle", "100", "--yes", "--json")
    assert done.exit_code == 0
    doc = json.loads(done.stdout)
    assert doc["moved"] == [i.decode() for i in stuck]
    assert (doc["min_idle_ms"], doc["reason"]) == (100, "poison event")
    assert pending_of(redis_client) == {}
    dead = entries(redis_client, DEAD_LETTER_STREAM)
    assert len(dead) == 2
    for (_, fields), entry_id in zip(dead, stuck, strict=True):
        assert {k: v for k, v in fields.items() if not k.startswith(b"dead_")} == originals[entry_id]
        assert fields[b"dead_reason"] == b"poison event"
        assert fields[b"dead_entry_id"] == entry_id
        assert fields[b"dead_delivery_count"] == b"1"
        assert fields[b"dead_consumer"] == b"ghost"
    assert redis_client.xlen(INPUT_STREAM) == 3  # nothing deleted from the input stream
    audit = recent_alerts(redis_client, count=1)[-1]
    assert (audit.kind, audit.fields["reason"], audit.fields["count"]) == ("pending_dead_letter", "poison event", "2")


def test_dead_letter_skips_an_entry_finished_meanwhile(redis_client: redis.Redis) -> None:
    from worker.ops.pending import dead_letter_stuck_entries

    publish(redis_client, 2)
    first, second = deliver_without_ack(redis_client, "ghost", 2)
    real_xrange = redis_client.xrange

    def ack_first_then_read(*args, **kwargs):  # a worker acknowledges `first` between the look and the act
        redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, first)
        return real_xrange(*args, **kwargs)

    redis_client.xrange = ack_first_then_read  # type: ignore[method-assign]
    move = dead_letter_stuck_entries(redis_client, reason="r", min_idle_ms=0, actor="t", apply=True)
    assert move.moved == (second.decode(),)
    assert move.skipped == (first.decode(),)
    assert redis_client.xlen(DEAD_LETTER_STREAM) == 1


def test_dead_letter_needs_a_reason(ctl: Ctl) -> None:
    result = ctl("pending", "dead-letter", "--reason", "  ", "--yes")
    assert result.exit_code == 3
    assert "--reason" in result.stderr


def test_pending_without_a_group_says_how_to_fix_it(ctl: Ctl) -> None:
    result = ctl("pending")
    assert result.exit_code == 3
    assert "start the worker" in result.stderr


def test_only_a_missing_group_is_called_one_and_counts_stay_in_range(ctl: Ctl, redis_client: redis.Redis) -> None:
    publish(redis_client, 1)
    deliver_without_ack(redis_client, "ghost", 1)
    too_many = ctl("pending", "--extended", "--count", "100000000000000000000")
    assert too_many.exit_code == 3 and "--count" in too_many.output, too_many.output
    # Redis refusing something else (here a count past its range) is said as it is, not as a missing group.
    with pytest.raises(redis.ResponseError, match="out of range") as refused:
        read_pending_entries(redis_client, min_idle_ms=0, consumer=None, count=10**20)
    assert not isinstance(refused.value, PendingUnavailable)


def test_claimed_entries_keep_their_idle_time_so_the_next_reclaim_takes_them(
    ctl: Ctl, redis_client: redis.Redis
) -> None:
    """A worker reclaims entries idle past its min-idle (XAUTOCLAIM). XCLAIM's default sets a claimed entry's idle time
    to 0: stuck entries handed to a live worker waited a whole min-idle more, and looked fresh in `pending --idle`."""
    publish(redis_client, 2)
    stuck = deliver_without_ack(redis_client, "ghost", 2)
    write_heartbeat(redis_client, "alive-1", interval_s=10.0, info={})
    time.sleep(0.6)
    assert ctl("pending", "claim", "--to", "alive-1", "--idle", "500", "--yes").exit_code == 0

    claimed = read_pending_entries(redis_client, min_idle_ms=500)
    assert [(e.entry_id, e.consumer) for e in claimed] == [(i.decode(), "alive-1") for i in stuck]
    assert all(e.times_delivered == 1 for e in claimed)  # JUSTID still: no delivery counted
    # The live worker's reclaim pass (its min-idle 500 ms) takes them at once.
    _, reclaimed, _ = redis_client.xautoclaim(INPUT_STREAM, CONSUMER_GROUP, "alive-1", min_idle_time=500, count=10)
    assert [entry_id for entry_id, _ in reclaimed] == stuck


def test_extended_with_nothing_pending_says_so_as_the_summary_does(ctl: Ctl, redis_client: redis.Redis) -> None:
    publish(redis_client, 1)
    deliver_without_ack(redis_client, "ghost", 1)
    assert "no pending entries" not in ctl("pending", "--extended").stdout
    fresh = ctl("pending", "--extended", "--idle", "600000", "--consumer", "ghost")
    assert fresh.exit_code == 0 and fresh.stdout == "no pending entries idle ≥ 600000 ms of ghost\n"
    [(entry_id, _)] = entries(redis_client, INPUT_STREAM)
    redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, entry_id)
    for args in (("pending",), ("pending", "--extended")):
        result = ctl(*args)
        assert result.exit_code == 0
        assert result.stdout == "no pending entries: everything delivered has been acknowledged\n", args


def test_claim_at_maxmemory_says_what_it_moved_when_the_audit_entry_is_refused(
    ctl: Ctl, redis_client: redis.Redis
) -> None:
    # Redis at maxmemory (noeviction) takes the claim but refuses the audit entry's XADD: the entries have moved, so
    # the command says so (exit 1), not "Redis refused a command" as if nothing had happened.
    publish(redis_client, 2)
    stuck = deliver_without_ack(redis_client, "ghost", 2)
    write_heartbeat(redis_client, "alive-1", interval_s=10.0, info={})
    time.sleep(0.15)
    redis_client.config_set("maxmemory", 1)
    try:
        shown = ctl("pending", "claim", "--to", "alive-1", "--idle", "100", "--yes")
        assert pending_of(redis_client) == dict.fromkeys(stuck, b"alive-1")
    finally:
        redis_client.config_set("maxmemory", 0)
    assert shown.exit_code == 1, shown.output
    said = " ".join(shown.stdout.split())
    assert "2 entries moved" in said and "audit entry not written" in said and "record it by hand" in said


def test_dead_letter_at_maxmemory_moves_nothing_and_says_redis_refused(ctl: Ctl, redis_client: redis.Redis) -> None:
    # Its first write is the dead letter's XADD, which Redis at maxmemory refuses: nothing is acked without its copy.
    publish(redis_client, 2)
    stuck = deliver_without_ack(redis_client, "ghost", 2)
    time.sleep(0.15)
    redis_client.config_set("maxmemory", 1)
    try:
        done = ctl("pending", "dead-letter", "--reason", "poison event", "--idle", "100", "--yes")
    finally:
        redis_client.config_set("maxmemory", 0)
    assert done.exit_code == 2 and "Redis takes no writes now" in done.stderr
    assert redis_client.xlen(DEAD_LETTER_STREAM) == 0 and pending_of(redis_client) == dict.fromkeys(stuck, b"ghost")
