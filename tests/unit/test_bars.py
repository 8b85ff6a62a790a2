from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.bars import Bars, BarsFormatError, read_bars_csv, write_bars_csv
from models.simulator import SimulatorConfig, simulate_bars

HEADER = "timestamp,open,high,low,close,volume\n"


def write(tmp_path: Path, text: str, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_same_bars(left: Bars, right: Bars) -> None:
    assert left.symbol == right.symbol
    np.testing.assert_array_equal(left.timestamps, right.timestamps)
    for name in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(left, name), getattr(right, name), err_msg=name)


def test_csv_round_trip_is_exact(tmp_path: Path) -> None:
    bars = simulate_bars(SimulatorConfig(seed=3, n_bars=500, symbol="ES"))
    path = tmp_path / "es.csv"
    write_bars_csv(bars, path)
    assert_same_bars(read_bars_csv(path, symbol="ES"), bars)


def test_symbol_defaults_to_file_stem(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "2026-01-05T00:05:00Z,10,11,9,10.5,7\n", name="NQ.csv")
    assert read_bars_csv(path).symbol == "NQ"


def test_timestamps_with_offsets_and_unix_seconds_become_utc(tmp_path: Path) -> None:
    text = (
        "Volume,Close,Low,High,Open,TIMESTAMP\n"  # any column order, any case
        "5,10.5,9,11,10,2026-01-05T09:05:00+09:00\n"
        "6,10.75,10,11,10.5,2026-01-05T00:10:00Z\n"
        f"7,11,10.5,11.5,10.75,{int(np.datetime64('2026-01-05T00:15:00', 's').astype(np.int64))}\n"
    )
    bars = read_bars_csv(write(tmp_path, text))
    assert (
        bars.timestamps.tolist()
        == np.array(
            ["2026-01-05T00:05:00", "2026-01-05T00:10:00", "2026-01-05T00:15:00"], dtype="datetime64[s]"
        ).tolist()
    )
    np.testing.assert_array_equal(bars.open, [10, 10.5, 10.75])
    np.testing.assert_array_equal(bars.volume, [5, 6, 7])


@pytest.mark.parametrize(
    ("rows", "line", "column", "fragment"),
    [
        (["2026-01-05T00:05:00Z,10,11,9,abc,7"], 2, "close", "'abc' is not a number"),
        (["2026-01-05T00:05:00Z,10,11,9,10,7", "2026-01-05T00:10:00Z,10,10.5,9,11,7"], 3, "high", "below"),
        (["2026-01-05T00:05:00Z,10,11,10.5,10,7"], 2, "low", "above"),
        (["2026-01-05T00:05:00Z,10,11,9,10,-1"], 2, "volume", ">= 0"),
        (["2026-01-05T00:05:00Z,10,11,9,10,nan"], 2, "volume", "not finite"),
        (["2026-01-05T00:05:00Z,0,11,0,10,1"], 2, "open", "> 0"),
        (["2026-01-05T00:10:00Z,10,11,9,10,1", "2026-01-05T00:05:00Z,10,11,9,10,1"], 3, "timestamp", "increasing"),
        (["2026-01-05T00:05:00Z,10,11,9,10,1", "2026-01-05T00:05:00Z,10,11,9,10,1"], 3, "timestamp", "increasing"),
        (["2026-01-05 00:05:00,10,11,9,10,1"], 2, "timestamp", "no time zone"),
        (["yesterday,10,11,9,10,1"], 2, "timestamp", "neither ISO-8601"),
        (["2026-01-05T00:05:00Z,10,11,9,10"], 2, "volume", "missing"),
        # A blank line still counts: the reported line is the line an editor shows.
        (["2026-01-05T00:05:00Z,10,11,9,10,1", "", "2026-01-05T00:15:00Z,10,11,9,10,x"], 4, "volume", "not a number"),
    ],
)
def test_bad_rows_are_rejected_with_file_line_and_column(
    tmp_path: Path, rows: list[str], line: int, column: str, fragment: str
) -> None:
    path = write(tmp_path, HEADER + "\n".join(rows) + "\n")
    with pytest.raises(BarsFormatError) as caught:
        read_bars_csv(path)
    error = caught.value
    assert (error.line, error.column) == (line, column)
    assert fragment in str(error)
    assert str(error).startswith(f"{path}:{line}, column '{column}': ")


def test_header_without_a_required_column_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "timestamp,open,high,low,close\n2026-01-05T00:05:00Z,10,11,9,10\n")
    with pytest.raises(BarsFormatError, match=r":1, column 'volume': header lacks column 'volume'"):
        read_bars_csv(path)


@pytest.mark.parametrize("text", ["", HEADER])
def test_files_without_bars_are_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(BarsFormatError):
        read_bars_csv(write(tmp_path, text))


def test_slice_returns_the_requested_bars() -> None:
    bars = simulate_bars(SimulatorConfig(seed=1, n_bars=100, symbol="X"))
    part = bars.slice(10, 20)
    assert len(part) == 10
    assert part.symbol == "X"
    np.testing.assert_array_equal(part.close, bars.close[10:20])
    np.testing.assert_array_equal(part.timestamps, bars.timestamps[10:20])


def test_bars_are_immutable_and_independent_of_the_callers_arrays() -> None:
    close = np.array([10.0, 11.0])
    bars = Bars(
        timestamps=np.array(["2026-01-05T00:05", "2026-01-05T00:10"], dtype="datetime64[s]"),
        open=close.copy(),
        high=close + 1,
        low=close - 1,
        close=close,
        volume=np.array([1.0, 2.0]),
    )
    close[0] = 99.0
    assert bars.close[0] == 10.0
    with pytest.raises(ValueError):
        bars.close[0] = 5.0


def test_bars_with_arrays_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="equal length"):
        Bars(
            timestamps=np.array(["2026-01-05T00:05"], dtype="datetime64[s]"),
            open=np.ones(2),
            high=np.ones(2),
            low=np.ones(2),
            close=np.ones(2),
            volume=np.ones(2),
        )


def test_a_spreadsheets_utf8_csv_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + "2026-01-05T00:05:00Z,10,11,9,10.5,7\n").encode())
    assert len(read_bars_csv(path).close) == 1


def test_a_file_that_is_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "utf16.csv"
    path.write_text(HEADER + "2026-01-05T00:05:00Z,10,11,9,10.5,7\n", encoding="utf-16")
    with pytest.raises(BarsFormatError, match="not UTF-8 text"):
        read_bars_csv(path)


@pytest.mark.parametrize("stamp", ["1e30", "-300", "253402300800"])
def test_a_unix_time_out_of_range_is_a_format_error_with_its_line(tmp_path: Path, stamp: str) -> None:
    csv = tmp_path / "bars.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n1714574100,1,2,0.5,1.5,10\n"
                   f"{stamp},1,2,0.5,1.5,10\n")
    with pytest.raises(BarsFormatError, match=r"bars.csv:3, column .timestamp.: unix time .* is outside 1970-01-01"):
        read_bars_csv(csv)
