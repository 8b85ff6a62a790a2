"""Worker settings: one frozen object, from flags > `TACTICAL_*` environment > defaults."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit


def default_models_dir() -> Path:
    """The bundles shipped inside the `models` package."""
    import models

    return Path(models.__file__).resolve().parent / "tactical"


def default_consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _setting(default: Any, help: str, *, default_factory: Any = None, at_least: float | None = None,
             above: float | None = None, at_most: tuple[float, str] | None = None) -> Any:
    """A setting, with the range its value must be in: `at_least` (≥) or `above` (>), and `at_most` (≤, with why)."""
    metadata = {"help": help, "at_least": at_least, "above": above, "at_most": at_most}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    redis_url: str = _setting("redis://localhost:6379/2", "Redis URL (redis://, rediss://, unix://); db 2")
    http_addr: str = _setting("127.0.0.1:8001", "HOST:PORT for /health, /health/state and /metrics")
    consumer: str = _setting(None, "consumer name in the group", default_factory=default_consumer_name)
    models_dir: Path = _setting(None, "directory of model bundles", default_factory=default_models_dir)
    batch_size: int = _setting(100, "entries read per XREADGROUP", at_least=1)
    block_ms: int = _setting(100, "XREADGROUP block time; bounds shutdown and breaker reaction", at_least=1)
    # Below the lag warning (2 s), with the claim interval: a dead worker's entries are decided by the others before
    # their lag turns the others' health critical (5 s). A slow but live worker's entry taken meanwhile is decided
    # once still (the commit checks), at the cost of one more delivery.
    claim_min_idle_ms: int = _setting(1000, "reclaim entries pending longer than this from other consumers", at_least=1)
    claim_interval_ms: int = _setting(1000, "how often to look for entries to reclaim", at_least=1)
    processing_lease_ms: int = _setting(30000, "lease of tactical:processing:{cid} while an event is in flight",
                                        at_least=1)
    completed_ttl_s: int = _setting(86400, "how long tactical:completed:{cid} remembers a decided event", at_least=1)
    max_deliveries: int = _setting(5, "dead-letter an entry delivered more than this many times", at_least=1)
    max_event_bytes: int = _setting(65536, "dead-letter events larger than this (sum of field sizes)", at_least=1)
    torch_threads: int = _setting(1, "torch intra-op threads (inter-op is 1): leave cores to Redis", at_least=1)
    shutdown_grace_s: float = _setting(30.0, "on SIGTERM, how long to finish in-flight events", at_least=0)
    heartbeat_interval_s: float = _setting(
        2.0, "liveness heartbeat refresh; its TTL is 2.5x this", above=0,
        # TacticalWorkerDown fires after a minute unscraped: a dead worker's heartbeat (TTL 2.5x, 50 s at 20 s) must
        # have lapsed by then, or triage, name claiming and stale-key/consumer pruning read it as live.
        at_most=(20.0, "its TTL, 2.5 intervals, must lapse within the minute after which TacticalWorkerDown fires, "
                       "or a dead worker reads as live"))
    model_poll_s: float = _setting(
        5.0, "how often to look for a newly promoted bundle", above=0,
        # Each poll also confirms the bundle in use; unconfirmed for 15 min, model staleness turns critical.
        at_most=(300.0, "each poll confirms the bundle in use, and model staleness turns critical after 15 min "
                        "unconfirmed"))
    breaker_failure_threshold: int = _setting(5, "consecutive failed batches that open the breaker", at_least=1)
    breaker_reset_timeout_s: float = _setting(30.0, "open → half-open after this many seconds", above=0)
    breaker_restart_limit: int = _setting(5, "worker restarts within the window that open the breaker", at_least=0)
    breaker_restart_window_s: float = _setting(300.0, "window for the restart limit", above=0)
    health_interval_s: float = _setting(1.0, "how often health checks run", above=0)
    stats_window_s: float = _setting(60.0, "rolling window of latency percentiles, error and execution rates", above=0)
    health_recovery_s: float = _setting(30.0, "a better health state must hold this long before it is entered",
                                        at_least=0)
    log_level: str = _setting("INFO", "DEBUG, INFO, WARNING or ERROR")

    def __post_init__(self) -> None:
        """Refuse, by name, a value the worker would run with but not work with (a batch of 0, a block of 0 ms that
        blocks for ever, a NaN interval): exit 2 at start, not an error every second once running."""
        for f in fields(self):
            value, at_least, above = getattr(self, f.name), f.metadata["at_least"], f.metadata["above"]
            at_most = f.metadata["at_most"]
            if at_least is None and above is None and at_most is None:
                continue
            if value != value or value in (float("inf"), float("-inf")):
                raise SettingsError(f"{self.describe(f.name)} is {value}: give a finite number")
            if at_least is not None and value < at_least:
                raise SettingsError(f"{self.describe(f.name)} is {value}: it must be at least {at_least:g}")
            if above is not None and value <= above:
                raise SettingsError(f"{self.describe(f.name)} is {value}: it must be more than {above:g}")
            if at_most is not None and value > at_most[0]:
                raise SettingsError(f"{self.describe(f.name)} is {value}: it must be at most {at_most[0]:g} "
                                    f"({at_most[1]})")
        if self.log_level.upper() not in _LOG_LEVELS:
            raise SettingsError(f"{self.describe('log_level')} is {self.log_level!r}: one of {', '.join(_LOG_LEVELS)}")
        _host, colon, port = self.http_addr.rpartition(":")
        if not colon or not port.isdigit() or int(port) > 65535:
            raise SettingsError(f"{self.describe('http_addr')} is {self.http_addr!r}: give HOST:PORT (port 0 for any "
                                "free one)")

    @classmethod
    def describe(cls, name: str) -> str:
        """How an operator sets it: the flag and the variable."""
        return f"--{name.replace('_', '-')} ({cls.env_name(name)})"

    @staticmethod
    def env_name(name: str) -> str:
        return "TACTICAL_" + name.upper()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> WorkerSettings:
        """Defaults, then `TACTICAL_*` variables, then explicit overrides (None means not given)."""
        environ = dict(os.environ) if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(cls.env_name(f.name))
            if raw is not None and raw != "":
                values[f.name] = _parse(f.type, raw, cls.env_name(f.name))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_changes(self, **changes: Any) -> WorkerSettings:
        return replace(self, **changes)

    @property
    def http_host(self) -> str:
        return self.http_addr.rsplit(":", 1)[0] or "127.0.0.1"

    @property
    def http_port(self) -> int:
        return int(self.http_addr.rsplit(":", 1)[1])


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingsError(ValueError):
    """A setting has a value the worker cannot use; the message names the variable."""


def _parse(type_name: Any, raw: str, env: str) -> Any:
    kind = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", str(type_name))
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
    except ValueError:
        raise SettingsError(f"{env}={raw!r} is not a valid {kind}") from None
    return raw


def setting_defaults() -> list[tuple[str, str, Any, str]]:
    """(field, env var, default, help) for every setting: what `--help` and the README list."""
    rows = []
    for f in fields(WorkerSettings):
        default = f.default if f.default is not MISSING else "(computed)"
        rows.append((f.name, WorkerSettings.env_name(f.name), default, f.metadata["help"]))
    return rows


# The numbers a worker runs with unless configured: what the tools quote as "default" (a worker's own environment may
# set others, which a command run elsewhere cannot see).
DEFAULT_SETTINGS = WorkerSettings.from_env(environ={})


def redact_url(url: str) -> str:
    """The URL with its password (user info or a `password=` query parameter) replaced, fit for a log line. Read as
    raw text, not parsed: a password with an unescaped `/`, `#`, `?` or `@` makes the URL unparseable (redis-py
    refuses it too), and must not leak into the message that says so. Everything between `://` and the last `@` is
    user info; only its user name before a `:` is kept. A URL that parses (no @ after its host but in a query value,
    where `?password=p@ss` is fine) is redacted part by part instead: its last @ may be a query value's."""
    well_formed = _redact_parsed(url)
    if well_formed is not None:
        return well_formed
    scheme, separator, rest = url.partition("://")
    if not separator:
        return _PASSWORD_QUERY.sub(r"\1***", url)
    user_info, at, location = rest.rpartition("@")
    if at and ":" in user_info:
        user = user_info.partition(":")[0]
        rest = f"{user}:***@{location}"
    head, question, query = rest.partition("?")
    if question:
        rest = head + "?" + _PASSWORD_QUERY.sub(r"\1***", query)
    return f"{scheme}://{rest}"


_PASSWORD_QUERY = re.compile(r"((?:^|&)password=)[^&]*")


def has_at_after_host(parts: SplitResult) -> bool:
    """An @ after the host: a password's unescaped / # or ? cut the URL short, and what reads as the host is the start
    of the password. A query's values may hold an @ (?username=svc@corp); its names never do."""
    names = (name for name, _ in parse_qsl(parts.query, keep_blank_values=True))
    return "@" in parts.path + parts.fragment or any("@" in name for name in names)


def _redact_parsed(url: str) -> str | None:
    """`redact_url` of a URL whose parts can be told apart; None when they cannot (a password's / # ? @ unescaped)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if not parts.scheme or has_at_after_host(parts):
        return None
    netloc = parts.netloc
    user_info, at, host = netloc.rpartition("@")
    if at and ":" in user_info:
        netloc = f"{user_info.partition(':')[0]}:***@{host}"
    query = _PASSWORD_QUERY.sub(r"\1***", parts.query)
    # Put together by hand: urlunsplit drops the empty host of unix:///path.
    return (f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
            + (f"#{parts.fragment}" if parts.fragment else ""))
