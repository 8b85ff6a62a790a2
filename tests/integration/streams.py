"""Reading what the worker wrote, for assertions."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import cast

import redis

from worker.names import COMMANDS_STREAM, CONSUMER_GROUP, DEAD_LETTER_STREAM, DECISIONS_STREAM, INPUT_STREAM
from worker.stream_entries import Entry, entries


def read_group(client: redis.Redis, consumer: str, count: int | None = None, *, group: str = CONSUMER_GROUP,
               stream: str = INPUT_STREAM) -> list[Entry]:
    """XREADGROUP of new entries of one stream as `consumer`. redis-py types the reply as any reply; these clients'
    is RESP2's list of [stream, entries], in bytes (an IndexError when nothing was new)."""
    reply = client.xreadgroup(group, consumer, {stream: ">"}, count=count)
    return cast(list[tuple[bytes, list[Entry]]], reply)[0][1]


def stream_field(client: redis.Redis, stream: str, name: bytes = b"correlation_id") -> list[bytes]:
    return [fields[name] for _, fields in entries(client, stream)]


def decided_ids(client: redis.Redis) -> Counter[bytes]:
    return Counter(stream_field(client, DECISIONS_STREAM))


def command_ids(client: redis.Redis) -> Counter[bytes]:
    return Counter(stream_field(client, COMMANDS_STREAM))


def pending_count(client: redis.Redis) -> int:
    return int(client.xpending(INPUT_STREAM, CONSUMER_GROUP)["pending"])


def wait_for(predicate: Callable[[], object], *, timeout_s: float = 60.0, interval_s: float = 0.05,
             what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def wait_decided(client: redis.Redis, count: int, *, timeout_s: float = 90.0) -> None:
    wait_for(lambda: client.xlen(DECISIONS_STREAM) >= count, timeout_s=timeout_s, what=f"{count} decisions")


def wait_settled(client: redis.Redis, decisions: int, dead: int = 0, *, timeout_s: float = 90.0) -> None:
    """All `decisions` decided, `dead` dead-lettered and nothing pending."""
    wait_for(
        lambda: client.xlen(DECISIONS_STREAM) >= decisions
        and client.xlen(DEAD_LETTER_STREAM) >= dead
        and pending_count(client) == 0,
        timeout_s=timeout_s,
        what=f"{decisions} decisions, {dead} dead letters, nothing pending",
    )


def executed_decisions(client: redis.Redis) -> Counter[bytes]:
    decisions = entries(client, DECISIONS_STREAM)
    return Counter(fields[b"correlation_id"] for _, fields in decisions if fields[b"execute"] == b"1")
