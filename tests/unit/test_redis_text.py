"""Text from Redis: one decoding for every tool, never a traceback on bytes someone else wrote."""

from __future__ import annotations

from worker.redis_text import as_optional_text, as_text
from worker.stream_entries import entry_time_ms


def test_bytes_and_str_read_as_the_same_text() -> None:
    assert as_text(b"tactical_group") == as_text("tactical_group") == "tactical_group"


def test_bytes_that_are_not_utf8_are_shown_not_raised() -> None:
    assert as_text(b"ord\xff1") == "ord\ufffd1"


def test_absent_is_empty_text_or_stays_absent() -> None:
    assert as_text(None) == ""
    assert as_optional_text(None) is None
    assert as_optional_text(b"x") == "x"


def test_an_entry_ids_time_reads_from_bytes_or_str() -> None:
    assert entry_time_ms(b"1712345678901-3") == entry_time_ms("1712345678901-3") == 1712345678901
    assert entry_time_ms("1712345678901") == 1712345678901  # a bare millisecond id, as XRANGE accepts
