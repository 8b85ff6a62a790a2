"""OHLCV bars: the market data every feature, synergy and training label is computed from.

A `Bars` holds 5-minute bars oldest first, as parallel read-only arrays. Timestamps are bar *close*
times in UTC. CSV is the exchange format (`timestamp,open,high,low,close,volume`); the reader checks
every row and names the file, line and column of the first bad value, so an operator can fix it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

CSV_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
_PRICE_COLUMNS = ("open", "high", "low", "close")
_ARRAY_FIELDS = ("timestamps", *_PRICE_COLUMNS, "volume")


@dataclass(frozen=True, eq=False)
class Bars:
    """5-minute OHLCV bars, oldest first; all arrays have the same length and are read-only."""

    timestamps: np.ndarray  # datetime64[s], bar close times, UTC
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    symbol: str = "SIM"

    def __post_init__(self) -> None:
        timestamps = np.asarray(self.timestamps, dtype="datetime64[s]")
        object.__setattr__(self, "timestamps", _read_only(timestamps))
        for name in (*_PRICE_COLUMNS, "volume"):
            column = np.asarray(getattr(self, name), dtype=np.float64)
            object.__setattr__(self, name, _read_only(column))
        lengths = {name: getattr(self, name).shape for name in _ARRAY_FIELDS}
        if len(set(lengths.values())) != 1 or timestamps.ndim != 1:
            raise ValueError(f"Bars arrays must be 1-D and of equal length, got shapes {lengths}")

    def __len__(self) -> int:
        return int(self.close.shape[0])

    def slice(self, start: int, stop: int) -> Bars:
        """Bars start..stop-1 (Python slice semantics), sharing memory with this object."""
        window = slice(start, stop)
        return Bars(
            timestamps=self.timestamps[window],
            open=self.open[window],
            high=self.high[window],
            low=self.low[window],
            close=self.close[window],
            volume=self.volume[window],
            symbol=self.symbol,
        )


class BarsFormatError(ValueError):
    """A bars CSV that cannot be used; the message names the file, line and column."""

    def __init__(self, path: Path, line: int, column: str | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.problem = problem
        where = f"{path}:{line}" + (f", column {column!r}" if column else "")
        super().__init__(f"{where}: {problem}")


def _read_only(array: np.ndarray) -> np.ndarray:
    # Copy writable input so a caller mutating its own array cannot change these bars behind our back.
    if array.flags.writeable:
        array = array.copy()
        array.flags.writeable = False
    return array


_YEAR_10000_S = 253_402_300_800  # unix seconds at 10000-01-01T00:00:00Z


def parse_timestamp(text: str) -> np.datetime64:
    """ISO-8601 with `Z` or an offset (converted to UTC), or unix seconds. Naive times are refused."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"unix time {text!r} is not finite")
        if not 0 <= seconds < _YEAR_10000_S:
            raise ValueError(f"unix time {text!r} is outside 1970-01-01 … 9999-12-31")
        return np.datetime64(round(seconds), "s")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"timestamp {text!r} is neither ISO-8601 (e.g. 2026-01-05T14:35:00Z) nor unix seconds"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone: add 'Z' or an offset such as +00:00")
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(utc, "s")


def format_timestamp(moment: np.datetime64) -> str:
    """ISO-8601 UTC with a `Z`, seconds precision: 2026-01-05T14:35:00Z."""
    return f"{np.datetime_as_string(moment.astype('datetime64[s]'), unit='s')}Z"


def read_bars_csv(path: Path, *, symbol: str | None = None) -> Bars:
    """Read and check a bars CSV; `symbol` defaults to the file's stem."""
    path = Path(path)
    try:
        return _read_bars_csv(path, symbol)
    except UnicodeDecodeError as exc:
        raise BarsFormatError(path, 1, None, f"not UTF-8 text (byte {exc.start}: {exc.reason}); save the file as "
                                             "UTF-8 CSV") from None


def _read_bars_csv(path: Path, symbol: str | None) -> Bars:
    # utf-8-sig: a spreadsheet's "UTF-8 CSV" starts with a byte-order mark, which is not part of the first column.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise BarsFormatError(path, 1, None, f"file is empty; expected a header {','.join(CSV_COLUMNS)}")
        positions = _column_positions(path, header)
        rows: list[tuple[np.datetime64, float, float, float, float, float]] = []
        previous_time: np.datetime64 | None = None
        for record in reader:
            line = reader.line_num
            if not record or all(not cell.strip() for cell in record):
                continue
            row = _parse_row(path, line, record, positions)
            if previous_time is not None and row[0] <= previous_time:
                raise BarsFormatError(
                    path,
                    line,
                    "timestamp",
                    f"{format_timestamp(row[0])} is not after the previous bar's "
                    f"{format_timestamp(previous_time)}; rows must be in increasing time order",
                )
            previous_time = row[0]
            rows.append(row)
    if not rows:
        raise BarsFormatError(path, 2, None, "no bars after the header")
    columns = list(zip(*rows, strict=True))
    return Bars(
        timestamps=np.array(columns[0], dtype="datetime64[s]"),
        open=np.array(columns[1]),
        high=np.array(columns[2]),
        low=np.array(columns[3]),
        close=np.array(columns[4]),
        volume=np.array(columns[5]),
        symbol=symbol if symbol is not None else path.stem,
    )


def _column_positions(path: Path, header: list[str]) -> dict[str, int]:
    names = [cell.strip().lower() for cell in header]
    positions: dict[str, int] = {}
    for name in CSV_COLUMNS:
        if name not in names:
            raise BarsFormatError(path, 1, name, f"header lacks column {name!r}; expected {','.join(CSV_COLUMNS)}")
        positions[name] = names.index(name)
    return positions


def _parse_row(
    path: Path, line: int, record: list[str], positions: dict[str, int]
) -> tuple[np.datetime64, float, float, float, float, float]:
    def cell(name: str) -> str:
        index = positions[name]
        if index >= len(record) or not record[index].strip():
            raise BarsFormatError(path, line, name, "value is missing")
        return record[index]

    timestamp_text = cell("timestamp")
    try:
        timestamp = parse_timestamp(timestamp_text)
    except ValueError as error:
        raise BarsFormatError(path, line, "timestamp", str(error)) from None

    values: dict[str, float] = {}
    for name in (*_PRICE_COLUMNS, "volume"):
        text = cell(name)
        try:
            value = float(text)
        except ValueError:
            raise BarsFormatError(path, line, name, f"{text.strip()!r} is not a number") from None
        if not math.isfinite(value):
            raise BarsFormatError(path, line, name, f"{text.strip()!r} is not finite")
        values[name] = value

    o, h, lo, c, v = (values[name] for name in (*_PRICE_COLUMNS, "volume"))
    for name in _PRICE_COLUMNS:
        if values[name] <= 0:
            raise BarsFormatError(path, line, name, f"price {values[name]!r} must be > 0")
    if h < max(o, c):
        raise BarsFormatError(path, line, "high", f"high {h!r} is below max(open, close) = {max(o, c)!r}")
    if lo > min(o, c):
        raise BarsFormatError(path, line, "low", f"low {lo!r} is above min(open, close) = {min(o, c)!r}")
    if v < 0:
        raise BarsFormatError(path, line, "volume", f"volume {v!r} must be >= 0")
    return timestamp, o, h, lo, c, v


def write_bars_csv(bars: Bars, path: Path) -> None:
    """Write bars so that `read_bars_csv` reads back exactly the same values."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for index in range(len(bars)):
            writer.writerow(
                (
                    format_timestamp(bars.timestamps[index]),
                    *(repr(float(getattr(bars, name)[index])) for name in (*_PRICE_COLUMNS, "volume")),
                )
            )
