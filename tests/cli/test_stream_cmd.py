"""`tacticalctl stream info`: XINFO STREAM / GROUPS / CONSUMERS with heartbeat liveness."""

from __future__ import annotations

import json

import redis

from tests.cli.conftest import Ctl
from tests.cli.streams import deliver_without_ack, publish
from worker.heartbeat import write_heartbeat


def test_info_tables_name_groups_consumers_and_liveness(ctl: Ctl, redis_client: redis.Redis) -> None:
    publish(redis_client, 4)
    deliver_without_ack(redis_client, "ghost", 2)
    deliver_without_ack(redis_client, "alive-1", 1)
    write_heartbeat(redis_client, "alive-1", interval_s=10.0, info={})
    write_heartbeat(redis_client, "starting-2", interval_s=10.0, info={})
    result = ctl("stream", "info")
    assert result.exit_code == 0
    out = result.stdout
    assert "tactical_group" in out and "entries added" in out
    assert "no heartbeat" in out and "alive" in out and "starting-2" in out
    doc = json.loads(ctl("stream", "info", "--json").stdout)
    assert (doc["length"], doc["entries_added"]) == (4, 4)
    (group,) = doc["groups"]
    assert (group["pending"], group["lag"], group["entries_read"]) == (3, 1, 3)
    assert {c["name"]: c["alive"] for c in group["consumers"]} == {"ghost": False, "alive-1": True}
    assert doc["live_without_group"] == ["starting-2"]


def test_info_of_a_missing_stream_says_so(ctl: Ctl) -> None:
    result = ctl("stream", "info", "--stream", "nope")
    assert result.exit_code == 3
    assert "stream 'nope' does not exist" in result.stderr


def test_info_of_a_key_of_another_type_names_its_type(ctl: Ctl, redis_client: redis.Redis) -> None:
    redis_client.set("not-a-stream", "x")
    result = ctl("stream", "info", "--stream", "not-a-stream")
    assert result.exit_code == 3
    assert "'not-a-stream' is a string, not a stream" in result.stderr
