"""A dead letter: the original event plus why it was given up on; replay needs the original alone."""

from __future__ import annotations

from worker.delivery import MAX_DEAD_LETTER_BYTES, MAX_DEAD_LETTER_VALUE_BYTES, dead_letter_fields
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


def _letter(original: dict) -> dict:
    return dead_letter_fields(original, reason="payload_too_large", delivery_count=1, entry_id=b"9-0", consumer="w:1")


def _stored_bytes(fields: dict) -> int:
    return sum(len(x.encode() if isinstance(x, str) else x) for name, value in fields.items()
               if not (name if isinstance(name, str) else name.decode()).startswith("dead_") for x in (name, value))


def test_an_ordinary_event_is_kept_whole_and_in_order() -> None:
    fields = _letter(ORIGINAL)
    assert list(fields.items())[: len(ORIGINAL)] == list(ORIGINAL.items())
    assert "dead_fields_left_out" not in fields and "dead_fields_truncated" not in fields


def test_a_long_value_is_cut_and_its_length_kept() -> None:
    fields = _letter({**ORIGINAL, b"debug_blob": b"z" * 2_000_000})
    assert fields[b"debug_blob"] == b"z" * MAX_DEAD_LETTER_VALUE_BYTES
    assert fields["dead_fields_truncated"] == "debug_blob=2000000"
    assert all(fields[name] == value for name, value in ORIGINAL.items())


def test_many_values_each_under_the_cut_are_bounded_together_the_events_own_fields_first() -> None:
    """300 values of 60 KB each: none is cut alone, 18 MB together. The event's own fields are kept whole (they come
    last here), the rest while they fit, and what was left out is counted."""
    junk = {f"x{i}".encode(): b"j" * 60_000 for i in range(300)}
    fields = _letter({**junk, **ORIGINAL})
    assert _stored_bytes(fields) <= MAX_DEAD_LETTER_BYTES
    assert all(fields[name] == value for name, value in ORIGINAL.items())
    kept = sum(1 for name in fields if name in junk)
    assert int(fields["dead_fields_left_out"]) == 300 - kept > 0


def test_a_huge_name_is_left_out_not_copied() -> None:
    fields = _letter({**ORIGINAL, b"n" * 5_000_000: b"v"})
    assert _stored_bytes(fields) <= MAX_DEAD_LETTER_BYTES
    assert fields["dead_fields_left_out"] == "1" and "dead_fields_truncated" not in fields


def test_text_values_are_measured_and_cut_in_bytes() -> None:
    """A client with decode_responses hands the worker text: a value's size is its UTF-8 bytes, as Redis stores it."""
    text = "é" * 60_000  # 120,000 bytes of UTF-8 in 60,000 characters
    fields = dead_letter_fields({"correlation_id": "c", "note": text},  # type: ignore[dict-item]
                                reason="r", delivery_count=1, entry_id=b"1-0", consumer="w:1")
    note = fields["note"]
    assert isinstance(note, str) and len(note.encode()) <= MAX_DEAD_LETTER_VALUE_BYTES
    assert fields["dead_fields_truncated"] == "note=120000"


def test_the_events_small_fields_are_never_crowded_out_by_its_huge_ones() -> None:
    """Four of the event's own fields of 1 MB each fill the budget: its id and type, sent after them, are kept all
    the same (`dead-letter list` names the event by them)."""
    huge = {name: b"9" * 1_000_000 for name in (b"symbol", b"timestamp", b"price", b"atr")}
    fields = _letter({**huge, b"correlation_id": b"cid-7", b"synergy_type": b"TYPE_1"})
    assert fields[b"correlation_id"] == b"cid-7" and fields[b"synergy_type"] == b"TYPE_1"
    assert _stored_bytes(fields) <= MAX_DEAD_LETTER_BYTES
