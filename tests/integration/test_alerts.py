from __future__ import annotations

import re

import pytest
import redis

from worker import alerts, stream_entries
from worker.alerts import (
    AlertFieldError,
    Severity,
    audit,
    default_actor,
    publish_alert,
    read_alerts,
    recent_alerts,
)
from worker.names import ALERTS_STREAM


def test_alert_is_a_flat_entry_in_tactical_alerts(redis_client: redis.Redis) -> None:
    entry_id = publish_alert(
        redis_client,
        severity=Severity.P0,
        kind="consumer_lag",
        message="consumer lag 6.2 s > 5 s",
        source="host-1:42",
        value="6.2",
    )
    [(stored_id, fields)] = stream_entries.entries(redis_client, ALERTS_STREAM)
    assert stored_id == entry_id
    assert fields[b"severity"] == b"P0"
    assert fields[b"kind"] == b"consumer_lag"
    assert fields[b"message"] == b"consumer lag 6.2 s > 5 s"
    assert fields[b"source"] == b"host-1:42"
    assert fields[b"value"] == b"6.2"
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields[b"ts"])


def test_read_alerts_returns_records_and_pages_on_from_the_last_id(redis_client: redis.Redis) -> None:
    for number in range(5):
        publish_alert(redis_client, severity=Severity.P1, kind="latency", message=f"m{number}", source="w")
    first = read_alerts(redis_client, count=3)
    assert [a.message for a in first] == ["m0", "m1", "m2"]
    assert first[0].severity == Severity.P1
    rest = read_alerts(redis_client, count=10, since_id=first[-1].id)
    assert [a.message for a in rest] == ["m3", "m4"]
    assert read_alerts(redis_client, count=10, since_id=rest[-1].id) == []
    assert [a.message for a in recent_alerts(redis_client, count=2)] == ["m3", "m4"]


def test_audit_records_who_did_what(redis_client: redis.Redis) -> None:
    audit(redis_client, actor="alice@ops-1", action="keys_clean", detail="deleted 3 stale processing keys", count="3")
    [alert] = read_alerts(redis_client, count=10)
    assert alert.severity == Severity.AUDIT
    assert alert.kind == "keys_clean"
    assert alert.message == "deleted 3 stale processing keys"
    assert alert.actor == "alice@ops-1"
    assert alert.fields["count"] == "3"
    assert alert.as_dict()["actor"] == "alice@ops-1"


def test_default_actor_is_user_at_host() -> None:
    assert re.fullmatch(r"[^@\s]+@[^@\s]+", default_actor())


def test_extra_fields_cannot_overwrite_core_fields(redis_client: redis.Redis) -> None:
    with pytest.raises(AlertFieldError, match=r"fields \['ts'\] would overwrite"):
        publish_alert(redis_client, severity=Severity.P2, kind="k", message="m", source="s", note="1", ts="0")
    assert redis_client.xlen(ALERTS_STREAM) == 0


def test_hand_written_entries_are_read_not_hidden(redis_client: redis.Redis) -> None:
    redis_client.xadd(ALERTS_STREAM, {"note": "written with redis-cli"})
    [alert] = read_alerts(redis_client, count=1)
    assert alert.severity == ""
    assert alert.fields == {"note": "written with redis-cli"}


def test_works_with_a_decoding_client(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        publish_alert(client, severity=Severity.P2, kind="info", message="hello", source="cli")
        [alert] = read_alerts(client, count=1)
        assert alert.message == "hello"
    finally:
        client.close()


def test_stream_is_trimmed_approximately(redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts, "ALERTS_MAXLEN", 10)
    for number in range(1000):
        publish_alert(redis_client, severity=Severity.P2, kind="k", message=str(number), source="s")
    length = redis_client.xlen(ALERTS_STREAM)
    assert 10 <= length < 1000
    assert recent_alerts(redis_client, count=1)[0].message == "999"
