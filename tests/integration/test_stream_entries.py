"""The tools' stream reads (`worker.stream_entries`): every entry once, in order, across page boundaries."""

from __future__ import annotations

from typing import cast

import pytest
import redis

from worker.stream_entries import entries, newest_id, paged, read_after

STREAM = "test:entries"


@pytest.fixture
def ids(redis_client: redis.Redis) -> list[bytes]:
    return [cast(bytes, redis_client.xadd(STREAM, {"n": str(i)})) for i in range(7)]  # a bytes client


@pytest.mark.parametrize("page", [1, 3, 7, 100])
def test_paging_yields_every_entry_once_in_either_order(redis_client: redis.Redis, ids: list[bytes],
                                                        page: int) -> None:
    assert [entry_id for entry_id, _ in paged(redis_client, STREAM, page=page)] == ids
    assert [entry_id for entry_id, _ in paged(redis_client, STREAM, page=page, newest_first=True)] == ids[::-1]
    assert [fields for _, fields in paged(redis_client, STREAM, page=page)] == [{b"n": str(i).encode()}
                                                                                for i in range(7)]


def test_paging_stops_at_the_limit_and_within_the_bounds(redis_client: redis.Redis, ids: list[bytes]) -> None:
    newest_four = paged(redis_client, STREAM, page=3, newest_first=True, limit=4)
    assert [entry_id for entry_id, _ in newest_four] == ids[:-5:-1]
    between = paged(redis_client, STREAM, page=2, lower=ids[2], upper=ids[5])
    assert [entry_id for entry_id, _ in between] == ids[2:6]
    assert list(paged(redis_client, STREAM, page=2, limit=0)) == []
    assert list(paged(redis_client, "test:missing", page=2)) == []


def test_single_reads(redis_client: redis.Redis, ids: list[bytes]) -> None:
    assert newest_id(redis_client, STREAM) == ids[-1]
    assert newest_id(redis_client, "test:missing") is None
    assert entries(redis_client, STREAM, lower=b"(" + ids[0], count=2) == [(ids[1], {b"n": b"1"}),
                                                                          (ids[2], {b"n": b"2"})]
    assert [entry_id for entry_id, _ in read_after(redis_client, STREAM, ids[4], count=10)] == ids[5:]
    assert read_after(redis_client, STREAM, ids[-1], count=10) == []
    assert read_after(redis_client, STREAM, ids[-1], count=10, block_ms=20) == []  # waited, nothing came
