"""What every command gets from the global options: where Redis and the worker are, and how to print."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Annotated, Any

import redis
import typer
from redis import Redis
from rich.console import Console

from tacticalctl.errors import REDIS_UNREACHABLE, CtlError, ExitCode
from tacticalctl.formatting import make_console
from worker.connection import RedisAuthError, connect, selected_db
from worker.names import DEFAULT_DB
from worker.settings import SettingsError, WorkerSettings, redact_url

DEFAULT_REDIS_URL = "redis://localhost:6379/2"
DEFAULT_WORKER_URL = "http://127.0.0.1:8001"


@dataclass
class CtlContext:
    redis_url: str = DEFAULT_REDIS_URL
    worker_url: str = DEFAULT_WORKER_URL
    console: Console = field(default_factory=make_console)
    _client: redis.Redis | None = None

    def redis(self, *, ride_out_outage: bool = False) -> redis.Redis:
        """A connected client, or CtlError(CRITICAL) naming the (redacted) URL. With `ride_out_outage` (a watch or a
        follow, started while Redis is down), an unreachable Redis is not an error: the client is returned
        unchecked, and the caller's first reads fail as later ones would in an outage."""
        if self._client is None:
            try:
                client = connect(self.redis_url, client_name="tacticalctl", connect_timeout_s=2.0)
            except SettingsError as exc:
                raise CtlError(str(exc), ExitCode.CRITICAL) from None
            except ValueError as exc:  # redis-py refusing the URL's query (`?socket_timeout=abc`), as the worker does
                raise CtlError(f"--redis-url {redact_url(self.redis_url)}: {exc}", ExitCode.CRITICAL) from None
            try:
                client.ping()
            except RedisAuthError as exc:
                raise CtlError(str(exc), ExitCode.CRITICAL) from None
            except REDIS_UNREACHABLE as exc:
                if ride_out_outage:
                    return client  # not kept: the next call checks again
                raise CtlError(f"Redis unreachable at {redact_url(self.redis_url)}: {exc}", ExitCode.CRITICAL) from None
            db = selected_db(client)
            if db != DEFAULT_DB:
                # Another database is empty of everything the worker writes: an all-clear there means nothing.
                typer.echo(f"tacticalctl: warning: connected to database {db}, the runbook's is {DEFAULT_DB}: end "
                           f"--redis-url with /{DEFAULT_DB} unless the workers use {db} too", err=True)
            self._client = client
        return self._client

    def redis_if_reachable(self) -> tuple[Redis | None, str | None]:  # `redis` here is the method above
        """For a command that needs Redis only for its audit entry (a dry run, a models-only restore on a new host):
        the client, or None and why it could not be had."""
        try:
            return self.redis(), None
        except CtlError as exc:
            return None, exc.message

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def worker_settings() -> WorkerSettings:
    """The workers' settings as this environment sets them (TACTICAL_*): the TTLs, breaker limits and models directory
    the commands must agree with. A bad value is one line and exit 3, as the worker refuses it."""
    try:
        return WorkerSettings.from_env()
    except SettingsError as exc:
        raise CtlError(str(exc), ExitCode.UNKNOWN) from None


def get_context(ctx: typer.Context) -> CtlContext:
    obj = ctx.find_root().obj
    if not isinstance(obj, CtlContext):
        obj = CtlContext()
        ctx.find_root().obj = obj
    return obj


_documents_printed = 0


def print_json(data: Any) -> None:
    """Stable, machine-readable output on stdout (no colour, no wrapping): a command's one JSON document."""
    global _documents_printed
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    _documents_printed += 1


# ctx.meta (shared by a command's context and its parents'): whether the command line asked for JSON, so that a
# failure answers in JSON too. Guessed from the words before they parse (`CtlGroup.parse_args`: a usage error comes
# before any option's value), then set by `--json` itself once parsed: a `--json` that is another option's value
# (`--reason --json`) does not ask for it.
JSON_REQUESTED = "tacticalctl.json_requested"


def _record_json_requested(ctx: typer.Context, value: bool) -> bool:
    ctx.meta[JSON_REQUESTED] = bool(value)
    return value


def json_flag(help: str = "Print machine-readable JSON.") -> Any:
    """Every command's `--json` option: `Annotated[bool, json_flag()]`."""
    return typer.Option("--json", help=help, callback=_record_json_requested)


JsonOption = Annotated[bool, json_flag()]


def json_documents_printed() -> int:
    """How many documents `print_json` has printed in this process (a command that failed after printing its
    document must not print a second)."""
    return _documents_printed
