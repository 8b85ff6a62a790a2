"""Connecting to Redis from a URL (redis://, rediss://, unix://, with AUTH/ACL user), and backing off on outages."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import redis


def connect(
    url: str,
    *,
    client_name: str | None = None,
    read_timeout_s: float = 0.0,
    connect_timeout_s: float = 2.0,
) -> redis.Redis:
    """A bytes-in, bytes-out client. The socket timeout leaves room for blocking reads of `read_timeout_s`."""
    return redis.Redis.from_url(
        url,
        client_name=client_name,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=read_timeout_s + 5.0,
        socket_keepalive=True,
        health_check_interval=30,
        decode_responses=False,
    )


@dataclass
class Backoff:
    """Exponential backoff with a cap and a little jitter, so several workers don't reconnect in lockstep."""

    initial_s: float = 0.05
    cap_s: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.1
    _next: float = field(default=0.0, init=False)

    def next_delay(self) -> float:
        self._next = self.initial_s if self._next == 0.0 else min(self.cap_s, self._next * self.multiplier)
        return self._next * (1.0 + random.uniform(-self.jitter, self.jitter))

    def reset(self) -> None:
        self._next = 0.0
