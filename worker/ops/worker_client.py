"""Read the worker's HTTP endpoint (`/health`, `/health/state`, `/metrics`) with short timeouts.

Every failure to get an answer — refused connection, timeout, a body that is not what the worker serves — is one
`WorkerUnreachable` naming the URL and the cause, so a check command can report it as CRITICAL in one line.
An HTTP 503 from `/health` is an answer (critical/failed), not a failure to reach the worker.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from worker.health import CheckStatus

HEALTH_PATH = "/health"
STATE_PATH = "/health/state"
METRICS_PATH = "/metrics"
# /health answers 503 with its JSON body when the worker is critical or failed.
_ANSWERED_STATUSES = frozenset({200, 503})
# Straight to the worker: an http_proxy in the operator's environment must not sit between a check and its target.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class WorkerUnreachable(RuntimeError):
    """No usable answer from the worker's HTTP endpoint; the message names the URL and the cause."""


class WorkerNotAnswering(WorkerUnreachable):
    """No answer came in time, and no refusal either: the port took the connection and nothing answered, or — on
    this host, where that can only be a full connection queue — took none. A process holds it and is hung or stopped
    (SIGSTOP, swapping, a stuck loop) — not a worker that is gone, so starting another is not the fix."""

    HUNG_ADVICE = ("its port is held but it does not answer: the process is alive but hung, stopped or "
                   "overloaded — see what it does (`py-spy dump --pid <pid>`, `ps -o stat= -p <pid>`: T = stopped) "
                   "and, if it stays so, restart it (`docker compose restart tactical-marl`); starting another "
                   "leaves this one holding the port")


# What the checks read from /health/state (worker/monitor.py writes it), by kind: a key may be missing (an older or
# starting worker), but one that is there has this kind, so no check meets a string where it does arithmetic.
# "numbers": an object whose values are numbers; "objects": a list of objects; a trailing "?" allows null. A number
# may always be null: the worker serves a non-finite float as null (`json_safe`), e.g. a realised PnL gone to inf.
_STATE_SHAPE: dict[str, Any] = {
    "at": "number", "state": "text", "state_code": "int", "since": "number", "consumer": "text", "uptime_s": "number",
    "health_checks": "objects", "recent_transitions": "objects",
    "circuit_breaker": {"state": "text", "state_code": "int", "consecutive_failures": "int", "restart_count": "int",
                        "restart_limit": "int", "restart_window_s": "number", "opened_at": "number",
                        "last_reason": "text?", "recent_transitions": "objects"},
    "model": {"version": "text?", "created_at": "text?", "staleness_s": "number", "bundle_dir": "text?",
              "problem": "text?"},
    "lag": {"count": "number", "seconds": "number", "trend": "text"},
    "window": "numbers",
    "window_errors": "numbers",
    "positions": {"active": "int", "realised_pnl": "number"},
    "agent_accuracy": "numbers",
}
_HEALTH_SHAPE: dict[str, Any] = {"status": "text", "state": "text", "state_code": "int", "consumer": "text",
                                 "model_version": "text?", "uptime_s": "number"}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fits(value: object, kind: str) -> bool:
    if kind.endswith("?"):
        return value is None or _fits(value, kind[:-1])
    if kind == "number":
        return value is None or _is_number(value)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "text":
        return isinstance(value, str)
    if kind == "objects":
        return isinstance(value, list) and all(isinstance(item, dict) for item in value)
    assert kind == "numbers", kind
    return isinstance(value, dict) and all(_fits(item, "number") for item in value.values())


def shape_problem(document: dict[str, Any], shape: dict[str, Any], where: str = "") -> str | None:
    """The first key of `document` whose value is not of the kind `shape` gives it ("lag is "x", expected an
    object"); None when every key present fits. Keys `shape` does not name are not looked at."""
    for key, kind in shape.items():
        if key not in document:
            continue
        value, path = document[key], f"{where}{key}"
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                return f"{path} is {json.dumps(value)[:40]}, expected an object"
            if (problem := shape_problem(value, kind, f"{path}.")) is not None:
                return problem
        elif not _fits(value, kind):
            return f"{path} is {json.dumps(value)[:40]}, expected {kind.rstrip('?')}" + (
                " or null" if kind.endswith("?") or kind == "number" else "")
    return None


def is_loopback(host: str | None) -> bool:
    """Whether `host` (a URL's) names this host's loopback: `localhost`, 127.0.0.0/8, ::1, or ::ffff:127.x."""
    if host is None:
        return False
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


@dataclass(frozen=True)
class WorkerClient:
    base_url: str
    timeout_s: float = 2.0

    def _url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def _get(self, path: str) -> tuple[int, bytes]:
        url = self._url(path)
        try:
            with _OPENER.open(url, timeout=self.timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                # No refusal, no answer. On this host that is a hung process whose connection queue is full (the
                # kernel stops taking connections for it: every scrape adds one); elsewhere it may as well be a host
                # that is gone, and "hung, do not start another" would be the wrong advice.
                waited = f"did not take the connection within {self.timeout_s:g}s"
                if is_loopback(urllib.parse.urlsplit(url).hostname):
                    raise WorkerNotAnswering(f"worker at {url} {waited} (its connection queue is full)") from None
                raise WorkerUnreachable(f"worker unreachable at {url}: it {waited}: its host is down or unreachable, "
                                        "or the worker is hung with its connection queue full") from None
            raise WorkerUnreachable(f"worker unreachable at {url}: {exc.reason}") from None
        except TimeoutError:
            raise WorkerNotAnswering(f"worker at {url} did not answer within {self.timeout_s:g}s") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise WorkerUnreachable(f"worker unreachable at {url}: {exc}") from None

    def _json(self, path: str, body: bytes, shape: dict[str, Any]) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except ValueError:
            raise WorkerUnreachable(
                f"{self._url(path)} did not return JSON (is something else listening there?): {body[:80]!r}"
            ) from None
        if not isinstance(data, dict):
            raise WorkerUnreachable(f"{self._url(path)} returned {type(data).__name__}, expected a JSON object")
        if (problem := shape_problem(data, shape)) is not None:
            raise WorkerUnreachable(f"{self._url(path)} is not a tactical worker's answer ({problem}): is something "
                                    "else listening there?")
        return data

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON) of GET /health: 200 healthy/degraded, 503 critical/failed."""
        status, body = self._get(HEALTH_PATH)
        if status not in _ANSWERED_STATUSES:
            raise WorkerUnreachable(f"{self._url(HEALTH_PATH)} answered HTTP {status}, expected 200 or 503")
        return status, self._json(HEALTH_PATH, body, _HEALTH_SHAPE)

    def state(self) -> dict[str, Any]:
        """The JSON of GET /health/state."""
        status, body = self._get(STATE_PATH)
        if status != 200:
            raise WorkerUnreachable(f"{self._url(STATE_PATH)} answered HTTP {status}, expected 200")
        return self._json(STATE_PATH, body, _STATE_SHAPE)

    def metrics(self) -> dict[str, list[Sample]]:
        """GET /metrics parsed: metric family name → its samples (each with name, labels, value)."""
        status, body = self._get(METRICS_PATH)
        if status != 200:
            raise WorkerUnreachable(f"{self._url(METRICS_PATH)} answered HTTP {status}, expected 200")
        return parse_metrics(body.decode("utf-8", "replace"), source=self._url(METRICS_PATH))


def parse_metrics(text: str, *, source: str = "metrics") -> dict[str, list[Sample]]:
    """Prometheus text exposition → family name → samples. Counters are keyed by family name without `_total`
    (as the parser names them); their samples keep the `_total` name."""
    try:
        return {family.name: list(family.samples) for family in text_string_to_metric_families(text)}
    except ValueError as exc:
        raise WorkerUnreachable(f"{source} is not Prometheus text: {exc}") from None


def sample_value(
    families: dict[str, list[Sample]], sample_name: str, labels: dict[str, str] | None = None
) -> float | None:
    """The value of the first sample named `sample_name` whose labels include `labels`; None if absent."""
    wanted = labels or {}
    for samples in families.values():
        for sample in samples:
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                return float(sample.value)
    return None


def health_level(http_status: int, body: dict[str, Any]) -> CheckStatus:
    """What a /health answer means for a check: state 0 → ok, 1 → warn, 2 (critical) and 3 (failed) → critical.
    An answer without a state code is critical when the worker said 503, else a warning (it is starting)."""
    code = body.get("state_code")
    if isinstance(code, int) and not isinstance(code, bool) and 0 <= code <= 3:
        return (CheckStatus.OK, CheckStatus.WARN, CheckStatus.CRITICAL, CheckStatus.CRITICAL)[code]
    return CheckStatus.CRITICAL if http_status >= 500 else CheckStatus.WARN
