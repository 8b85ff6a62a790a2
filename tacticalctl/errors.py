"""Exit codes a monitor reads, and the one error type the CLI turns into a clear line on stderr."""

from __future__ import annotations

from enum import IntEnum

import redis

from worker.connection import REDIS_UNREACHABLE  # noqa: F401  (the CLI catches the same outage as the worker)


class ExitCode(IntEnum):
    """Monitoring-plugin convention: what `tacticalctl` check commands exit with."""

    OK = 0
    WARNING = 1
    CRITICAL = 2  # including: Redis or the worker unreachable
    UNKNOWN = 3  # the check itself could not run

    @property
    def status(self) -> str:
        """The status word JSON documents carry for this code, as every check's: ok, warn, critical, unknown."""
        return ("ok", "warn", "critical", "unknown")[self]

    @classmethod
    def worst(cls, codes: list[ExitCode]) -> ExitCode:
        """CRITICAL beats WARNING beats OK; UNKNOWN only when nothing is worse than OK."""
        if any(c is cls.CRITICAL for c in codes):
            return cls.CRITICAL
        if any(c is cls.WARNING for c in codes):
            return cls.WARNING
        if any(c is cls.UNKNOWN for c in codes):
            return cls.UNKNOWN
        return cls.OK


class CtlError(Exception):
    """An operator-facing failure: `message` is printed as one line, `code` is the exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.UNKNOWN) -> None:
        super().__init__(message)
        self.message = message
        self.code = code




def outage_message(exc: Exception, retry_s: float) -> str:
    """What a follow or a watch says while Redis is unreachable (or refuses a command), before it retries. Refused
    credentials are raised again instead: they are not transient, and the CLI's group prints them on one line and
    exits 2."""
    if isinstance(exc, redis.AuthenticationError):
        raise exc
    if isinstance(exc, redis.ResponseError):
        return f"Redis refused a command: {exc} (retrying every {retry_s:g}s)"
    return f"Redis unreachable: {exc} (retrying every {retry_s:g}s)"
