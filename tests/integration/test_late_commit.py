"""A stalled worker's late commit: whatever was settled meanwhile stays settled, and nothing is written twice."""

from __future__ import annotations

import dataclasses

import numpy as np
import redis

from tests.integration.streams import decided_ids, read_group
from worker.aggregator import AggregatorConfig
from worker.delivery import DeliveryScripts, ensure_group
from worker.inference import AgentEnsemble
from worker.names import COMMANDS_STREAM, CONSUMER_GROUP, DEAD_LETTER_STREAM, INPUT_STREAM, processing_key
from worker.ops.dead_letters import replay_dead_letters, select_dead_letters
from worker.ops.pending import dead_letter_stuck_entries
from worker.pipeline import EventPipeline, PipelineConfig, StreamEntry
from worker.producer import make_event, publish_events

# Nothing has been decided on these Redis servers, so there is no tactical_decisions: a replay cannot tell that from
# one deleted, and leaves the dead letters out unless told — as an operator of a fresh system tells it.
NOTHING_DECIDED_YET = True

def pipeline_for(client: redis.Redis, ensemble: AgentEnsemble, consumer: str) -> EventPipeline:
    config = PipelineConfig(consumer=consumer, processing_lease_ms=30_000, completed_ttl_s=3600, max_deliveries=5,
                            max_event_bytes=65536)
    return EventPipeline(DeliveryScripts(client), ensemble, AggregatorConfig(), config)


def read_as(client: redis.Redis, consumer: str, count: int = 10) -> list[StreamEntry]:
    messages = read_group(client, consumer, count)
    return [StreamEntry(entry_id, fields) for entry_id, fields in messages]


def test_an_entry_dead_lettered_by_the_operator_while_its_worker_stalled_is_not_decided_late(
    redis_client: redis.Redis, ensemble: AgentEnsemble
) -> None:
    ensure_group(redis_client)
    publish_events(redis_client, [make_event(correlation_id="stuck-1", rng=np.random.default_rng(3))])
    stalled = pipeline_for(redis_client, ensemble, "stalled")
    entries = read_as(redis_client, "stalled")
    stalled.scripts.claim("stalled", 30_000, [("stuck-1", entries[0].entry_id)])  # then the worker froze

    moved = dead_letter_stuck_entries(redis_client, reason="operator: stuck", min_idle_ms=0, actor="test@ci",
                                      apply=True)
    assert len(moved.moved) == 1

    late = stalled.process(entries)  # the worker wakes up and commits what it held
    assert late.decisions == [] and late.duplicates == 1
    assert decided_ids(redis_client) == {}
    assert redis_client.xlen(COMMANDS_STREAM) == 0
    assert redis_client.get(processing_key("stuck-1")) is None, "its lease is released for a replay"

    replayed = replay_dead_letters(redis_client, select_dead_letters(redis_client), actor="test@ci", apply=True,
                                   include_unconfirmed=NOTHING_DECIDED_YET)
    assert len(replayed.replayed) == 1
    result = pipeline_for(redis_client, ensemble, "live").process(read_as(redis_client, "live"))
    assert [d.correlation_id for d in result.decisions] == ["stuck-1"]
    assert decided_ids(redis_client) == {b"stuck-1": 1}
    assert redis_client.xlen(DEAD_LETTER_STREAM) == 0


def test_a_stuck_entry_dead_lettered_and_replayed_while_its_worker_is_still_stalled_is_decided_once(
    redis_client: redis.Redis, ensemble: AgentEnsemble
) -> None:
    """The operator's dead-letter releases the stalled worker's lease: the replay is decided, not acked as a copy
    in flight (and lost); the stalled worker's late commit then writes nothing."""
    ensure_group(redis_client)
    publish_events(redis_client, [make_event(correlation_id="stuck-2", rng=np.random.default_rng(4))])
    stalled = pipeline_for(redis_client, ensemble, "stalled")
    entries = read_as(redis_client, "stalled")
    stalled.scripts.claim("stalled", 30_000, [("stuck-2", entries[0].entry_id)])  # then the worker froze

    dead_letter_stuck_entries(redis_client, reason="operator: stuck", min_idle_ms=0, actor="test@ci", apply=True)
    assert redis_client.get(processing_key("stuck-2")) is None
    replay_dead_letters(redis_client, select_dead_letters(redis_client), actor="test@ci", apply=True,
                        include_unconfirmed=NOTHING_DECIDED_YET)
    result = pipeline_for(redis_client, ensemble, "live").process(read_as(redis_client, "live"))
    assert [d.correlation_id for d in result.decisions] == ["stuck-2"]

    late = stalled.process(entries)
    assert late.decisions == [] and late.duplicates == 1
    assert decided_ids(redis_client) == {b"stuck-2": 1}


def test_a_lease_taken_by_a_stalled_claim_after_its_entry_was_dead_lettered_does_not_swallow_the_replay(
    redis_client: redis.Redis, ensemble: AgentEnsemble
) -> None:
    """The worker stalls between its read and its claim; the operator dead-letters the entry (no lease yet to
    release) and replays it; then the stalled claim lands, leasing the id to an entry no longer pending. The
    replay's commit sees that lease is stale and decides it, rather than acking it as a copy in flight."""
    ensure_group(redis_client)
    publish_events(redis_client, [make_event(correlation_id="stuck-3", rng=np.random.default_rng(6))])
    stalled = pipeline_for(redis_client, ensemble, "stalled")
    entries = read_as(redis_client, "stalled")  # then the worker froze, before its claim

    dead_letter_stuck_entries(redis_client, reason="operator: stuck", min_idle_ms=0, actor="test@ci", apply=True)
    replay_dead_letters(redis_client, select_dead_letters(redis_client), actor="test@ci", apply=True,
                        include_unconfirmed=NOTHING_DECIDED_YET)
    stalled.scripts.claim("stalled", 30_000, [("stuck-3", entries[0].entry_id)])  # the stalled claim lands

    result = pipeline_for(redis_client, ensemble, "live").process(read_as(redis_client, "live"))
    assert [d.correlation_id for d in result.decisions] == ["stuck-3"]
    late = stalled.process(entries)
    assert late.decisions == [] and late.duplicates == 1
    assert decided_ids(redis_client) == {b"stuck-3": 1}


def test_a_copy_in_the_batch_that_dead_letters_its_lease_holder_is_decided(
    redis_client: redis.Redis, ensemble: AgentEnsemble
) -> None:
    """The holder reaches max_deliveries in the same batch as a resent copy: the dead letter goes first and releases
    the lease, so the copy is decided, not acked as a copy of an entry that is being dead-lettered."""
    ensure_group(redis_client)
    event = make_event(correlation_id="twice", rng=np.random.default_rng(7))
    publish_events(redis_client, [event])
    [holder] = read_as(redis_client, "w")
    pipeline = pipeline_for(redis_client, ensemble, "w")
    pipeline.scripts.claim("w", 30_000, [("twice", holder.entry_id)])  # its earlier, failed try
    publish_events(redis_client, [event])  # the producer resent it
    [copy] = read_as(redis_client, "w")

    result = pipeline.process([dataclasses.replace(holder, delivery_count=6), copy])

    assert len(result.dead_letters) == 1 and [d.correlation_id for d in result.decisions] == ["twice"]
    assert decided_ids(redis_client) == {b"twice": 1}


def test_a_copy_whose_lease_holder_was_trimmed_from_the_stream_is_decided(
    redis_client: redis.Redis, ensemble: AgentEnsemble
) -> None:
    """The holder is still pending but its fields are gone (trimmed): no worker can decide it, so its lease is stale."""
    ensure_group(redis_client)
    event = make_event(correlation_id="trimmed", rng=np.random.default_rng(8))
    publish_events(redis_client, [event])
    [holder] = read_as(redis_client, "stalled")
    pipeline_for(redis_client, ensemble, "stalled").scripts.claim("stalled", 30_000, [("trimmed", holder.entry_id)])
    redis_client.xdel(INPUT_STREAM, holder.entry_id)
    publish_events(redis_client, [event])

    result = pipeline_for(redis_client, ensemble, "live").process(read_as(redis_client, "live"))

    assert [d.correlation_id for d in result.decisions] == ["trimmed"]


def test_a_copy_whose_id_another_entry_holds_is_acked_by_the_commit_and_the_holder_decides_it(
    redis_client: redis.Redis, ensemble: AgentEnsemble
) -> None:
    """The commit, not the claim's reply, decides: a second entry with the same correlation id read while the first
    is in flight (its lease held) is acked as a duplicate; the holder then commits the one decision."""
    ensure_group(redis_client)
    event = make_event(correlation_id="twin-1", rng=np.random.default_rng(5))
    publish_events(redis_client, [event, event])
    holder = pipeline_for(redis_client, ensemble, "holder")
    [first] = read_as(redis_client, "holder", count=1)
    holder.scripts.claim("holder", 30_000, [("twin-1", first.entry_id)])  # the holder is deciding it

    copy = pipeline_for(redis_client, ensemble, "copy").process(read_as(redis_client, "copy"))
    assert copy.decisions == [] and copy.duplicates == 1
    assert decided_ids(redis_client) == {}
    assert redis_client.xpending(INPUT_STREAM, CONSUMER_GROUP)["pending"] == 1, "the copy is acked, the holder's not"

    result = holder.process([first])
    assert [d.correlation_id for d in result.decisions] == ["twin-1"]
    assert decided_ids(redis_client) == {b"twin-1": 1}
    assert redis_client.xpending(INPUT_STREAM, CONSUMER_GROUP)["pending"] == 0

