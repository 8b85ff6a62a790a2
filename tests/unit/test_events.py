"""The SYNERGY_DETECTED wire format: what the worker accepts, and why it rejects what it rejects."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from worker.events import (
    MATRIX_BYTES,
    MAX_CORRELATION_ID_LENGTH,
    MAX_SYMBOL_LENGTH,
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    InvalidEvent,
    InvalidReason,
    decode_event,
    decode_events,
    encode_event,
    matrix_from_bytes,
    new_correlation_id,
)
from worker.records import FEATURE_CLIP, FEATURE_NAMES, SynergyEvent, SynergyType

TEXT_FIELDS = (
    "event_type",
    "correlation_id",
    "synergy_type",
    "direction",
    "confidence",
    "symbol",
    "timestamp",
    "price",
    "atr",
    "matrix_encoding",
)


def feature_matrix(seed: int = 7) -> np.ndarray:
    matrix = np.random.default_rng(seed).uniform(-2.0, 2.0, (60, 7)).astype(np.float32)
    matrix[0, 0], matrix[0, 1], matrix[0, 2] = -0.0, np.float32(1e-45), np.float32(0.1)  # sign, subnormal
    return matrix


def valid_event(**changes: object) -> SynergyEvent:
    values: dict[str, object] = {
        "correlation_id": "01HZX3V9D5Q8W0KJ7M2N4P6R8T",
        "synergy_type": SynergyType.TYPE_2,
        "direction": -1,
        "confidence": 0.73,
        "symbol": "ES",
        "timestamp": "2024-05-01T14:35:00Z",
        "price": 5071.25,
        "atr": 6.125,
        "matrix": feature_matrix(),
    }
    values.update(changes)
    return SynergyEvent(**values)  # type: ignore[arg-type]


def received(fields: dict[str, bytes | str]) -> dict[bytes, bytes]:
    """What a Redis client hands the worker: bytes names and values."""
    return {name.encode(): value if isinstance(value, bytes) else value.encode() for name, value in fields.items()}


def valid_fields(matrix_encoding: str = "f32le") -> dict[bytes, bytes]:
    return received(encode_event(valid_event(), matrix_encoding=matrix_encoding))


def rejection(fields: object, **kwargs: int) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        decode_event(fields, **kwargs)  # type: ignore[arg-type]
    return caught.value


@pytest.mark.parametrize("matrix_encoding", ["f32le", "json"])
def test_a_valid_event_round_trips_bit_for_bit(matrix_encoding: str) -> None:
    event = valid_event()
    decoded = decode_event(received(encode_event(event, matrix_encoding=matrix_encoding)))
    assert decoded == event
    assert decoded.matrix.dtype == np.float32
    assert decoded.matrix.shape == (60, 7)
    assert decoded.matrix.tobytes() == event.matrix.tobytes()
    assert not decoded.matrix.flags.writeable


def test_the_f32le_matrix_is_1680_little_endian_bytes_and_the_default_encoding() -> None:
    fields = valid_fields()
    assert fields[b"matrix"] == feature_matrix().astype("<f4").tobytes()
    assert len(fields[b"matrix"]) == MATRIX_BYTES == 1680
    del fields[b"matrix_encoding"]
    assert decode_event(fields).matrix.tobytes() == feature_matrix().tobytes()


def test_encoded_fields_are_flat_with_a_top_level_correlation_id() -> None:
    fields = encode_event(valid_event())
    assert fields["event_type"] == "SYNERGY_DETECTED"
    assert fields["correlation_id"] == "01HZX3V9D5Q8W0KJ7M2N4P6R8T"
    assert fields["synergy_type"] == "TYPE_2"
    assert fields["direction"] == "-1"
    assert float(fields["price"]) == 5071.25
    assert set(fields) == {*REQUIRED_FIELDS, "matrix_encoding"}


def test_a_hand_written_json_matrix_of_ints_and_floats_is_accepted() -> None:
    rows = [[1, 0, -0.25, 0.5, 0, 0.125, -1] for _ in range(60)]
    fields = {**valid_fields(), b"matrix_encoding": b"json", b"matrix": json.dumps(rows).encode()}
    matrix = decode_event(fields).matrix
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, np.array(rows, dtype=np.float32))


def test_matrix_from_bytes_is_a_zero_copy_read_only_view() -> None:
    raw = feature_matrix().tobytes()
    matrix = matrix_from_bytes(raw)
    assert np.shares_memory(matrix, np.frombuffer(raw, dtype=np.uint8))
    assert not matrix.flags.writeable
    assert matrix.shape == (60, 7)
    np.testing.assert_array_equal(matrix, feature_matrix())


def test_decoding_accepts_text_fields_from_a_client_that_decodes_responses() -> None:
    fields = {name.decode(): value.decode() for name, value in valid_fields().items() if name != b"matrix"}
    fields["matrix"] = valid_fields()[b"matrix"]  # type: ignore[assignment]
    assert decode_event(fields) == valid_event()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("correlation_id", b"c" * 128),
        ("correlation_id", b"upstream:run-7/bar#42"),
        ("confidence", b"0"),
        ("confidence", b"1"),
        ("symbol", b"ES 1 Index"),
        ("timestamp", b"2024-05-01T14:35:00+00:00"),
        ("timestamp", b"2024-05-01T14:35:00"),
        ("timestamp", b"2024-05-01 14:35:00.123456Z"),
        ("timestamp", b"2024-05-01t14:35:00Z"),  # ISO-8601 allows a lowercase separator
        ("timestamp", b"1970-01-01T00:05:00Z"),
        ("timestamp", b"2199-12-31T23:55:00Z"),
        ("direction", b"1"),
        ("synergy_type", b"manual"),
        ("unknown_extra_field", b"ignored"),
    ],
)
def test_edge_values_within_the_contract_are_accepted(field: str, value: bytes) -> None:
    fields = {**valid_fields(), field.encode(): value}
    event = decode_event(fields)
    if hasattr(event, field):
        assert str(getattr(event, field)) == value.decode() or float(getattr(event, field)) == float(value)


def _set(field: str, value: bytes) -> Callable[[dict[bytes, bytes]], None]:
    def mutate(fields: dict[bytes, bytes]) -> None:
        fields[field.encode()] = value

    return mutate


def _drop(field: str) -> Callable[[dict[bytes, bytes]], None]:
    def mutate(fields: dict[bytes, bytes]) -> None:
        del fields[field.encode()]

    return mutate


def _json_matrix(rows: object) -> Callable[[dict[bytes, bytes]], None]:
    def mutate(fields: dict[bytes, bytes]) -> None:
        fields[b"matrix_encoding"] = b"json"
        fields[b"matrix"] = rows if isinstance(rows, bytes) else json.dumps(rows).encode()

    return mutate


def _f32le_with(value: float) -> Callable[[dict[bytes, bytes]], None]:
    matrix = feature_matrix()
    matrix[17, 5] = value
    return _set("matrix", matrix.tobytes())


ROW = [0.0] * 7
BAD_EVENTS: list[tuple[str, Callable[[dict[bytes, bytes]], None], InvalidReason]] = [
    ("no_correlation_id", _drop("correlation_id"), InvalidReason.MISSING_FIELD),
    ("no_matrix", _drop("matrix"), InvalidReason.MISSING_FIELD),
    ("other_event_type", _set("event_type", b"ORDER_FILLED"), InvalidReason.WRONG_EVENT_TYPE),
    ("oversized", _set("padding", b"x" * 70_000), InvalidReason.PAYLOAD_TOO_LARGE),
    ("non_utf8_symbol", _set("symbol", b"E\xffS"), InvalidReason.BAD_FIELD_ENCODING),
    ("empty_correlation_id", _set("correlation_id", b""), InvalidReason.BAD_CORRELATION_ID),
    ("correlation_id_with_space", _set("correlation_id", b"abc def"), InvalidReason.BAD_CORRELATION_ID),
    ("correlation_id_with_newline", _set("correlation_id", b"abc\n"), InvalidReason.BAD_CORRELATION_ID),
    ("non_ascii_correlation_id", _set("correlation_id", "café".encode()), InvalidReason.BAD_CORRELATION_ID),
    ("129_char_correlation_id", _set("correlation_id", b"c" * 129), InvalidReason.CORRELATION_ID_TOO_LONG),
    ("type_5", _set("synergy_type", b"TYPE_5"), InvalidReason.UNKNOWN_SYNERGY_TYPE),
    ("lowercase_type", _set("synergy_type", b"type_1"), InvalidReason.UNKNOWN_SYNERGY_TYPE),
    ("direction_0", _set("direction", b"0"), InvalidReason.BAD_DIRECTION),
    ("direction_2", _set("direction", b"2"), InvalidReason.BAD_DIRECTION),
    ("direction_word", _set("direction", b"long"), InvalidReason.BAD_DIRECTION),
    ("confidence_above_1", _set("confidence", b"1.5"), InvalidReason.BAD_CONFIDENCE),
    ("confidence_negative", _set("confidence", b"-0.01"), InvalidReason.BAD_CONFIDENCE),
    ("confidence_nan", _set("confidence", b"nan"), InvalidReason.BAD_CONFIDENCE),
    ("confidence_word", _set("confidence", b"high"), InvalidReason.BAD_CONFIDENCE),
    ("empty_symbol", _set("symbol", b""), InvalidReason.BAD_SYMBOL),
    ("padded_symbol", _set("symbol", b" ES"), InvalidReason.BAD_SYMBOL),
    ("control_in_symbol", _set("symbol", b"E\x00S"), InvalidReason.BAD_SYMBOL),
    ("long_symbol", _set("symbol", b"S" * 33), InvalidReason.BAD_SYMBOL),
    ("timestamp_word", _set("timestamp", b"yesterday"), InvalidReason.BAD_TIMESTAMP),
    ("timestamp_offset", _set("timestamp", b"2024-05-01T16:35:00+02:00"), InvalidReason.BAD_TIMESTAMP),
    ("timestamp_date_only", _set("timestamp", b"2024-05-01"), InvalidReason.BAD_TIMESTAMP),
    # Python parses any one character between date and time; ISO-8601 has T (or t, or a space).
    ("timestamp_other_separator", _set("timestamp", b"2024-05-01x14:35:00Z"), InvalidReason.BAD_TIMESTAMP),
    ("timestamp_month_13", _set("timestamp", b"2024-13-01T00:00:00Z"), InvalidReason.BAD_TIMESTAMP),
    # Accepted, it crashed the worker after its commit: the books add an hour to it, past datetime's year 9999.
    ("timestamp_year_9999", _set("timestamp", b"9999-12-31T23:55:00Z"), InvalidReason.BAD_TIMESTAMP),
    ("timestamp_year_2200", _set("timestamp", b"2200-01-01T00:00:00Z"), InvalidReason.BAD_TIMESTAMP),
    ("timestamp_year_1969", _set("timestamp", b"1969-12-31T23:55:00Z"), InvalidReason.BAD_TIMESTAMP),
    ("price_zero", _set("price", b"0"), InvalidReason.BAD_PRICE),
    ("price_negative", _set("price", b"-4500"), InvalidReason.BAD_PRICE),
    ("price_inf", _set("price", b"inf"), InvalidReason.BAD_PRICE),
    ("price_nan", _set("price", b"NaN"), InvalidReason.BAD_PRICE),
    ("price_word", _set("price", b"market"), InvalidReason.BAD_PRICE),
    ("atr_zero", _set("atr", b"0"), InvalidReason.BAD_ATR),
    ("atr_negative", _set("atr", b"-1"), InvalidReason.BAD_ATR),
    ("atr_inf", _set("atr", b"inf"), InvalidReason.BAD_ATR),
    ("unknown_encoding", _set("matrix_encoding", b"f64le"), InvalidReason.MATRIX_ENCODING),
    ("json_that_is_not_json", _json_matrix(b"[[1, 2"), InvalidReason.MATRIX_ENCODING),
    ("matrix_4_bytes_short", _set("matrix", b"\x00" * 1676), InvalidReason.MATRIX_SIZE),
    ("matrix_empty", _set("matrix", b""), InvalidReason.MATRIX_SIZE),
    ("matrix_float64", _set("matrix", feature_matrix().astype(np.float64).tobytes()), InvalidReason.MATRIX_SIZE),
    ("json_59_rows", _json_matrix([ROW] * 59), InvalidReason.MATRIX_SHAPE),
    ("json_row_of_6", _json_matrix([ROW] * 59 + [ROW[:6]]), InvalidReason.MATRIX_SHAPE),
    ("json_text_value", _json_matrix([ROW] * 59 + [[*ROW[:6], "0.5"]]), InvalidReason.MATRIX_SHAPE),
    ("json_bool_value", _json_matrix([ROW] * 59 + [[*ROW[:6], True]]), InvalidReason.MATRIX_SHAPE),
    ("json_object", _json_matrix({"rows": [ROW] * 60}), InvalidReason.MATRIX_SHAPE),
    ("f32le_nan", _f32le_with(np.nan), InvalidReason.MATRIX_NOT_FINITE),
    ("f32le_inf", _f32le_with(np.inf), InvalidReason.MATRIX_NOT_FINITE),
    ("f32le_minus_inf", _f32le_with(-np.inf), InvalidReason.MATRIX_NOT_FINITE),
    ("json_nan", _json_matrix(b"[" + b",".join([b"[0,0,0,0,0,0,NaN]"] * 60) + b"]"), InvalidReason.MATRIX_NOT_FINITE),
    ("json_beyond_float32", _json_matrix([ROW] * 59 + [[*ROW[:6], 1e39]]), InvalidReason.MATRIX_NOT_FINITE),
    ("json_huge_int", _json_matrix([ROW] * 59 + [[*ROW[:6], 10**400]]), InvalidReason.MATRIX_NOT_FINITE),
    ("f32le_beyond_the_clip", _f32le_with(3e38), InvalidReason.MATRIX_OUT_OF_RANGE),
    ("price_with_an_underscore", _set("price", b"4_500"), InvalidReason.BAD_PRICE),
    ("confidence_with_spaces", _set("confidence", b" 0.5 "), InvalidReason.BAD_CONFIDENCE),
    ("atr_with_a_newline", _set("atr", b"6.1\n"), InvalidReason.BAD_ATR),
    ("json_beyond_the_clip", _json_matrix([ROW] * 59 + [[*ROW[:6], -2.5]]), InvalidReason.MATRIX_OUT_OF_RANGE),
]


@pytest.mark.parametrize(("mutate", "reason"), [case[1:] for case in BAD_EVENTS], ids=[case[0] for case in BAD_EVENTS])
def test_each_bad_event_is_rejected_with_its_own_reason(
    mutate: Callable[[dict[bytes, bytes]], None], reason: InvalidReason
) -> None:
    fields = valid_fields()
    mutate(fields)
    error = rejection(fields)
    assert error.reason == reason
    assert str(error) == f"{reason}: {error.detail}"


def test_every_reason_has_a_bad_event_that_produces_it() -> None:
    assert {case[2] for case in BAD_EVENTS} == set(InvalidReason)


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_a_missing_field_is_named(field: str) -> None:
    fields = valid_fields()
    del fields[field.encode()]
    error = rejection(fields)
    assert error.reason == "missing_field"
    assert field in error.detail


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_a_text_field_that_is_not_utf8_is_an_encoding_error_not_a_crash(field: str) -> None:
    fields = {**valid_fields(), field.encode(): b"\xff\xfe\x80"}
    assert rejection(fields).reason == "bad_field_encoding"


@pytest.mark.parametrize("fields", [[(b"event_type", b"SYNERGY_DETECTED")], None, b"SYNERGY_DETECTED", 42])
def test_something_that_is_not_a_mapping_is_rejected(fields: object) -> None:
    assert rejection(fields).reason == "bad_field_encoding"


@pytest.mark.parametrize("value", [42, 0.5, None, ["a"]])
def test_a_field_value_that_is_not_bytes_is_rejected(value: object) -> None:
    assert rejection({**valid_fields(), b"symbol": value}).reason == "bad_field_encoding"


def test_the_size_limit_counts_every_field_name_and_value() -> None:
    fields = valid_fields()
    size = sum(len(name) + len(value) for name, value in fields.items())
    assert decode_event(fields, max_event_bytes=size) == valid_event()
    error = rejection(fields, max_event_bytes=size - 1)
    assert error.reason == "payload_too_large"
    assert f"{size:,} bytes" in error.detail


def test_details_say_what_was_wrong_in_words_an_operator_can_act_on() -> None:
    short = rejection({**valid_fields(), b"matrix": b"\x00" * 1676})
    assert short.detail == "matrix is 1676 bytes, expected 1680"
    nan = feature_matrix()
    nan[3, 2] = np.nan
    not_finite = rejection({**valid_fields(), b"matrix": nan.tobytes()})
    assert "matrix[3][2]" in not_finite.detail and "fvg_nearest_level" in not_finite.detail
    direction = rejection({**valid_fields(), b"direction": b"up"})
    assert "'up'" in direction.detail and "-1" in direction.detail


def test_a_huge_value_is_truncated_in_the_detail() -> None:
    error = rejection({**valid_fields(), b"correlation_id": b"x" * 10_000})
    assert error.reason == "correlation_id_too_long"
    assert "10000 bytes" in error.detail
    assert len(str(error)) < 200


def test_invalid_event_survives_pickling_for_process_pools() -> None:
    error = rejection({**valid_fields(), b"atr": b"0"})
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.detail, str(copy)) == (error.reason, error.detail, str(error))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"atr": 0.0}, "bad_atr"),
        ({"correlation_id": ""}, "bad_correlation_id"),
        ({"matrix": np.zeros((59, 7), dtype=np.float32)}, "matrix_shape"),
        ({"matrix": np.full((60, 7), np.nan, dtype=np.float32)}, "matrix_not_finite"),
        ({"timestamp": "2024-05-01T16:35:00+02:00"}, "bad_timestamp"),
    ],
)
def test_encoding_refuses_an_event_the_worker_would_dead_letter(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        encode_event(valid_event(**changes))
    assert caught.value.reason == reason


def test_encoding_refuses_an_unknown_matrix_encoding() -> None:
    with pytest.raises(InvalidEvent) as caught:
        encode_event(valid_event(), matrix_encoding="msgpack")
    assert caught.value.reason == "matrix_encoding"


def test_new_correlation_ids_are_unique_and_valid() -> None:
    ids = [new_correlation_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(cid) == 26 for cid in ids)
    fields = valid_fields()
    fields[b"correlation_id"] = ids[0].encode()
    assert decode_event(fields).correlation_id == ids[0]


def test_new_correlation_ids_sort_by_creation_time() -> None:
    earlier = [new_correlation_id(now_ms=1_714_574_100_000) for _ in range(200)]
    later = [new_correlation_id(now_ms=1_714_574_100_001) for _ in range(200)]
    assert max(earlier) < min(later)
    assert len({cid[:10] for cid in earlier}) == 1


def test_the_readme_documents_the_wire_format() -> None:
    """A producer team writes events from the README: every field, synergy type, matrix column and limit the worker
    checks is named there."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Feeding events"):]
    section = " ".join(section[:section.index("\n## ")].split())
    for name in (*REQUIRED_FIELDS, *OPTIONAL_FIELDS, *FEATURE_NAMES):
        assert f"`{name}`" in section, name
    for synergy_type in SynergyType:
        assert f"`{synergy_type.value}`" in section, synergy_type
    assert f"≤ {MAX_CORRELATION_ID_LENGTH} characters" in section
    assert f"≤ {MAX_SYMBOL_LENGTH} characters" in section
    assert f"{MATRIX_BYTES:,} bytes of little-endian float32" in section
    assert f"every value within ±{FEATURE_CLIP:g}" in section


@pytest.mark.parametrize("value", [2.0001, -2.5, 3e38, -1e10])
def test_a_finite_feature_outside_the_upstream_clip_is_rejected_with_where_it_is(value: float) -> None:
    """Features are clipped to ±2 upstream: a value outside is a broken feed (3e38 gives the agents NaN votes), not
    an event to trade on. Alone or in a batch, the same reason."""
    matrix = feature_matrix()
    matrix[4, 5] = value
    fields = {**valid_fields(), b"matrix": matrix.tobytes()}

    rejected = rejection(fields)

    assert rejected.reason == "matrix_out_of_range"
    assert f"matrix[4][5] = {float(np.float32(value))} (bar 4, price_momentum_5)" in rejected.detail
    [batched], _ = decode_events([fields])
    assert isinstance(batched, InvalidEvent) and str(batched) == str(rejected)


def test_a_feature_at_the_clip_itself_is_taken() -> None:
    matrix = feature_matrix()
    matrix[0, :], matrix[1, :] = 2.0, -2.0
    assert decode_event({**valid_fields(), b"matrix": matrix.tobytes()}).matrix.tobytes() == matrix.tobytes()


def test_nan_beside_an_out_of_range_value_is_named_first() -> None:
    matrix = feature_matrix()
    matrix[3, 1], matrix[2, 0] = np.nan, 7.0
    assert rejection({**valid_fields(), b"matrix": matrix.tobytes()}).reason == "matrix_not_finite"
