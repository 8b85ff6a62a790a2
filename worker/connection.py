"""Connecting to Redis from a URL (redis://, rediss://, unix://, with AUTH/ACL user), and backing off on outages."""

from __future__ import annotations

import random
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection, Connection
from redis.retry import Retry

from worker.security import PASSWORD_FILE_ENV, RedisSecurity
from worker.settings import redact_url

# Redis did not answer (or not yet: loading, refused credentials): what the worker backs off from and the tools report
# as an outage. BusyLoadingError and AuthenticationError are ConnectionErrors, so this one pair catches them too.
REDIS_UNREACHABLE: tuple[type[redis.RedisError], ...] = (redis.ConnectionError, redis.TimeoutError)
# Redis answers but takes no writes for now: a failover in progress (this address is a replica), memory full. Waited
# out like an outage, never a reason to exit.
REDIS_REFUSING_WRITES: tuple[type[redis.ResponseError], ...] = (
    redis.ReadOnlyError, redis.OutOfMemoryError, redis.exceptions.MasterDownError,
)
# Of those, the ones that say this address is (for now) a replica: connecting again may reach the new primary.
REDIS_FAILOVER: tuple[type[redis.ResponseError], ...] = (redis.ReadOnlyError, redis.exceptions.MasterDownError)
# Unreachable, or answering with an error (refusing writes, not permitted, a key of another type): what ends one
# try of an operation that is tried again later, never the process.
REDIS_FAILED: tuple[type[redis.RedisError], ...] = (*REDIS_UNREACHABLE, redis.ResponseError)


# How Redis words an ACL refusal: the NOPERM code (redis-py's NoPermissionError when it leads the reply; inside a
# pipeline's error it follows a prefix), its "no permissions" text, and Redis 7.0's wording for a command a script
# may not run, which has no code of its own.
_PERMISSION_REFUSALS = ("NOPERM", "no permissions", "can't run this command")


def is_permission_refusal(reply: object) -> bool:
    """Whether an error (raised, or a pipeline's reply) is Redis refusing for want of an ACL permission."""
    if isinstance(reply, redis.exceptions.NoPermissionError):
        return True
    return isinstance(reply, redis.ResponseError) and any(text in str(reply) for text in _PERMISSION_REFUSALS)


def refusal_advice(exc: redis.ResponseError) -> str | None:
    """What an operator does about Redis refusing a command, by why it refused; None for an error that is no
    refusal of the operator's setup (an unknown command, a script's own error). A pipeline's error carries the
    refusal after its own prefix ("Command # 1 (…) of pipeline caused error: WRONGTYPE …")."""
    text = str(exc)
    if is_permission_refusal(exc):
        return ("the Redis user lacks a command or key the tools need: give it the ACL in runbook/acl "
                "(README there), or use the operators' user")
    if "DB index is out of range" in text:
        return "the URL's database does not exist on this server: --redis-url / TACTICAL_REDIS_URL (database 2)"
    if "WRONGTYPE" in text:
        return ("a key has another type than the worker writes (something else wrote it, or the wrong database): "
                "`tacticalctl stream info` names the stream that holds one, then move the key aside (RENAME)")
    if isinstance(exc, REDIS_FAILOVER):
        return ("Redis takes no writes now: this address is a replica (a failover in progress, or the URL names the "
                "replica). A command that writes — the workers, backup (its snapshot copies, its audit entry), "
                "restore, resets, trims — needs the primary: run it against the primary; "
                "`tacticalctl triage worker-down` if the workers see this too")
    if isinstance(exc, REDIS_REFUSING_WRITES):
        return ("Redis takes no writes now (out of memory: maxmemory reached): free memory — `tacticalctl stream trim "
                "--older-than 24h` — or raise maxmemory; `tacticalctl triage breaker-open` (the workers stop taking "
                "events)")
    return None


def refused_as_wrong_type(reply: object) -> bool:
    """For one reply of a pipeline run with `raise_on_error=False`: True when Redis refused it for a key of another
    type (WRONGTYPE: something else wrote that key), False for a normal reply. Any other refusal (NOPERM, OOM) is
    raised: it is not to be taken for a key that is not there."""
    if not isinstance(reply, redis.ResponseError):
        return False
    if str(reply).startswith("WRONGTYPE"):
        return True
    raise reply


def selected_db(client: redis.Redis) -> int:
    """The database a client's URL selected (0 when it names none)."""
    return int(client.connection_pool.connection_kwargs.get("db", 0) or 0)


class RedisAuthError(redis.AuthenticationError):
    """Redis refused our credentials. Not transient: retrying with the same secret cannot succeed, so the worker
    exits (code 2) instead of looping. The message names the user and where the password comes from, never it."""


def connect(
    url: str,
    *,
    client_name: str | None = None,
    read_timeout_s: float = 0.0,
    connect_timeout_s: float = 2.0,
    reply_timeout_s: float | None = None,
    retries: int | None = None,
    security: RedisSecurity | None = None,
) -> redis.Redis:
    """A bytes-in, bytes-out client. The socket timeout leaves room for blocking reads of `read_timeout_s`, unless
    `reply_timeout_s` sets it. `retries` replaces redis-py's default retries of a command that timed out or lost
    its connection (0: none; a probe must answer "unreachable" within its timeout, not several timeouts later).

    TLS files and a password file come from `security`, by default from the `TACTICAL_REDIS_*` environment;
    a misconfiguration raises RedisSecurityError (a ValueError) here, before any connection is tried."""
    security = RedisSecurity.from_env() if security is None else security
    client_url, options = security.client_options(url)
    if not client_url.startswith("unix:"):
        options["socket_keepalive"] = True  # TCP only: redis-py refuses the option for a unix socket
    return redis.Redis.from_url(
        client_url,
        client_name=client_name or "tactical",
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=read_timeout_s + 5.0 if reply_timeout_s is None else reply_timeout_s,
        health_check_interval=30,
        decode_responses=False,
        redis_connect_func=_authenticating(url, security),
        **({} if retries is None else {"retry": Retry(NoBackoff(), retries)}),
        **options,
    )


class HeldConnection:
    """A connection taken from a client's pool once and kept between calls: the hot path neither checks a connection
    out of the pool nor polls it for stale replies on every batch. A connection whose reply was not read (the caller
    failed first, or the read failed) is discarded, and a fresh one taken next time, so no stale reply is ever read as
    another's. It goes back to the pool on `close()`, or when the holder is garbage. One thread at a time."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._held: list[Connection] = []  # zero or one connection, shared with the finalizer
        self._finalizer = weakref.finalize(self, _release_all, client.connection_pool, self._held)

    def connection(self) -> Connection:
        if not self._held:
            self._held.append(self.client.connection_pool.get_connection())
        return self._held[0]

    def reply_waiting(self) -> bool:
        """Whether a reply has come back on the held connection, checked without blocking. False when none is held,
        or it is closed or broken (the check never connects)."""
        if not self._held or getattr(self._held[0], "_sock", None) is None:
            return False
        try:
            return bool(self._held[0].can_read(timeout=0))
        except (redis.RedisError, OSError):
            return False

    def discard(self) -> None:
        """Close the held connection (it may hold an unread reply); the next call takes a fresh one."""
        if self._held:
            self._held[0].disconnect()
            _release_all(self.client.connection_pool, self._held)

    def close(self) -> None:
        self._finalizer()


def _release_all(pool: redis.ConnectionPool, held: list[Connection]) -> None:
    while held:
        pool.release(held.pop())


def _authenticating(url: str, security: RedisSecurity) -> Callable[[AbstractConnection], None]:
    """The connection handshake (AUTH, SELECT, CLIENT SETNAME), with a refusal turned into RedisAuthError."""
    source = PASSWORD_FILE_ENV if security.password_file is not None else "the Redis URL"

    def on_connect(connection: AbstractConnection) -> None:
        try:
            connection.on_connect()
        except redis.AuthenticationError as exc:
            user: Any = getattr(connection, "username", None) or _provider_user(connection) or "default"
            raise RedisAuthError(
                f"Redis at {redact_url(url)} refused user {user!r} ({exc}): check the password in {source} "
                "and that the ACL user exists and is enabled"
            ) from None

    return on_connect


def _provider_user(connection: AbstractConnection) -> str | None:
    provider = getattr(connection, "credential_provider", None)
    return getattr(provider, "username", None)


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
