"""Every malformed event is dead-lettered with its own reason, and the worker stays up."""

from __future__ import annotations

import numpy as np

from tests.integration.streams import decided_ids, pending_count, wait_for, wait_settled
from worker.delivery import MAX_DEAD_LETTER_VALUE_BYTES
from worker.events import encode_event
from worker.names import DEAD_LETTER_STREAM, INPUT_STREAM
from worker.producer import make_event, publish_events


def valid_fields(cid: str) -> dict:
    return encode_event(make_event(correlation_id=cid, rng=np.random.default_rng(1)))


def malformed() -> dict[str, dict]:
    nan_matrix = np.zeros((60, 7), dtype="<f4")
    nan_matrix[3, 2] = np.nan
    cases = {
        "missing_field": {k: v for k, v in valid_fields("x").items() if k != "correlation_id"},
        "correlation_id_too_long": {**valid_fields("x"), "correlation_id": "c" * 129},
        "matrix_size": {**valid_fields("m1"), "matrix": b"\x00" * 1676},
        "matrix_not_finite": {**valid_fields("m2"), "matrix": nan_matrix.tobytes()},
        "unknown_synergy_type": {**valid_fields("t"), "synergy_type": "TYPE_9"},
        "bad_direction": {**valid_fields("d"), "direction": "2"},
        "bad_confidence": {**valid_fields("c"), "confidence": "1.5"},
        "wrong_event_type": {**valid_fields("e"), "event_type": "SOMETHING_ELSE"},
        "payload_too_large": {**valid_fields("p"), "padding": "x" * 70_000},
        "matrix_shape": {**valid_fields("s"), "matrix_encoding": "json", "matrix": "[[1,2,3]]"},
    }
    return cases


def test_each_malformed_event_is_dead_lettered_with_its_reason(redis_url, redis_client, start_worker) -> None:
    cases = malformed()
    for fields in cases.values():
        redis_client.xadd(INPUT_STREAM, fields)
    publish_events(redis_client, [make_event(correlation_id="good-after", rng=np.random.default_rng(2))])
    worker = start_worker(redis_url)
    wait_settled(redis_client, decisions=1, dead=len(cases))
    assert worker.poll() is None, "the worker is still running"
    reasons = [fields[b"dead_reason"].decode() for _, fields in redis_client.xrange(DEAD_LETTER_STREAM)]
    for expected, reason in zip(cases, reasons, strict=True):
        assert reason.startswith(expected), (expected, reason)
    first = redis_client.xrange(DEAD_LETTER_STREAM, count=1)[0][1]
    assert first[b"dead_delivery_count"] == b"1"
    assert b"matrix" in first, "the original fields are kept"
    assert decided_ids(redis_client) == {b"good-after": 1}
    assert pending_count(redis_client) == 0
    # Its log line says which event and which entry, to find it with `tacticalctl dead-letter list`.
    nan_entry = next(fields[b"dead_entry_id"].decode() for _, fields in redis_client.xrange(DEAD_LETTER_STREAM)
                     if fields[b"dead_reason"].startswith(b"matrix_not_finite"))
    # The line is written once the commit has come back, so it can trail the dead letters being readable.
    wait_for(lambda: f"dead-lettered event m2 (entry {nan_entry}): matrix_not_finite:" in worker.log_text(),
             timeout_s=10, what="the log line of the non-finite matrix's dead letter")
    wait_for(lambda: "dead-lettered event (no valid correlation id) (entry " in worker.log_text(),
             timeout_s=10, what="the log line of a dead letter without a correlation id")


def test_an_event_with_thousands_of_fields_is_dead_lettered_not_lost(redis_url, redis_client, start_worker) -> None:
    # 5,000 one-byte extra fields fit in max_event_bytes; as one XADD from the commit script they were more
    # arguments than Lua hands a command: the script failed after its XACK, and the entry was acked, never written.
    fields = {k: v for k, v in valid_fields("wide").items() if k != "symbol"}
    fields.update({f"x{i}": "1" for i in range(5_000)})
    redis_client.xadd(INPUT_STREAM, fields)
    publish_events(redis_client, [make_event(correlation_id="good-after-wide", rng=np.random.default_rng(3))])
    worker = start_worker(redis_url)

    wait_settled(redis_client, decisions=1, dead=1)
    assert worker.poll() is None
    (_, dead), = redis_client.xrange(DEAD_LETTER_STREAM)
    assert dead[b"dead_reason"].startswith(b"missing_field: missing symbol")
    assert dead[b"correlation_id"] == b"wide" and b"matrix" in dead, "the event's own fields are kept"
    kept_extras = sum(1 for name in dead if name.startswith(b"x"))
    assert int(dead[b"dead_fields_left_out"]) == 5_000 - kept_extras > 0
    assert pending_count(redis_client) == 0


def test_an_oversized_event_is_dead_lettered_with_its_long_values_cut(redis_url, redis_client, start_worker) -> None:
    """A 2 MB event is payload_too_large: its dead letter keeps every field, the long one cut to 64 KiB with its
    length on record — not a second 2 MB write for Redis and for every reader of the dead letters."""
    fields = valid_fields("huge")
    fields["debug_blob"] = "z" * 2_000_000
    redis_client.xadd(INPUT_STREAM, fields)
    start_worker(redis_url)

    wait_settled(redis_client, decisions=0, dead=1)
    (_, dead), = redis_client.xrange(DEAD_LETTER_STREAM)
    assert dead[b"dead_reason"].startswith(b"payload_too_large")
    assert dead[b"debug_blob"] == b"z" * MAX_DEAD_LETTER_VALUE_BYTES
    assert dead[b"dead_fields_truncated"] == b"debug_blob=2000000"
    assert dead[b"matrix"] == fields["matrix"] and dead[b"correlation_id"] == b"huge", "short fields are whole"
