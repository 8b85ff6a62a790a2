"""Shared fixtures: one real Redis server for the session, a clean database 2 for each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from worker.embedded_redis import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(appendonly=False) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    url = redis_server.url()
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def private_redis(tmp_path) -> Iterator[EmbeddedRedis]:
    """A server of the test's own, with AOF on, for tests that stop or restart Redis."""
    with EmbeddedRedis(data_dir=tmp_path / "redis", appendonly=True) as server:
        yield server
