"""The SYNERGY_DETECTED wire format: flat stream fields in, a validated `SynergyEvent` out, and back.

Every field is checked; any input whatsoever yields either a `SynergyEvent` or an `InvalidEvent` whose
`reason` is a short stable code the worker puts on the dead letter (and may use as a metric label).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import cast

import numpy as np

from worker.names import EVENT_TYPE
from worker.records import (
    FEATURE_CLIP,
    FEATURE_NAMES,
    MATRIX_COLS,
    MATRIX_ROWS,
    MATRIX_SHAPE,
    SynergyEvent,
    SynergyType,
)

MATRIX_DTYPE = np.dtype("<f4")
MATRIX_BYTES = MATRIX_ROWS * MATRIX_COLS * MATRIX_DTYPE.itemsize
MATRIX_ENCODINGS: tuple[str, ...] = ("f32le", "json")
DEFAULT_MATRIX_ENCODING = "f32le"
DEFAULT_MAX_EVENT_BYTES = 65536
MAX_CORRELATION_ID_LENGTH = 128
MAX_SYMBOL_LENGTH = 32
MAX_TIMESTAMP_LENGTH = 64
# Bar closes outside these years are a broken feed clock, not market data; and the books add hours to an event's time
# (a position's holding limit, an accuracy horizon), which overflows near datetime's year 9999.
TIMESTAMP_YEARS = range(1970, 2200)
REQUIRED_FIELDS: tuple[str, ...] = (
    "event_type",
    "correlation_id",
    "synergy_type",
    "direction",
    "confidence",
    "symbol",
    "timestamp",
    "price",
    "atr",
    "matrix",
)
OPTIONAL_FIELDS: tuple[str, ...] = ("matrix_encoding",)


class InvalidReason(StrEnum):
    """Why an event was rejected. The set is closed, so it is safe as a metric label."""

    MISSING_FIELD = "missing_field"
    WRONG_EVENT_TYPE = "wrong_event_type"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    BAD_FIELD_ENCODING = "bad_field_encoding"  # not a mapping of bytes, or a text field that is not UTF-8
    BAD_CORRELATION_ID = "bad_correlation_id"
    CORRELATION_ID_TOO_LONG = "correlation_id_too_long"
    UNKNOWN_SYNERGY_TYPE = "unknown_synergy_type"
    BAD_DIRECTION = "bad_direction"
    BAD_CONFIDENCE = "bad_confidence"
    BAD_SYMBOL = "bad_symbol"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_PRICE = "bad_price"
    BAD_ATR = "bad_atr"
    MATRIX_ENCODING = "matrix_encoding"  # unknown `matrix_encoding`, or a JSON matrix that is not JSON
    MATRIX_SIZE = "matrix_size"  # f32le matrix of the wrong byte length
    MATRIX_SHAPE = "matrix_shape"  # JSON matrix that is not 60 lists of 7 numbers
    MATRIX_NOT_FINITE = "matrix_not_finite"
    MATRIX_OUT_OF_RANGE = "matrix_out_of_range"  # a finite value outside ±FEATURE_CLIP


class InvalidEvent(ValueError):
    """An event the worker cannot use. `str(exc)` is `"{reason}: {detail}"`."""

    def __init__(self, reason: InvalidReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[InvalidEvent], tuple[InvalidReason, str]]:
        return type(self), (self.reason, self.detail)


_EVENT_TYPE = EVENT_TYPE.encode()
_REQUIRED_KEYS = tuple((name, name.encode()) for name in REQUIRED_FIELDS)
_SYNERGY_TYPES = {member.value.encode(): member for member in SynergyType}
_DIRECTIONS = {b"1": 1, b"-1": -1}
# Correlation ids end up in Redis keys, log lines and shell commands: visible ASCII only, no spaces.
_CORRELATION_ID = re.compile(rb"[\x21-\x7e]+")
_SYMBOL = re.compile(rb"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMBER_CHARACTERS = b"0123456789.eE+-"
_SHOWN_CHARS = 40
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def decode_event(fields: Mapping[bytes, bytes], *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> SynergyEvent:
    """Validate the fields of one stream entry and build the event, or raise `InvalidEvent`.

    Unknown extra fields are ignored. `str` keys and values (a client with `decode_responses`) are
    accepted for text fields; an f32le matrix needs bytes.
    """
    scalars, matrix = _checked_fields(fields, max_event_bytes)
    if isinstance(matrix, bytes):
        matrix = matrix_from_bytes(matrix)
    if not (np.abs(matrix) <= FEATURE_CLIP).all():  # NaN fails the comparison too
        raise _matrix_rejected(matrix)
    return SynergyEvent(*scalars, matrix)


def decode_events(
    entries: Sequence[Mapping[bytes, bytes]], *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> tuple[list[SynergyEvent | InvalidEvent], np.ndarray]:
    """`decode_event` for a batch: per entry, in order, the event it gives or the `InvalidEvent` it raises; and the
    events' matrices stacked, (events, 60, 7) float32, for the agents. Each event's `matrix` is a read-only view of
    its row; the stack itself is writable, so that torch wraps it without a copy (and without a warning).

    The matrices are read from their wire bytes in one copy and their values checked in one pass: per event, a view
    and a NaN scan of its own cost ~8 µs here, and the batch is stacked for the agents anyway."""
    decoded: list[SynergyEvent | InvalidEvent | None] = []
    checked: list[tuple[int, _Scalars]] = []  # (index in decoded, the event's fields but its matrix)
    matrices: list[bytes] = []
    for fields in entries:
        try:
            scalars, matrix = _checked_fields(fields, max_event_bytes)
        except InvalidEvent as exc:
            # A fresh copy, not the exception caught: its traceback leads back to this frame, and the cycle would keep
            # the whole batch alive until a full collection (rare, after gc.freeze()).
            decoded.append(InvalidEvent(exc.reason, exc.detail))
            continue
        checked.append((len(decoded), scalars))
        matrices.append(matrix if isinstance(matrix, bytes) else matrix.tobytes())
        decoded.append(None)
    batch = np.frombuffer(bytearray().join(matrices), dtype=MATRIX_DTYPE).reshape(-1, *MATRIX_SHAPE)
    # One flag per event (numpy types it bool | array): finite and within the clip (NaN fails the comparison too).
    usable = cast(np.ndarray, (np.abs(batch) <= FEATURE_CLIP).all(axis=(1, 2)))
    if not usable.all():
        for (index, _), matrix, ok in zip(checked, batch, usable, strict=True):
            if not ok:
                decoded[index] = _matrix_rejected(matrix)
        checked = [item for item, ok in zip(checked, usable, strict=True) if ok]
        batch = batch[usable]
    rows = batch.view()
    rows.flags.writeable = False
    for (index, scalars), matrix in zip(checked, rows, strict=True):
        decoded[index] = SynergyEvent(*scalars, matrix)
    return decoded, batch  # type: ignore[return-value]  # every None was replaced


# An event's fields in `SynergyEvent`'s order, but its matrix.
_Scalars = tuple[str, SynergyType, int, float, str, str, float, float]


def _checked_fields(fields: Mapping[bytes, bytes], max_event_bytes: int) -> tuple[_Scalars, bytes | np.ndarray]:
    """Every check of `decode_event` but the matrix's values: the event's fields in `SynergyEvent`'s order but its
    matrix, and the matrix as f32le bytes of the right size or a parsed JSON matrix."""
    wire = _wire_fields(fields, max_event_bytes)
    missing = [name for name, key in _REQUIRED_KEYS if key not in wire]
    if missing:
        raise InvalidEvent(InvalidReason.MISSING_FIELD, "missing " + ", ".join(missing))
    event_type = wire[b"event_type"]
    if event_type != _EVENT_TYPE:
        raise _rejected(InvalidReason.WRONG_EVENT_TYPE, "event_type", event_type, f"expected {EVENT_TYPE!r}")
    scalars: _Scalars = (
        _correlation_id(wire[b"correlation_id"]),
        _synergy_type(wire[b"synergy_type"]),
        _direction(wire[b"direction"]),
        _confidence(wire[b"confidence"]),
        _symbol(wire[b"symbol"]),
        _timestamp(wire[b"timestamp"]),
        _positive_number(wire[b"price"], "price", InvalidReason.BAD_PRICE),
        _positive_number(wire[b"atr"], "atr", InvalidReason.BAD_ATR),
    )
    return scalars, _unchecked_matrix(wire[b"matrix"], wire.get(b"matrix_encoding", b"f32le"))


def encode_event(event: SynergyEvent, *, matrix_encoding: str = DEFAULT_MATRIX_ENCODING) -> dict[str, bytes | str]:
    """The stream fields of an event, ready for XADD.

    Raises `InvalidEvent` for an event the worker would reject, so a producer cannot publish one.
    To build a deliberately bad entry, encode a valid event and change the returned fields.
    """
    fields = _unchecked_fields(event, matrix_encoding)
    decode_event(fields)  # type: ignore[arg-type]  # str fields are accepted, as from a decoding client
    return fields


def validate_event(event: SynergyEvent) -> None:
    """Raise `InvalidEvent` if the worker would dead-letter this event."""
    encode_event(event)


def matrix_from_bytes(raw: bytes) -> np.ndarray:
    """The (60, 7) float32 view of an f32le matrix: zero-copy, read-only. Checks the size, not the values."""
    _check_matrix_size(raw)
    matrix = np.frombuffer(raw, dtype=MATRIX_DTYPE).reshape(MATRIX_SHAPE)
    matrix.flags.writeable = False
    return matrix


def _check_matrix_size(raw: bytes) -> None:
    if len(raw) != MATRIX_BYTES:
        raise InvalidEvent(InvalidReason.MATRIX_SIZE, f"matrix is {len(raw)} bytes, expected {MATRIX_BYTES}")


def matrix_to_bytes(matrix: np.ndarray) -> bytes:
    """The f32le wire form of a (60, 7) matrix; other float dtypes are converted to float32."""
    array = np.asarray(matrix)
    if array.shape != MATRIX_SHAPE:
        raise InvalidEvent(InvalidReason.MATRIX_SHAPE, f"matrix has shape {array.shape}, expected {MATRIX_SHAPE}")
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(array, dtype=MATRIX_DTYPE).tobytes()


def new_correlation_id(*, now_ms: int | None = None) -> str:
    """A ULID: 26 characters, unique, and sorting by creation time (to the millisecond)."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


_NO_OFFSET = timedelta(0)  # built once: a timedelta(0) per event cost ~0.4 µs, a third of this check


def parse_timestamp(text: str) -> datetime:
    """The moment of an ISO-8601 UTC date and time (`Z`, `+00:00` or no offset) in `TIMESTAMP_YEARS`; ValueError
    otherwise."""
    if "T" not in text and "t" not in text and " " not in text:
        raise ValueError(f"{text!r} has no time of day")
    moment = datetime.fromisoformat(text)
    offset = moment.utcoffset()
    if offset is not None and offset != _NO_OFFSET:
        raise ValueError(f"{text!r} has offset {offset}, expected UTC (Z, +00:00 or none)")
    if moment.year not in TIMESTAMP_YEARS:
        raise ValueError(f"{text!r} is not between the years {TIMESTAMP_YEARS.start} and {TIMESTAMP_YEARS.stop - 1}")
    return moment


def _wire_fields(fields: object, max_event_bytes: int) -> dict[bytes, bytes]:
    if not isinstance(fields, Mapping):
        raise InvalidEvent(
            InvalidReason.BAD_FIELD_ENCODING,
            f"event is a {type(fields).__name__}, expected a mapping of field names to values",
        )
    wire: dict[bytes, bytes] = {}
    size = 0
    for key, value in fields.items():
        name = key if type(key) is bytes else _field_bytes(key, "a field name")
        wire[name] = value if type(value) is bytes else _field_bytes(value, f"field {_show(name)}")
        size += len(name) + len(wire[name])
    if size > max_event_bytes:
        raise InvalidEvent(
            InvalidReason.PAYLOAD_TOO_LARGE,
            f"event is {size:,} bytes (field names and values), limit {max_event_bytes:,} (max_event_bytes)",
        )
    return wire


def _field_bytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEvent(InvalidReason.BAD_FIELD_ENCODING, f"{what} is not valid Unicode") from None
    raise InvalidEvent(InvalidReason.BAD_FIELD_ENCODING, f"{what} is a {type(value).__name__}, expected bytes")


def wire_correlation_id(fields: Mapping[bytes, bytes]) -> str | None:
    """The correlation id of an entry's raw fields, if it has a valid one (an entry that is no event may not)."""
    raw = fields.get(b"correlation_id")
    try:
        return _correlation_id(raw) if isinstance(raw, bytes) else None
    except InvalidEvent:
        return None


def _correlation_id(raw: bytes) -> str:
    if len(raw) > MAX_CORRELATION_ID_LENGTH:
        raise InvalidEvent(
            InvalidReason.CORRELATION_ID_TOO_LONG,
            f"correlation_id is {len(raw)} bytes, at most {MAX_CORRELATION_ID_LENGTH}: {_show(raw)}",
        )
    if not _CORRELATION_ID.fullmatch(raw):
        raise _rejected(
            InvalidReason.BAD_CORRELATION_ID,
            "correlation_id",
            raw,
            f"expected 1-{MAX_CORRELATION_ID_LENGTH} visible ASCII characters, no spaces",
        )
    return raw.decode("ascii")


def _synergy_type(raw: bytes) -> SynergyType:
    synergy_type = _SYNERGY_TYPES.get(raw)
    if synergy_type is None:
        expected = ", ".join(member.value for member in SynergyType)
        raise _rejected(InvalidReason.UNKNOWN_SYNERGY_TYPE, "synergy_type", raw, f"expected one of {expected}")
    return synergy_type


def _direction(raw: bytes) -> int:
    direction = _DIRECTIONS.get(raw)
    if direction is None:
        raise _rejected(InvalidReason.BAD_DIRECTION, "direction", raw, "expected 1 (long) or -1 (short)")
    return direction


def _confidence(raw: bytes) -> float:
    value = _number(raw, "confidence", InvalidReason.BAD_CONFIDENCE)
    if not 0.0 <= value <= 1.0:
        raise _rejected(InvalidReason.BAD_CONFIDENCE, "confidence", raw, "expected a number in [0, 1]")
    return value


def _positive_number(raw: bytes, field: str, reason: InvalidReason) -> float:
    # ATR must be > 0 too: stops sit at price -/+ k*ATR, so a zero ATR puts the stop on the entry price.
    value = _number(raw, field, reason)
    if not 0.0 < value < float("inf"):
        raise _rejected(reason, field, raw, "expected a finite number > 0")
    return value


def _number(raw: bytes, field: str, reason: InvalidReason) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _rejected(reason, field, raw, "expected a number") from None
    # float() also takes "4_500", " 0.5 " and "nan": a producer's formatting bug, not a number on the wire
    # (`direction`, a number too, was already strict). One C pass: what is left once the characters of a number are
    # deleted (~0.1 µs a field).
    if raw.translate(None, _NUMBER_CHARACTERS):
        raise _rejected(reason, field, raw, "expected a number: digits, a point, an exponent, no space or underscore")
    return value


def _symbol(raw: bytes) -> str:
    if len(raw) > MAX_SYMBOL_LENGTH or not _SYMBOL.fullmatch(raw):
        raise _rejected(
            InvalidReason.BAD_SYMBOL,
            "symbol",
            raw,
            f"expected 1-{MAX_SYMBOL_LENGTH} printable ASCII characters, no leading or trailing space",
        )
    return raw.decode("ascii")


def _timestamp(raw: bytes) -> str:
    expected = "expected an ISO-8601 UTC date and time, e.g. 2024-05-01T14:35:00Z"
    if len(raw) > MAX_TIMESTAMP_LENGTH or not raw.isascii():
        raise _rejected(InvalidReason.BAD_TIMESTAMP, "timestamp", raw, expected)
    text = raw.decode("ascii")
    try:
        parse_timestamp(text)
    except ValueError as exc:
        raise InvalidEvent(InvalidReason.BAD_TIMESTAMP, f"{exc}; {expected}") from None
    return text


def _unchecked_matrix(raw: bytes, encoding: bytes) -> bytes | np.ndarray:
    """An f32le matrix's bytes, of the right size, or a JSON matrix parsed; its values not checked yet."""
    if encoding == b"f32le":
        _check_matrix_size(raw)
        return raw
    if encoding == b"json":
        return _matrix_from_json(raw)
    expected = " or ".join(repr(name) for name in MATRIX_ENCODINGS)
    raise _rejected(InvalidReason.MATRIX_ENCODING, "matrix_encoding", encoding, f"expected {expected}")


def _matrix_from_json(raw: bytes) -> np.ndarray:
    try:
        rows = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidEvent(
            InvalidReason.MATRIX_ENCODING, f"matrix_encoding is 'json' but matrix is not JSON: {_show(raw)}"
        ) from None
    expected = f"expected {MATRIX_ROWS} lists of {MATRIX_COLS} numbers"
    if not isinstance(rows, list) or len(rows) != MATRIX_ROWS:
        length = f"a list of {len(rows)}" if isinstance(rows, list) else f"a JSON {type(rows).__name__}"
        raise InvalidEvent(InvalidReason.MATRIX_SHAPE, f"matrix is {length}, {expected}")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != MATRIX_COLS:
            raise InvalidEvent(InvalidReason.MATRIX_SHAPE, f"matrix row {i} is {_show_json(row)}, {expected}")
        for j, value in enumerate(row):
            if type(value) is not float and type(value) is not int:
                raise InvalidEvent(InvalidReason.MATRIX_SHAPE, f"matrix[{i}][{j}] is {_show_json(value)}, {expected}")
    try:
        wide = np.array(rows, dtype=np.float64)
    except OverflowError:
        raise InvalidEvent(InvalidReason.MATRIX_NOT_FINITE, "matrix holds an integer too large for float32") from None
    too_large = np.abs(wide) > _FLOAT32_MAX
    if too_large.any():
        i, j = np.argwhere(too_large)[0]
        raise InvalidEvent(
            InvalidReason.MATRIX_NOT_FINITE, f"matrix[{i}][{j}] = {float(wide[i, j])} does not fit in float32"
        )
    matrix = wide.astype(MATRIX_DTYPE)
    matrix.flags.writeable = False
    return matrix


def _matrix_rejected(matrix: np.ndarray) -> InvalidEvent:
    """Why a matrix with a value that is not finite, or outside ±FEATURE_CLIP, is refused (non-finite first)."""
    bad = np.argwhere(~np.isfinite(matrix))
    if len(bad):
        i, j = bad[0]
        return InvalidEvent(InvalidReason.MATRIX_NOT_FINITE, f"matrix has {len(bad)} NaN/inf values, first "
                            f"matrix[{i}][{j}] = {float(matrix[i, j])} (bar {i}, {FEATURE_NAMES[j]})")
    bad = np.argwhere(np.abs(matrix) > FEATURE_CLIP)
    i, j = bad[0]
    return InvalidEvent(InvalidReason.MATRIX_OUT_OF_RANGE, f"matrix has {len(bad)} values outside ±{FEATURE_CLIP:g}, "
                        f"first matrix[{i}][{j}] = {float(matrix[i, j])} (bar {i}, {FEATURE_NAMES[j]}): features are "
                        f"clipped to ±{FEATURE_CLIP:g} upstream")


def _rejected(reason: InvalidReason, field: str, raw: bytes, expected: str) -> InvalidEvent:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidEvent(InvalidReason.BAD_FIELD_ENCODING, f"{field} is not UTF-8: {_show(raw)}")
    return InvalidEvent(reason, f"{field} is {_show(raw)}, {expected}")


def _show(raw: bytes) -> str:
    try:
        text: str | bytes = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw
    shown = repr(text)
    if len(shown) <= _SHOWN_CHARS:
        return shown
    return f"{shown[:_SHOWN_CHARS]}… ({len(raw)} bytes)"


def _show_json(value: object) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "a JSON object"
    shown = json.dumps(value)
    return shown if len(shown) <= _SHOWN_CHARS else shown[:_SHOWN_CHARS] + "…"


def _unchecked_fields(event: SynergyEvent, matrix_encoding: str) -> dict[str, bytes | str]:
    if matrix_encoding == "f32le":
        matrix: bytes | str = matrix_to_bytes(event.matrix)
    elif matrix_encoding == "json":
        matrix = _matrix_to_json(event.matrix)
    else:
        raise InvalidEvent(
            InvalidReason.MATRIX_ENCODING, f"matrix_encoding is {matrix_encoding!r}, expected one of {MATRIX_ENCODINGS}"
        )
    return {
        "event_type": EVENT_TYPE,
        "correlation_id": event.correlation_id,
        "synergy_type": str(event.synergy_type),
        "direction": str(event.direction),
        "confidence": _number_text(event.confidence),
        "symbol": event.symbol,
        "timestamp": event.timestamp,
        "price": _number_text(event.price),
        "atr": _number_text(event.atr),
        "matrix_encoding": matrix_encoding,
        "matrix": matrix,
    }


def _matrix_to_json(matrix: np.ndarray) -> str:
    array = np.asarray(matrix)
    if array.shape != MATRIX_SHAPE:
        raise InvalidEvent(InvalidReason.MATRIX_SHAPE, f"matrix has shape {array.shape}, expected {MATRIX_SHAPE}")
    with np.errstate(over="ignore", invalid="ignore"):
        # float32 -> float64 is exact and repr round-trips float64, so the JSON form is bit-exact too.
        return json.dumps(array.astype(MATRIX_DTYPE).tolist())


def _number_text(value: float) -> str:
    # repr is the shortest text that reads back as the same float.
    return repr(float(value))


__all__ = [
    "DEFAULT_MATRIX_ENCODING",
    "DEFAULT_MAX_EVENT_BYTES",
    "MATRIX_BYTES",
    "MATRIX_DTYPE",
    "MATRIX_ENCODINGS",
    "MAX_CORRELATION_ID_LENGTH",
    "MAX_SYMBOL_LENGTH",
    "OPTIONAL_FIELDS",
    "REQUIRED_FIELDS",
    "TIMESTAMP_YEARS",
    "InvalidEvent",
    "InvalidReason",
    "decode_event",
    "decode_events",
    "encode_event",
    "matrix_from_bytes",
    "matrix_to_bytes",
    "new_correlation_id",
    "parse_timestamp",
    "validate_event",
    "wire_correlation_id",
]
