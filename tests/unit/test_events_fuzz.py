"""Whatever arrives on the stream, decoding yields an event or an InvalidEvent: never a crash."""

from __future__ import annotations

import gc
import math
from datetime import datetime

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from worker.events import (
    MATRIX_BYTES,
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    TIMESTAMP_YEARS,
    InvalidEvent,
    InvalidReason,
    decode_event,
    decode_events,
    encode_event,
)
from worker.records import FEATURE_CLIP, SynergyEvent, SynergyType

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELD_NAMES = [name.encode() for name in (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)]

VALID = {
    name.encode(): value if isinstance(value, bytes) else value.encode()
    for name, value in encode_event(
        SynergyEvent(
            correlation_id="fuzz-1",
            synergy_type=SynergyType.TYPE_1,
            direction=1,
            confidence=0.8,
            symbol="ES",
            timestamp="2024-05-01T14:35:00Z",
            price=4500.0,
            atr=5.0,
            matrix=np.zeros((60, 7), dtype=np.float32),
        )
    ).items()
}

garbage = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=MATRIX_BYTES - 8, max_size=MATRIX_BYTES + 8),
    st.text(max_size=32).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"nan", b"inf", b"-inf", b"1e999", b"-0", b"0x10", b"1_0", b"json", b"f32le", b"[]"]),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda x: repr(x).encode()),
    st.integers().map(lambda n: str(n).encode()),
)


def decodes_or_rejects(fields: object) -> SynergyEvent | InvalidEvent:
    try:
        return decode_event(fields)  # type: ignore[arg-type]
    except InvalidEvent as error:
        assert error.reason in set(InvalidReason)
        assert str(error) == f"{error.reason}: {error.detail}"
        return error


@FUZZ
@given(st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.binary(max_size=16)), garbage, max_size=14))
def test_arbitrary_fields_decode_or_are_rejected(fields: dict[bytes, bytes]) -> None:
    decodes_or_rejects(fields)


@FUZZ
@given(st.sampled_from(FIELD_NAMES), garbage)
def test_a_valid_event_with_one_field_replaced_by_garbage_decodes_or_is_rejected(field: bytes, value: bytes) -> None:
    result = decodes_or_rejects({**VALID, field: value})
    if isinstance(result, SynergyEvent):
        assert result.matrix.shape == (60, 7)
        assert np.isfinite(result.matrix).all()
        assert 0.0 <= result.confidence <= 1.0
        assert math.isfinite(result.price) and result.price > 0
        assert math.isfinite(result.atr) and result.atr > 0


@FUZZ
@given(st.sampled_from(FIELD_NAMES[:-1]))
def test_any_missing_field_is_rejected_as_missing(field: bytes) -> None:
    fields = dict(VALID)
    del fields[field]
    result = decodes_or_rejects(fields)
    assert isinstance(result, InvalidEvent) and result.reason == "missing_field"


@FUZZ
@given(st.integers(min_value=0, max_value=MATRIX_BYTES * 2).filter(lambda n: n != MATRIX_BYTES))
def test_a_matrix_of_any_other_length_is_a_size_error(length: int) -> None:
    raw = (VALID[b"matrix"] * 2)[:length]
    result = decodes_or_rejects({**VALID, b"matrix": raw})
    assert isinstance(result, InvalidEvent) and result.reason == "matrix_size"


@FUZZ
@given(
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=6),
    st.sampled_from([np.nan, np.inf, -np.inf]),
    st.sampled_from(["f32le", "json"]),
)
def test_nan_or_inf_anywhere_in_the_matrix_is_rejected(row: int, col: int, value: float, encoding: str) -> None:
    matrix = np.zeros((60, 7), dtype=np.float32)
    matrix[row, col] = value
    if encoding == "f32le":
        raw = matrix.tobytes()
    else:
        raw = ("[" + ",".join("[" + ",".join(repr(float(x)) for x in r) + "]" for r in matrix) + "]").encode()
        raw = raw.replace(b"nan", b"NaN").replace(b"inf", b"Infinity")
    result = decodes_or_rejects({**VALID, b"matrix_encoding": encoding.encode(), b"matrix": raw})
    assert isinstance(result, InvalidEvent) and result.reason == "matrix_not_finite"
    assert f"matrix[{row}][{col}]" in result.detail


@FUZZ
@given(st.binary(min_size=MATRIX_BYTES, max_size=MATRIX_BYTES))
def test_any_1680_bytes_decode_to_exactly_those_floats_or_a_finiteness_or_range_error(raw: bytes) -> None:
    result = decodes_or_rejects({**VALID, b"matrix": raw})
    values = np.frombuffer(raw, dtype="<f4")
    if isinstance(result, SynergyEvent):
        assert result.matrix.tobytes() == raw
        assert np.all(np.abs(values) <= FEATURE_CLIP)
    elif not np.isfinite(values).all():
        assert result.reason == "matrix_not_finite"
    else:
        assert result.reason == "matrix_out_of_range"


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda children: st.lists(children, max_size=8) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=40,
)


@FUZZ
@given(st.one_of(json_values.map(lambda v: repr(v).encode()), st.binary(max_size=256)))
def test_any_json_matrix_text_decodes_or_is_rejected(raw: bytes) -> None:
    decodes_or_rejects({**VALID, b"matrix_encoding": b"json", b"matrix": raw})


finite_matrices = arrays(  # what the worker takes: every feature within the upstream clip
    np.float32, (60, 7), elements=st.floats(-FEATURE_CLIP, FEATURE_CLIP, width=32, allow_subnormal=True)
)
correlation_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128)
symbols = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=32)
timestamps = st.datetimes(
    min_value=datetime(TIMESTAMP_YEARS.start, 1, 1), max_value=datetime(TIMESTAMP_YEARS.stop - 1, 12, 31, 23, 59, 59)
).map(lambda moment: moment.isoformat(timespec="seconds") + "Z")


@FUZZ
@given(
    correlation_ids,
    st.sampled_from(list(SynergyType)),
    st.sampled_from([1, -1]),
    st.floats(min_value=0.0, max_value=1.0),
    symbols,
    timestamps,
    st.floats(min_value=1e-9, max_value=1e12),
    st.floats(min_value=1e-9, max_value=1e6),
    finite_matrices,
    st.sampled_from(["f32le", "json"]),
)
def test_every_valid_event_round_trips(
    correlation_id: str,
    synergy_type: SynergyType,
    direction: int,
    confidence: float,
    symbol: str,
    timestamp: str,
    price: float,
    atr: float,
    matrix: np.ndarray,
    encoding: str,
) -> None:
    event = SynergyEvent(correlation_id, synergy_type, direction, confidence, symbol, timestamp, price, atr, matrix)
    fields = encode_event(event, matrix_encoding=encoding)
    wire = {name.encode(): value if isinstance(value, bytes) else value.encode() for name, value in fields.items()}
    decoded = decode_event(wire)
    assert decoded == event
    assert decoded.matrix.tobytes() == matrix.tobytes()


def json_matrix(matrix: np.ndarray) -> bytes:
    raw = ("[" + ",".join("[" + ",".join(repr(float(x)) for x in r) + "]" for r in matrix) + "]").encode()
    return raw.replace(b"nan", b"NaN").replace(b"inf", b"Infinity")


json_entries = arrays(np.float32, (60, 7), elements=st.floats(width=32), fill=st.just(0.25)).map(  # NaN, inf too
    lambda matrix: {**VALID, b"matrix_encoding": b"json", b"matrix": json_matrix(matrix)})
batch_entry = st.one_of(
    st.binary(min_size=MATRIX_BYTES, max_size=MATRIX_BYTES).map(lambda raw: {**VALID, b"matrix": raw}),  # NaNs too
    json_entries,
    json_entries.map(lambda fields: {name.decode(): value.decode() for name, value in fields.items()}),  # str
    st.tuples(st.sampled_from(FIELD_NAMES), garbage).map(lambda change: {**VALID, change[0]: change[1]}),
)


@FUZZ
@given(st.lists(batch_entry, max_size=12))
def test_a_batch_decodes_as_its_entries_one_by_one(entries: list[dict[bytes, bytes]]) -> None:
    decoded, matrices = decode_events(entries)
    alone = [decodes_or_rejects(fields) for fields in entries]

    assert len(decoded) == len(alone)
    for batched, one in zip(decoded, alone, strict=True):
        assert type(batched) is type(one)
        if isinstance(one, InvalidEvent):
            assert str(batched) == str(one) and batched.reason == one.reason  # type: ignore[union-attr]
        else:
            assert batched == one and batched.matrix.tobytes() == one.matrix.tobytes()  # type: ignore[union-attr]
            assert not batched.matrix.flags.writeable  # type: ignore[union-attr]
    events = [event for event in decoded if isinstance(event, SynergyEvent)]
    assert matrices.shape == (len(events), 60, 7) and matrices.dtype == np.float32
    assert matrices.tobytes() == b"".join(event.matrix.tobytes() for event in events)
    assert matrices.flags.writeable and matrices.flags.c_contiguous  # torch wraps it as it is


def test_a_batch_with_an_invalid_entry_leaves_no_garbage_cycle() -> None:
    """The worker freezes the collector's generations after startup: a batch kept alive by a cycle would wait for a
    full collection, its entries and matrices with it."""
    entries = [VALID, {**VALID, b"direction": b"2"}, {**VALID, b"matrix": b"short"}]
    gc.collect()
    gc.disable()
    try:
        decoded, _ = decode_events(entries)
        assert [type(result) for result in decoded] == [SynergyEvent, InvalidEvent, InvalidEvent]
        del decoded
        assert gc.collect() == 0
    finally:
        gc.enable()
