"""Shared fixtures: one real Redis server for the session, a clean database 2 for each test, and the shipped
agents loaded once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import redis

from worker.embedded_redis import EmbeddedRedis

if TYPE_CHECKING:
    from worker.inference import AgentEnsemble


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


@pytest.fixture(scope="session")
def ensemble() -> AgentEnsemble:
    """The shipped bundle, verified and warmed up, on one torch thread (as the worker runs it): loaded once for every
    test that decides events in process. Imported here, not at the top: most tests never load torch."""
    from models.bundle import current_bundle_dir
    from worker.inference import AgentEnsemble
    from worker.settings import default_models_dir

    return AgentEnsemble.load(current_bundle_dir(default_models_dir()), threads=1)
