"""What a checklist or a triage reads — Redis, the worker's three endpoints, the model bundles — each fetched once.

A checklist has eight rows that read the same `/health/state`; asking the worker eight times would cost eight
timeouts when it is down. `Sources` fetches each thing on first use and remembers the answer *or the failure*, so
every row sees the same picture and an unreachable service costs one timeout per command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from prometheus_client.samples import Sample
from redis import Redis

from worker.connection import REDIS_UNREACHABLE, connect
from worker.ops.breaker_status import BreakerOverview, read_breaker_overview
from worker.ops.worker_client import WorkerClient, WorkerUnreachable
from worker.security import RedisSecurityError
from worker.settings import redact_url


class RedisUnavailable(RuntimeError):
    """Redis did not answer; the message names the (redacted) URL and the cause."""


@dataclass
class Sources:
    redis_url: str
    worker_url: str
    models_dir: Path
    http_timeout_s: float = 2.0
    clock: Callable[[], float] = time.time
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)
    _client: redis.Redis | None = field(default=None, repr=False)

    def _once(self, name: str, fetch: Callable[[], Any]) -> Any:
        if name not in self._cache:
            try:
                self._cache[name] = fetch()
            except (RedisUnavailable, WorkerUnreachable) as exc:
                self._cache[name] = exc
        value = self._cache[name]
        if isinstance(value, Exception):
            raise value
        return value

    def redis(self) -> redis.Redis:
        """A client that answered PING, or RedisUnavailable."""
        return self._once("redis", self._connect)

    def _connect(self) -> Redis:  # not `redis.Redis`: in this class, `redis` is the method above
        try:
            client = connect(self.redis_url, client_name="tacticalctl-ops", connect_timeout_s=2.0)
        except RedisSecurityError as exc:  # TLS files or password file unusable: say which, no traceback
            raise RedisUnavailable(f"Redis client configuration for {redact_url(self.redis_url)}: {exc}") from None
        try:
            client.ping()
        except REDIS_UNREACHABLE as exc:
            client.close()
            raise RedisUnavailable(f"Redis unreachable at {redact_url(self.redis_url)}: {exc}") from None
        self._client = client
        return client

    @property
    def worker(self) -> WorkerClient:
        return WorkerClient(self.worker_url, timeout_s=self.http_timeout_s)

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of GET /health, or WorkerUnreachable."""
        return self._once("health", self.worker.health)

    def state(self) -> dict[str, Any]:
        """GET /health/state, or WorkerUnreachable."""
        return self._once("state", self.worker.state)

    def metrics(self) -> dict[str, list[Sample]]:
        """GET /metrics parsed by family, or WorkerUnreachable."""
        return self._once("metrics", self.worker.metrics)

    def breaker_overview(self) -> BreakerOverview:
        """The breaker of every worker with a live heartbeat, as published in Redis, with the worker's HTTP view
        when it answers."""

        def read() -> BreakerOverview:
            try:
                http, http_error = self.state().get("circuit_breaker"), None
            except WorkerUnreachable as exc:
                http, http_error = None, str(exc)
            return read_breaker_overview(self.redis(), http=http, http_error=http_error, now=self.now())

        return self._once("breaker_overview", read)

    def now(self) -> float:
        return self.clock()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._cache.clear()

    def __enter__(self) -> Sources:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["REDIS_UNREACHABLE", "RedisUnavailable", "Sources"]
