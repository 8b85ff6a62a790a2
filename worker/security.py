"""Redis credentials and TLS from the environment or files, and what of the configuration may leave the machine.

A password can sit in the URL, but it need not: `TACTICAL_REDIS_PASSWORD_FILE` names a file holding it (a mounted
secret), read again at every new connection so a rotated secret is picked up without a restart. TLS (`rediss://`)
verifies the server against `TACTICAL_REDIS_TLS_CA` (or the system store) and presents `TACTICAL_REDIS_TLS_CERT` /
`TACTICAL_REDIS_TLS_KEY` when the server asks for a client certificate. Nothing here disables verification.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from redis.credentials import CredentialProvider

from worker.settings import SettingsError, WorkerSettings, has_at_after_host, redact_url

TLS_CA_ENV = "TACTICAL_REDIS_TLS_CA"
TLS_CERT_ENV = "TACTICAL_REDIS_TLS_CERT"
TLS_KEY_ENV = "TACTICAL_REDIS_TLS_KEY"
PASSWORD_FILE_ENV = "TACTICAL_REDIS_PASSWORD_FILE"

# A name that says its value is a secret. Not only the obvious words: an API key, a webhook URL (Slack's carries its
# token in the path), an auth header were archived verbatim by name before (a QA helper's find).
_SECRET_NAME = re.compile(
    r"PASS|PWD|SECRET|TOKEN|CREDENTIAL|PRIVATE|AUTH|BEARER|COOKIE|SESSION|WEBHOOK|API_?KEY|ACCESS_?KEY|(^|_)KEY$")
# Variables whose names look secret but whose values are paths to files: kept, a restore needs them.
_PATH_VARIABLES = frozenset({TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV, PASSWORD_FILE_ENV})


class RedisSecurityError(SettingsError):
    """TLS or credential settings that cannot work together; the message names the variables to fix."""


def read_secret_file(path: Path, variable: str) -> str:
    """The secret in `path`, without the trailing newline editors and `echo` add."""
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise RedisSecurityError(f"{variable}={path}: cannot read the secret ({exc.strerror or exc})") from None
    if not secret:
        raise RedisSecurityError(f"{variable}={path}: the file is empty")
    return secret


class PasswordFileCredentials(CredentialProvider):
    """AUTH credentials whose password is read from a file at every new connection (rotation without restart)."""

    def __init__(self, password_file: Path, username: str | None = None) -> None:
        self.password_file = password_file
        self.username = username

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        password = read_secret_file(self.password_file, PASSWORD_FILE_ENV)
        return (self.username, password) if self.username else (password,)

    def __repr__(self) -> str:
        return f"PasswordFileCredentials(username={self.username!r}, password_file={str(self.password_file)!r})"


def url_password(url: str) -> str | None:
    """The password a URL carries, in its user info or (unix sockets) its `password=` query parameter."""
    parts = urlsplit(url)
    if parts.password is not None:
        return unquote(parts.password)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "password":
            return value
    return None


def _strip_credentials(url: str) -> tuple[str, str | None]:
    """The URL without user info and `password=`/`username=` query parameters, and the username it named."""
    parts = urlsplit(url)
    username = unquote(parts.username) if parts.username else None
    query = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "username":
            username = value or username
        elif name != "password":
            query.append((name, value))
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, urlencode(query), parts.fragment)), username


URL_SCHEMES = ("redis", "rediss", "unix")


def check_url(url: str) -> None:
    """A Redis URL redis-py can use as it stands, with no TLS setting of its own: refused with a message that shows
    the URL redacted (redis-py's own errors quote the part of a misplaced password it tripped on)."""
    shown = redact_url(url)
    parts = urlsplit(url)
    if parts.scheme not in URL_SCHEMES:
        raise RedisSecurityError(f"the Redis URL {shown} has scheme {parts.scheme!r}: use redis://, rediss:// (TLS) "
                                 "or unix://")
    misplaced_password = RedisSecurityError(
        f"the Redis URL {shown} cannot be parsed: a password containing / # ? or @ must be percent-encoded (or kept "
        "in TACTICAL_REDIS_PASSWORD_FILE)")
    if parts.scheme != "unix":
        # redis://:123#45@h would connect to localhost:123; redis://:pw@secret/x@h to a host named "secret", asking
        # DNS for it.
        if has_at_after_host(parts):
            raise misplaced_password
        # The path is the database, a number (redis-py took /abc for database 0, with a warning).
        database = parts.path.strip("/")
        if database and not re.fullmatch(r"[0-9]+", database):
            raise RedisSecurityError(f"the Redis URL {shown} names database {database!r}: a database is a number "
                                     "(the runbook's is 2, redis://host:6379/2)")
    port_text = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    if re.fullmatch(r"-?\d+", port_text) and not 0 < int(port_text) <= 65535:
        raise RedisSecurityError(f"the Redis URL {shown} has a port out of range: ports are 1-65535")
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        # Not quoted: "could not be cast to integer value as '…'" may quote a secret.
        raise RedisSecurityError(f"the Redis URL {shown} has a port that is not a number: ports are 1-65535 (a "
                                 "password containing / # ? or @ must be percent-encoded)") from None
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if name.startswith("ssl"):
            # redis-py lets URL parameters override the client's: ?ssl_cert_reqs=none would switch verification off.
            raise RedisSecurityError(f"the Redis URL {shown} sets {name}: TLS is configured only by "
                                     f"{TLS_CA_ENV}/{TLS_CERT_ENV}/{TLS_KEY_ENV}, and the server's certificate is "
                                     "always verified")


@dataclass(frozen=True, slots=True)
class RedisSecurity:
    """How to authenticate to Redis and verify it, beyond what the URL says."""

    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    password_file: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RedisSecurity:
        environ = os.environ if environ is None else environ

        def path(name: str) -> Path | None:
            raw = environ.get(name, "")
            return Path(raw) if raw else None

        return cls(path(TLS_CA_ENV), path(TLS_CERT_ENV), path(TLS_KEY_ENV), path(PASSWORD_FILE_ENV))

    @property
    def uses_tls_files(self) -> bool:
        return any(p is not None for p in (self.tls_ca, self.tls_cert, self.tls_key))

    def check(self, url: str) -> None:
        """Fail fast, naming the variable, on anything that would only fail later as an obscure connection error."""
        check_url(url)
        scheme = urlsplit(url).scheme
        if self.uses_tls_files and scheme != "rediss":
            raise RedisSecurityError(
                f"{TLS_CA_ENV}/{TLS_CERT_ENV}/{TLS_KEY_ENV} are set but the Redis URL {redact_url(url)} is "
                f"{scheme}://: use rediss:// for TLS, or unset the TLS variables"
            )
        if self.tls_key is not None and self.tls_cert is None:
            raise RedisSecurityError(f"{TLS_KEY_ENV} is set without {TLS_CERT_ENV}: a client key needs its certificate")
        for variable, file in ((TLS_CA_ENV, self.tls_ca), (TLS_CERT_ENV, self.tls_cert), (TLS_KEY_ENV, self.tls_key)):
            if file is not None and not file.is_file():
                raise RedisSecurityError(f"{variable}={file}: no such file")
        if self.password_file is not None:
            if url_password(url) is not None:
                raise RedisSecurityError(
                    f"the Redis URL {redact_url(url)} carries a password and {PASSWORD_FILE_ENV} is set: "
                    "keep the password in one place (the file), and drop it from the URL"
                )
            read_secret_file(self.password_file, PASSWORD_FILE_ENV)

    def client_options(self, url: str) -> tuple[str, dict[str, Any]]:
        """The URL to hand redis-py and the keyword arguments that add TLS files and file-based credentials."""
        self.check(url)
        options: dict[str, Any] = {}
        if urlsplit(url).scheme == "rediss":
            # Said, not left to redis-py's defaults: before 6.0 it checked no host name (pyproject allows 5.x), and
            # the runbook promises the certificate and the host name are always verified.
            options.update(ssl_cert_reqs="required", ssl_check_hostname=True)
        if self.tls_ca is not None:
            options["ssl_ca_certs"] = str(self.tls_ca)
        if self.tls_cert is not None:
            options["ssl_certfile"] = str(self.tls_cert)
        if self.tls_key is not None:
            options["ssl_keyfile"] = str(self.tls_key)
        if self.password_file is not None:
            url, username = _strip_credentials(url)
            options["credential_provider"] = PasswordFileCredentials(self.password_file, username)
        return url, options


def is_secret_name(name: str) -> bool:
    """A variable whose value is a secret (a path to one, `*_FILE` or the TLS files, is not)."""
    upper = name.upper()
    return bool(_SECRET_NAME.search(upper)) and not upper.endswith("_FILE") and upper not in _PATH_VARIABLES


def _shareable(value: str) -> str:
    return redact_url(value) if "://" in value else value


def non_secret_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every `TACTICAL_*` variable that is set, secrets left out and passwords in URLs masked."""
    environ = os.environ if environ is None else environ
    return {
        name: _shareable(value)
        for name, value in sorted(environ.items())
        if name.startswith("TACTICAL_") and not is_secret_name(name)
    }


def effective_settings(settings: WorkerSettings) -> dict[str, Any]:
    """The worker's effective settings as JSON-ready values, the Redis URL's password masked."""
    values = {name: str(value) if isinstance(value, Path) else value for name, value in asdict(settings).items()}
    values["redis_url"] = redact_url(settings.redis_url)
    return values
