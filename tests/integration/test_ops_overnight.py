"""The morning check's overnight step, read from the streams of a real Redis: the runbook's P99/P50 bounds judge
the worker's own time on an event; time an event queued (a worker down overnight) is end-to-end latency, a warning
of its own, not a latency breach that would page all day."""

from __future__ import annotations

import time
from typing import cast

import pytest
import redis
from redis.typing import EncodableT, FieldT

from worker.decision_entry import timing_fields
from worker.names import DECISIONS_STREAM, INPUT_STREAM
from worker.ops.checks import Status, check_overnight_performance
from worker.ops.sources import Sources
from worker.settings import default_models_dir


def write_decisions(client: redis.Redis, *, queued_ms: int, inference_ms: float, count: int = 50) -> None:
    start = int(time.time() * 1000) - 600_000
    for i in range(count):
        event_ms = start + i * 10
        client.xadd(INPUT_STREAM, {"correlation_id": f"c{i}"}, id=f"{event_ms}-0")
        fields = {"correlation_id": f"c{i}", "event_id": f"{event_ms}-0", "execute": "0",
                  **timing_fields({"validate": 0.05, "inference": inference_ms})}
        # redis-py's fields are an invariant dict of any encodable key and value: a dict[str, str] is not one.
        client.xadd(DECISIONS_STREAM, cast(dict[FieldT, EncodableT], fields), id=f"{event_ms + queued_ms}-0")


def overnight(redis_url: str):
    return check_overnight_performance(Sources(redis_url, "http://127.0.0.1:1", default_models_dir()), 16 * 3600)


def test_events_that_queued_behind_an_outage_warn_but_do_not_breach_the_p99(redis_url, redis_client) -> None:
    write_decisions(redis_client, queued_ms=40_000, inference_ms=0.2)
    result = overnight(redis_url)
    assert result.status is Status.WARN, result.value
    assert "events queued" in result.value, result.value
    assert result.details["service"]["p99_ms"] == pytest.approx(0.25)
    assert result.details["latency"]["p99_ms"] == 40_000


def test_a_slow_worker_is_critical_however_short_the_queue(redis_url, redis_client) -> None:
    write_decisions(redis_client, queued_ms=180, inference_ms=150.0)
    result = overnight(redis_url)
    assert result.status is Status.CRITICAL, result.value
    assert "p99-latency" in result.next_action


def test_a_quiet_healthy_night_is_ok(redis_url, redis_client) -> None:
    write_decisions(redis_client, queued_ms=3, inference_ms=0.2)
    assert overnight(redis_url).status is Status.OK
