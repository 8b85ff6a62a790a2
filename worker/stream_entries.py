"""Stream entries as this project's tools read them: (entry id, fields), bytes throughout.

redis-py types each stream reply as the union of everything any command may return. The clients this project makes
read bytes (`worker.connection.connect`: no `decode_responses`), so the entries are given that one type, here; a
caller that accepts a decoding client (the alert readers) takes str as well. The tools that page through a stream
(dead letters, duplicates, the chaos soak) share one loop instead of each writing its own, and every tool reads
an entry id with one parser.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import redis

from worker.redis_text import as_text

Entry = tuple[bytes, dict[bytes, bytes]]


def parse_stream_id(entry_id: bytes | str) -> tuple[int, int]:
    """`"1712345678901-3"` → (1712345678901, 3): milliseconds and sequence, ordered as Redis orders ids."""
    text = as_text(entry_id)
    ms, _, seq = text.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        raise ValueError(f"{text!r} is not a stream entry id (expected <milliseconds>-<sequence>)") from None


class Removal(StrEnum):
    """How entries left a stream, as far as Redis tells."""

    TRIMMED = "trimmed"  # from its head (`stream trim`, a producer's MAXLEN): its first entry is where it is whole
    DELETED = "deleted"  # XDEL past its first entry: Redis 7's max-deleted-entry-id
    UNKNOWN = "unknown"  # the server does not say (XINFO STREAM before Redis 7.0)


@dataclass(frozen=True, slots=True)
class StreamRemovals:
    """What XINFO STREAM (or the lag script, from it) tells of the entries removed from a stream since it began."""

    removed: int | None  # entries-added less the length (None: not known, before Redis 7)
    first_entry_id: tuple[int, int] | None  # None: empty
    last_generated_id: tuple[int, int]
    max_deleted_id: tuple[int, int] | None  # the greatest id XDEL removed, (0, 0) for none (None: not known)

    def whole_from(self) -> tuple[tuple[int, int], Removal | None]:
        """The id from which the stream still holds every entry added, and what removed those before it.

        (0, 0) when none was ever removed. Else the later of its first entry's id (just past its last id when it has
        been emptied) and the id just past the greatest one deleted (a deletion from the middle leaves the first
        entry where it was; Redis 7.0 records no trim in the greatest deleted id). Where the server does not tell,
        just past its last id: nothing is known to be whole."""
        past_last = _next_id(self.last_generated_id)
        if self.removed == 0:
            return (0, 0), None
        if self.removed is None or self.max_deleted_id is None:
            return past_last, Removal.UNKNOWN
        trimmed_to = self.first_entry_id if self.first_entry_id is not None else past_last
        after_deleted = _next_id(self.max_deleted_id)
        if self.max_deleted_id != (0, 0) and after_deleted >= trimmed_to:
            return after_deleted, Removal.DELETED
        return trimmed_to, Removal.TRIMMED

    def removed_after(self, position: tuple[int, int]) -> bool:
        """An entry past `position` was (or, where only the stream's head says so, may have been) removed. False
        where the server does not tell."""
        whole_from, removal = self.whole_from()
        return removal not in (None, Removal.UNKNOWN) and whole_from > _next_id(position)


def _next_id(entry_id: tuple[int, int]) -> tuple[int, int]:
    """The least id after `entry_id`."""
    return entry_id[0], entry_id[1] + 1


def entry_time_ms(entry_id: bytes | str) -> int:
    """The millisecond part of a stream id: when Redis accepted the entry."""
    return parse_stream_id(entry_id)[0]


_FULL_STREAM_ID = re.compile(r"\d+-\d+")


def stream_id_ms(value: bytes | str | None) -> int | None:
    """The millisecond part of a full `<ms>-<seq>` stream id; None for anything else (absent, a bare "1", a word):
    for values that only may be an id, such as a completed key's or an entry's `event_id` someone else wrote."""
    text = as_text(value)
    return entry_time_ms(text) if _FULL_STREAM_ID.fullmatch(text) else None


def time_reply_us(reply: Any) -> int:
    """A TIME reply (seconds, microseconds) in microseconds."""
    seconds, micros = reply
    return int(seconds) * 1_000_000 + int(micros)


def time_reply_ms(reply: Any) -> int:
    """A TIME reply in milliseconds: the clock Redis stamps stream ids with."""
    return time_reply_us(reply) // 1000


def server_now_ms(client: redis.Redis) -> int:
    """Redis's clock now, in milliseconds, to compare with stream ids (this host's clock may differ)."""
    return time_reply_ms(client.time())


def entries(client: redis.Redis, stream: str, *, lower: str | bytes = "-", upper: str | bytes = "+",
            count: int | None = None, newest_first: bool = False) -> list[Entry]:
    """XRANGE (or XREVRANGE, newest first) of `stream` between `lower` and `upper` (`(` before an id excludes it)."""
    if newest_first:
        return cast(list[Entry], client.xrevrange(stream, max=upper, min=lower, count=count))
    return cast(list[Entry], client.xrange(stream, min=lower, max=upper, count=count))


def paged(client: redis.Redis, stream: str, *, page: int, lower: str | bytes = "-", upper: str | bytes = "+",
          newest_first: bool = False, limit: int | None = None) -> Iterator[Entry]:
    """Every entry between `lower` and `upper` (at most `limit`), `page` per round trip: a stream of any length
    without holding it all, nor Redis for long."""
    remaining = limit
    while remaining is None or remaining > 0:
        wanted = page if remaining is None else min(page, remaining)
        found = entries(client, stream, lower=lower, upper=upper, count=wanted, newest_first=newest_first)
        yield from found
        if remaining is not None:
            remaining -= len(found)
        if len(found) < wanted:
            return
        after = b"(" + found[-1][0]
        if newest_first:
            upper = after
        else:
            lower = after


def newest_id(client: redis.Redis, stream: str) -> bytes | None:
    """The id of the stream's last entry; None when it is empty or missing."""
    found = entries(client, stream, count=1, newest_first=True)
    return found[0][0] if found else None


def read_after(client: redis.Redis, stream: str, last_id: str | bytes, *, count: int,
               block_ms: int | None = None) -> list[Entry]:
    """XREAD of one stream: up to `count` entries after `last_id`, waiting up to `block_ms` for the first."""
    reply = cast(list[tuple[bytes, list[Entry]]], client.xread({stream: last_id}, count=count, block=block_ms))
    return reply[0][1] if reply else []  # RESP2 (every client here): [[stream, entries]]
