"""GET /health, /health/state and /metrics on the worker's HTTP port (8001 by default).

The server runs in its own daemon threads, one per connection, so a slow or broken client never touches the
event loop. Each connection gets one request: its head must arrive within `request_timeout_s` and fit in
`max_request_bytes`, and at most `max_connections` are served at once (more are closed unanswered). The
snapshot callables must be cheap: the worker keeps the dicts prepared and this server only serialises them.
"""

from __future__ import annotations

import io
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from worker.metrics import TacticalMetrics
from worker.version import release

log = logging.getLogger(__name__)

HEALTH_STATUS = {0: "pass", 1: "warn", 2: "fail", 3: "fail"}
SERVING_STATES = (0, 1)
JSON_CONTENT_TYPE = "application/json"


class HttpServerError(RuntimeError):
    """The health endpoint could not start; the message names the address and what to change."""


class RequestTooLarge(Exception):
    pass


def json_safe(value: Any) -> Any:
    """`value` with NaN/inf replaced by null: JSON has no NaN, and `jq` rejects it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def json_body(value: Any) -> bytes:
    return json.dumps(json_safe(value), default=str, separators=(",", ":")).encode() + b"\n"


def read_request_head(sock: socket.socket, *, max_bytes: int, timeout_s: float) -> bytes:
    """Bytes up to the blank line ending the request head, within one deadline for the whole head.

    A per-recv timeout alone would let a client that trickles one byte at a time hold the thread forever.
    """
    deadline = time.monotonic() + timeout_s
    received = bytearray()
    while b"\r\n\r\n" not in received and b"\n\n" not in received:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"request head not complete within {timeout_s}s")
        sock.settimeout(remaining)
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
        if len(received) > max_bytes:
            raise RequestTooLarge(f"request head larger than {max_bytes} bytes")
    return bytes(received)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    # Errors found before a version is parsed still get a status line (the stdlib default, 0.9, has none).
    default_request_version = "HTTP/1.0"

    def version_string(self) -> str:
        return "tactical-worker"

    def handle(self) -> None:
        self.close_connection = True
        self.request_version = self.default_request_version
        self.command = ""
        self.requestline = ""
        try:
            head = read_request_head(
                self.connection,
                max_bytes=self.server.max_request_bytes,
                timeout_s=self.server.request_timeout_s,
            )
        except RequestTooLarge as exc:
            self._send_json(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, {"error": str(exc)})
            self._discard_unread()
            return
        except TimeoutError as exc:
            log.debug("closing %s: %s", self.address_string(), exc)
            self._send_json(HTTPStatus.REQUEST_TIMEOUT, {"error": str(exc)})
            return
        except OSError as exc:
            log.debug("client %s went away: %s", self.address_string(), exc)
            return
        if not head:
            return
        self.rfile.close()
        self.rfile = io.BytesIO(head)
        self.handle_one_request()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version.startswith("HTTP/0."):
            # http.server would answer HTTP/0.9 with a bare body; every answer of ours has a status line.
            self.request_version = self.default_request_version
            self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "HTTP/1.0 or 1.1 only")
            return False
        return True

    def _discard_unread(self) -> None:
        # Closing with unread bytes makes the kernel send RST, which can destroy our answer before the client
        # reads it: flush the answer, then drain (bounded in bytes and time) until the client closes.
        deadline = time.monotonic() + 1.0
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            while (remaining := deadline - time.monotonic()) > 0:
                self.connection.settimeout(remaining)
                if not self.connection.recv(65536):
                    break
        except OSError:
            pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/health":
            self._health()
        elif path == "/health/state":
            self._state()
        elif path == "/metrics":
            body, content_type = self.server.metrics.render()
            self._send(HTTPStatus.OK, body, content_type)
        else:
            self._send_json(
                HTTPStatus.NOT_FOUND,
                {"error": f"no such path {path}", "paths": ["/health", "/health/state", "/metrics"]},
            )

    def _health(self) -> None:
        try:
            snapshot = self.server.health_snapshot()
            code = snapshot.get("state_code")
            if code not in HEALTH_STATUS or isinstance(code, bool):
                raise ValueError(f"health snapshot has no state_code 0..3: {code!r}")
        except Exception as exc:
            log.exception("GET /health: the health snapshot failed")
            self._send_json(
                HTTPStatus.SERVICE_UNAVAILABLE, {"status": "fail", "error": f"health snapshot failed: {exc}"}
            )
            return
        body = {
            "status": HEALTH_STATUS[code],
            "state": snapshot.get("state"),
            "state_code": code,
            "consumer": snapshot.get("consumer"),
            **release(),  # this process's release and commit: answered before the monitor's first tick too
            "model_version": snapshot.get("model_version"),
            "uptime_s": snapshot.get("uptime_s", round(time.monotonic() - self.server.started_at, 3)),
        }
        status = HTTPStatus.OK if code in SERVING_STATES else HTTPStatus.SERVICE_UNAVAILABLE
        self._send_json(status, body)

    def _state(self) -> None:
        try:
            body = self.server.state_snapshot()
        except Exception as exc:
            log.exception("GET /health/state: the state snapshot failed")
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"state snapshot failed: {exc}"})
            return
        self._send_json(HTTPStatus.OK, body)

    def _method_not_allowed(self) -> None:
        self._send_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{self.command} not allowed: GET or HEAD only"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _method_not_allowed

    # Some probes (load balancers, uptime checks) ask HEAD /health: the status and headers a GET would get, no body.
    do_HEAD = do_GET

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stdlib's parse errors (400, 414, 501…) answer in JSON like everything else.
        status = HTTPStatus(code)
        self._send_json(status, {"error": message or status.phrase})

    def _send_json(self, status: HTTPStatus, value: Any) -> None:
        self._send(status, json_body(value), JSON_CONTENT_TYPE)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        if self.request_version.startswith("HTTP/0."):
            # http.server may have taken a version of 0.x from a request line it then refused: still a status line.
            self.request_version = self.default_request_version
        try:
            self.connection.settimeout(self.server.request_timeout_s)  # the head's deadline may be spent
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if status == HTTPStatus.METHOD_NOT_ALLOWED:
                self.send_header("Allow", "GET, HEAD")
            self.end_headers()
            if self.command != "HEAD":  # a HEAD answer has no body; its Content-Length is the GET's
                self.wfile.write(body)
        except OSError as exc:
            log.debug("could not answer %s: %s", self.address_string(), exc)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Connections the kernel holds for a worker that does not accept them (hung, stopped): with socketserver's 5, a
    # minute of scrapes filled it, and every later probe timed out connecting — read as a worker gone, not hung.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        *,
        metrics: TacticalMetrics,
        health_snapshot: Callable[[], dict[str, Any]],
        state_snapshot: Callable[[], dict[str, Any]],
        request_timeout_s: float,
        max_request_bytes: int,
        max_connections: int,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.metrics = metrics
        self.health_snapshot = health_snapshot
        self.state_snapshot = state_snapshot
        self.request_timeout_s = request_timeout_s
        self.max_request_bytes = max_request_bytes
        self.max_connections = max_connections
        self.started_at = time.monotonic()
        self._active = 0
        self._active_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            full = self._active >= self.max_connections
            if not full:
                self._active += 1
        if full:
            log.warning("refusing %s: %d connections already open", client_address, self.max_connections)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._active_lock:
            self._active -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error answering %s", client_address)


class HealthServer:
    """The worker's HTTP endpoint. Port 0 picks a free port (read it back from `.port` after `start()`)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: TacticalMetrics,
        health_snapshot: Callable[[], dict[str, Any]],
        state_snapshot: Callable[[], dict[str, Any]],
        request_timeout_s: float = 5.0,
        max_request_bytes: int = 16384,
        max_connections: int = 64,
    ) -> None:
        self.host = host
        self._port = port
        self._metrics = metrics
        self._health_snapshot = health_snapshot
        self._state_snapshot = state_snapshot
        self._request_timeout_s = request_timeout_s
        self._max_request_bytes = max_request_bytes
        self._max_connections = max_connections
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> HealthServer:
        if self._server is not None:
            return self
        try:
            self._server = _Server(
                (self.host, self._port),
                metrics=self._metrics,
                health_snapshot=self._health_snapshot,
                state_snapshot=self._state_snapshot,
                request_timeout_s=self._request_timeout_s,
                max_request_bytes=self._max_request_bytes,
                max_connections=self._max_connections,
            )
        except OSError as exc:
            raise HttpServerError(
                f"cannot listen on {self.host}:{self._port} for /health and /metrics: {exc.strerror or exc}; "
                "is another worker using this port? Set TACTICAL_HTTP_ADDR to a free HOST:PORT"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"http-{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.info("serving /health, /health/state and /metrics on %s", self.url)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["HealthServer", "HttpServerError", "json_safe", "read_request_head"]
