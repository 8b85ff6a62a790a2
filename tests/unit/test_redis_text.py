"""Text from Redis: one decoding for every tool, never a traceback on bytes someone else wrote."""

from __future__ import annotations

from worker.redis_text import as_optional_text, as_text, server_label
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


def test_the_server_is_named_by_its_own_version_valkey_before_its_redis_compatible_one() -> None:
    # What INFO server says on each (redis-py parses the numbers it can; a version stays text).
    assert server_label({"redis_version": "7.0.15", "redis_mode": "standalone"}) == "Redis 7.0.15"
    valkey = {"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "8.1.8"}
    assert server_label(valkey) == "Valkey 8.1.8"
    assert server_label({"redis_version": b"7.0.15"}) == "Redis 7.0.15"
    assert server_label({}) == "Redis of unknown version"
