"""Whatever a client sends to the worker's HTTP port, the server answers with a well-formed response or closes, never
fails in a handler, and /health still answers afterwards."""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.http_server import HealthServer
from worker.metrics import TacticalMetrics

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_REQUEST_BYTES = 4096
PATHS = ["/health", "/health/state", "/metrics", "/", "/health/", "/metrics?x=1", "/healthz", "*", "//health"]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "get", "PRI", "BREW"]
VERSIONS = ["HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/0.9", "HTTP/1", "HTTP/x.y", "http/1.1", "HTTP/1.1.1", ""]
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*")
GET = re.compile(rb"GET[ \t]")
VALID_STATUSES = {status.value for status in HTTPStatus}


class ServerErrors(logging.Handler):
    """Log records at ERROR or above from the server: a handler that raised, or a snapshot that failed."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def errors() -> Iterator[ServerErrors]:
    handler = ServerErrors()
    logger = logging.getLogger("worker.http_server")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture(scope="module")
def server(errors: ServerErrors) -> Iterator[HealthServer]:
    health = {"state": "healthy", "state_code": 0, "consumer": "fuzz:1", "model_version": "v1", "uptime_s": 1.0}
    state = {"state": "healthy", "state_code": 0, "health_checks": {}, "recent_transitions": []}
    with HealthServer(
        "127.0.0.1",
        0,
        metrics=TacticalMetrics(),
        health_snapshot=lambda: health,
        state_snapshot=lambda: state,
        request_timeout_s=0.3,
        max_request_bytes=MAX_REQUEST_BYTES,
        max_connections=8,  # a slot that leaks shows up after a few examples as a refused /health
    ) as running:
        yield running


def exchange(server: HealthServer, data: bytes, *, rude: bool = False) -> bytes:
    """Send `data`, signal the end of the request (half-close), and read until the server closes. A rude client
    closes at once without reading."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        try:
            sock.sendall(data)
            if rude:
                return b""
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server may answer and close before a large request is fully sent
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, separator, body = raw.partition(b"\r\n\r\n")
    assert separator, f"response head never ends: {raw[:200]!r}"
    status_line, *header_lines = head.split(b"\r\n")
    match = STATUS_LINE.fullmatch(status_line)
    assert match, f"not an HTTP/1.x status line: {status_line!r}"
    headers = {}
    for line in header_lines:
        name, colon, value = line.partition(b":")
        assert colon, f"malformed response header {line!r}"
        headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    return int(match.group(1)), headers, body


def assert_well_formed_or_closed(raw: bytes, request: bytes) -> int | None:
    if raw == b"":
        return None  # closed without an answer: allowed (e.g. an empty request line)
    status, headers, body = parse_response(raw)
    assert status in VALID_STATUSES
    assert int(headers["content-length"]) == len(body)
    if headers.get("content-type") == "application/json" and body:
        json.loads(body)
    return status


def assert_health_answers(server: HealthServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["status"] == "pass"
    finally:
        conn.close()


tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)
any_text = st.text(max_size=40).map(lambda text: text.encode("utf-8", "surrogatepass"))
header_names = st.one_of(
    st.sampled_from(["Host", "Content-Length", "Connection", "Expect", "Transfer-Encoding", "Accept", "X-Fuzz"]),
    tokens,
).map(str.encode)
header_values = st.one_of(
    st.sampled_from([b"", b"0", b"-1", b"99999999999999999999", b"chunked", b"100-continue", b"keep-alive", b"close"]),
    any_text,
    st.binary(max_size=40),
    st.integers(min_value=0, max_value=MAX_REQUEST_BYTES * 2).map(lambda n: b"a" * n),
)
header_lines = st.one_of(
    st.tuples(header_names, header_values).map(lambda pair: pair[0] + b": " + pair[1]),
    st.binary(max_size=40),  # no colon, obs-fold, NUL bytes...
    st.just(b" folded continuation"),
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.one_of(st.sampled_from(METHODS), tokens, st.binary(max_size=8).map(bytes.hex))).encode()
    path = draw(st.one_of(st.sampled_from(PATHS), any_text.map(lambda raw: b"/" + raw), st.binary(max_size=60)))
    if isinstance(path, str):
        path = path.encode()
    version = draw(st.sampled_from(VERSIONS)).encode()
    words = [method, path, version] if version else [method, path]
    separator = draw(st.sampled_from([b" ", b"  ", b"\t"]))
    newline = draw(st.sampled_from([b"\r\n", b"\n"]))
    lines = [separator.join(words), *draw(st.lists(header_lines, max_size=8))]
    data = newline.join(lines) + newline + newline + draw(st.binary(max_size=64))
    if draw(st.booleans()):
        data = data[: draw(st.integers(min_value=0, max_value=len(data)))]  # a partial request, then EOF
    return data


@FUZZ
@given(data=requests(), rude=st.booleans())
def test_any_request_gets_a_well_formed_answer_or_a_close(
    server: HealthServer, errors: ServerErrors, data: bytes, rude: bool
) -> None:
    status = assert_well_formed_or_closed(exchange(server, data, rude=rude), data)
    if status == 200:
        assert GET.match(data), "only a GET is answered 200"
    assert not errors.records, [record.getMessage() for record in errors.records]
    assert_health_answers(server)


@FUZZ
@given(st.one_of(st.binary(max_size=512), st.binary(min_size=MAX_REQUEST_BYTES, max_size=MAX_REQUEST_BYTES * 3)))
def test_raw_bytes_get_a_well_formed_answer_or_a_close(server: HealthServer, errors: ServerErrors, data: bytes) -> None:
    status = assert_well_formed_or_closed(exchange(server, data), data)
    assert status != 200 or GET.match(data)
    if len(data) > MAX_REQUEST_BYTES and b"\n\n" not in data and b"\r\n\r\n" not in data:
        assert status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    assert not errors.records, [record.getMessage() for record in errors.records]
    assert_health_answers(server)


@settings(max_examples=5, deadline=None)
@given(st.sampled_from([b"", b"G", b"\r\n", b"GET /health HTTP/1.1\r\n", b"GET /health HTTP/1.1\r\nHost: x\r\n"]))
def test_a_request_that_never_ends_is_cut_off_with_408(server: HealthServer, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(data)  # and then nothing: no end of head, no half-close
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    status, _, body = parse_response(received)
    assert status == HTTPStatus.REQUEST_TIMEOUT
    assert json.loads(body)["error"]
    assert_health_answers(server)


def test_an_http_0_9_request_line_still_gets_a_status_line(server: HealthServer) -> None:
    raw = exchange(server, b"GET /health HTTP/0.9\r\n\r\n")
    status, _, _ = parse_response(raw)
    assert status == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED


def test_after_the_fuzzing_the_server_still_serves_every_path(server: HealthServer) -> None:
    answers: dict[str, Any] = {}
    for path in ("/health", "/health/state", "/metrics"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            conn.request("GET", path)
            answers[path] = conn.getresponse().status
        finally:
            conn.close()
    assert answers == {"/health": 200, "/health/state": 200, "/metrics": 200}
