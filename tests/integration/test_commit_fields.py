"""What the commit writes: each decision and command entry holds its record's fields, then the batch's shared ones,
in that order, whichever of a batch's decisions executed, and whatever was a duplicate is skipped."""

from __future__ import annotations

import pytest
import redis

from tests.integration.streams import read_group
from worker import stream_entries
from worker.delivery import DecidedEvent, DeliveryScripts, SharedFields, ensure_group
from worker.names import COMMANDS_STREAM, CONSUMER_GROUP, DECISIONS_STREAM, INPUT_STREAM, completed_key

SHARED = SharedFields(decision={"model_version": "v9", "inference_ms": "0.07"}, command={"inference_ms": "0.07"})


def queued(client: redis.Redis, n: int) -> list[bytes]:
    ensure_group(client)
    for i in range(n):
        client.xadd(INPUT_STREAM, {"n": str(i)})
    messages = read_group(client, "fields", n)
    return [entry_id for entry_id, _ in messages]


def decided(entry_id: bytes, cid: str, *, executed: bool) -> DecidedEvent:
    decision = {"correlation_id": cid, "action": "long" if executed else "hold", "score": "0.7",
                "execute": "1" if executed else "0", "event_id": entry_id}
    command = {"correlation_id": cid, "side": "BUY", "quantity": "3"} if executed else None
    return DecidedEvent(entry_id=entry_id, correlation_id=cid, decision_fields=decision, command_fields=command)


def as_bytes(fields: dict) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in fields.items()]


def test_each_entry_holds_its_fields_then_the_shared_ones_in_order(redis_client: redis.Redis) -> None:
    ids = queued(redis_client, 4)
    batch = [decided(ids[0], "f-0", executed=False), decided(ids[1], "f-1", executed=True),
             decided(ids[2], "f-2", executed=False), decided(ids[3], "f-3", executed=True)]
    redis_client.set(completed_key("f-2"), "an earlier decision")  # a duplicate: acked, nothing written
    scripts = DeliveryScripts(redis_client)

    with scripts.send_commit(batch, [], 3600, SHARED) as pending:
        assert pending.outcomes() == ["committed", "committed", "duplicate", "committed"]

    decisions = [list(fields.items()) for _, fields in stream_entries.entries(redis_client, DECISIONS_STREAM)]
    assert decisions == [as_bytes({**event.decision_fields, **SHARED.decision}) for event in (batch[0], batch[1],
                                                                                             batch[3])]
    commands = [list(fields.items()) for _, fields in stream_entries.entries(redis_client, COMMANDS_STREAM)]
    executed = [batch[1].command_fields, batch[3].command_fields]
    assert executed[0] is not None and executed[1] is not None
    assert commands == [as_bytes({**executed[0], **SHARED.command}), as_bytes({**executed[1], **SHARED.command})]
    assert redis_client.xpending(INPUT_STREAM, CONSUMER_GROUP)["pending"] == 0
    scripts.close()


def test_a_batch_whose_records_differ_in_their_field_names_is_refused_before_anything_is_sent(
    redis_client: redis.Redis,
) -> None:
    """The commit sends field names once per batch; a record with other names would be written under wrong ones."""
    ids = queued(redis_client, 2)
    odd = decided(ids[1], "odd-1", executed=False)
    odd = DecidedEvent(odd.entry_id, odd.correlation_id, {"extra": "1", **odd.decision_fields}, None)
    scripts = DeliveryScripts(redis_client)

    with pytest.raises(ValueError, match="'odd-1' has fields"):
        scripts.send_commit([decided(ids[0], "odd-0", executed=False), odd], [], 3600, SHARED)

    assert redis_client.xlen(DECISIONS_STREAM) == 0
    assert redis_client.xpending(INPUT_STREAM, CONSUMER_GROUP)["pending"] == 2, "both still pending"
    scripts.close()
