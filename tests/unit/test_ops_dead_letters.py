"""A dead letter: the original event plus why it was given up on; replay needs the original alone."""

from __future__ import annotations

from worker.delivery import dead_letter_fields
from worker.ops.dead_letters import DeadLetterEntry, original_fields

ORIGINAL = {b"event_type": b"SYNERGY_DETECTED", b"correlation_id": b"cid-1", b"matrix": b"\x00\x01"}


def test_original_fields_strip_exactly_what_dead_lettering_added() -> None:
    fields = dead_letter_fields(ORIGINAL, reason="bad matrix", delivery_count=3, entry_id=b"1-0", consumer="w:1")
    raw = {(k if isinstance(k, bytes) else k.encode()): (v if isinstance(v, bytes) else v.encode())
           for k, v in fields.items()}
    assert original_fields(raw) == ORIGINAL


def test_entry_reads_reason_count_origin_and_matches_reason_case_insensitively() -> None:
    fields = dead_letter_fields(ORIGINAL, reason="Matrix has NaN", delivery_count=2, entry_id=b"5-1", consumer="w:1")
    raw = {(k if isinstance(k, bytes) else k.encode()): (v if isinstance(v, bytes) else v.encode())
           for k, v in fields.items()}
    entry = DeadLetterEntry.from_stream(b"9-0", raw)
    assert (entry.id, entry.reason, entry.delivery_count, entry.original_id) == ("9-0", "Matrix has NaN", 2, "5-1")
    assert entry.correlation_id == "cid-1"
    assert entry.matches("nan") and entry.matches(None) and not entry.matches("size")


def test_a_hand_written_dead_letter_without_dead_fields_still_lists() -> None:
    entry = DeadLetterEntry.from_stream(b"9-0", {b"foo": b"bar"})
    assert entry.reason == "(no reason recorded)"
    assert entry.delivery_count is None and entry.original_id is None
    assert entry.original == {b"foo": b"bar"}
