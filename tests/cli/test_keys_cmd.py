"""`tacticalctl keys list | clean`: stale processing keys and old completed keys, dry run versus --yes."""

from __future__ import annotations

import json

import redis

from tests.cli.conftest import Ctl
from worker.alerts import recent_alerts
from worker.breaker import CircuitBreaker, publish_breaker_state
from worker.heartbeat import write_heartbeat
from worker.names import completed_key, processing_key

DAY_MS = 86_400_000


def server_now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def keyspace(client: redis.Redis) -> dict[str, dict[str, str]]:
    """Processing keys of a dead and of a live owner, completed keys two days and half an hour old."""
    now = server_now_ms(client)
    write_heartbeat(client, "alive:1", interval_s=10.0, info={})
    client.set(processing_key("orphan"), f"dead:9|{now - 5000}-0", px=30_000)
    client.set(processing_key("owned"), f"alive:1|{now - 100}-0", px=30_000)
    client.set(completed_key("old"), f"{now - 2 * DAY_MS}-0")
    client.set(completed_key("young"), f"{now - 1_800_000}-0", ex=86_400)
    return {"processing": {"orphan": "stale", "owned": "live"}, "completed": {"old": "old", "young": "young"}}


def test_list_shows_age_ttl_owner_and_liveness(ctl: Ctl, redis_client: redis.Redis) -> None:
    keyspace(redis_client)
    result = ctl("keys", "list")
    assert result.exit_code == 0
    out = result.stdout
    assert "dead:9 (gone)" in out and "alive:1 (alive)" in out
    assert "no expiry" in out and "2d00h" in out
    assert "1 stale processing keys" in out


def test_an_empty_list_says_which_keys_it_looked_for(ctl: Ctl, redis_client: redis.Redis) -> None:
    assert ctl("keys", "list").stdout.strip() == "no idempotency keys"
    redis_client.set(completed_key("done"), "1700000000000-0", ex=3600)
    # Completed keys exist: "none at all" would be wrong; no event is in flight.
    assert ctl("keys", "list", "--kind", "processing").stdout.strip() == "no processing idempotency keys"


def test_list_json_and_check_exit_code(ctl: Ctl, redis_client: redis.Redis) -> None:
    assert ctl("keys", "list", "--check").exit_code == 0
    keyspace(redis_client)
    result = ctl("keys", "list", "--check", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert (doc["processing"], doc["completed"], doc["stale_processing"]) == (2, 2, 1)
    assert set(doc["keys"][0]) == {"key", "kind", "correlation_id", "age_s", "ttl_s", "owner", "owner_alive",
                                   "entry_id", "stale"}
    only_processing = json.loads(ctl("keys", "list", "--kind", "processing", "--json").stdout)
    assert {k["kind"] for k in only_processing["keys"]} == {"processing"}


def test_a_list_cut_short_by_the_limit_says_so(ctl: Ctl, redis_client: redis.Redis) -> None:
    for i in range(7):
        redis_client.set(f"tactical:completed:cid-{i}", f"{1_700_000_000_000 + i}-0", ex=3600)
    doc = json.loads(ctl("keys", "list", "--limit", "5", "--json").stdout)
    assert (doc["completed"], doc["more"]) == (5, ["completed"])
    shown = ctl("keys", "list", "--limit", "5").stdout
    assert "at least 5 completed" in shown and "raise --limit" in shown

    doc = json.loads(ctl("keys", "list", "--limit", "7", "--json").stdout)
    assert (doc["completed"], doc["more"]) == (7, [])


def test_clean_dry_run_changes_nothing(ctl: Ctl, redis_client: redis.Redis) -> None:
    keyspace(redis_client)
    before = sorted(redis_client.keys("tactical:*"))
    result = ctl("keys", "clean")
    assert result.exit_code == 0
    assert "dry run: nothing deleted" in result.stdout and "orphan" in result.stdout and "old" in result.stdout
    assert sorted(redis_client.keys("tactical:*")) == before
    assert recent_alerts(redis_client, count=5) == []


def test_clean_yes_deletes_exactly_the_stale_ones_and_audits(ctl: Ctl, redis_client: redis.Redis) -> None:
    keyspace(redis_client)
    result = ctl("keys", "clean", "--yes", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert sorted(doc["deleted"]) == [completed_key("old"), processing_key("orphan")]
    assert redis_client.exists(processing_key("owned"), completed_key("young")) == 2
    assert redis_client.exists(processing_key("orphan"), completed_key("old")) == 0
    audit = recent_alerts(redis_client, count=1)[-1]
    assert audit.id == doc["audit_id"]
    assert (audit.kind, audit.fields["processing_deleted"], audit.fields["completed_deleted"]) == (
        "keys_clean", "1", "1")


def test_keys_of_another_type_under_the_prefixes_are_left_out_and_left_alone(
    ctl: Ctl, redis_client: redis.Redis
) -> None:
    keyspace(redis_client)
    redis_client.hset(processing_key("a-hash"), mapping={"owner": "dead:9"})
    redis_client.rpush(completed_key("a-list"), "1-0")

    listed = ctl("keys", "list", "--json")
    cleaned = ctl("keys", "clean", "--yes", "--json")

    assert listed.exit_code == 0 and cleaned.exit_code == 0, listed.stderr + cleaned.stderr
    assert {k["correlation_id"] for k in json.loads(listed.stdout)["keys"]} == {"orphan", "owned", "old", "young"}
    assert sorted(json.loads(cleaned.stdout)["deleted"]) == [completed_key("old"), processing_key("orphan")]
    assert redis_client.exists(processing_key("a-hash"), completed_key("a-list")) == 2


def test_clean_older_than_is_honoured(ctl: Ctl, redis_client: redis.Redis) -> None:
    keyspace(redis_client)
    doc = json.loads(ctl("keys", "clean", "--older-than", "20m", "--json").stdout)
    assert sorted(k["correlation_id"] for k in doc["old_completed"]) == ["old", "young"]
    bad = ctl("keys", "clean", "--older-than", "soon")
    assert bad.exit_code == 3 and "24h" in bad.stderr
    # Keys that still guard against a redelivery or a resend being decided (and traded) again are not cleaned.
    for too_young in ("0", "1s", "10m"):
        refused = ctl("keys", "clean", "--older-than", too_young, "--yes")
        assert refused.exit_code == 3 and "at least 15 min" in refused.stderr
    assert redis_client.exists(completed_key("young"), completed_key("old")) == 2


def test_clean_leaves_a_key_re_taken_by_a_live_worker(redis_client: redis.Redis) -> None:
    from worker.ops.keys import clean_keys, plan_key_cleanup, scan_idempotency_keys

    keyspace(redis_client)
    plan = plan_key_cleanup(scan_idempotency_keys(redis_client))
    redis_client.set(processing_key("orphan"), "alive:1|1-0", px=30_000)  # a live worker took it over
    result = clean_keys(redis_client, plan, actor="test", apply=True)
    assert result.deleted == (completed_key("old"),)
    assert result.skipped == (processing_key("orphan"),)
    assert redis_client.get(processing_key("orphan")) == b"alive:1|1-0"


def test_a_refusal_other_than_a_key_of_another_type_is_said_not_taken_for_no_keys(
    ctl: Ctl, redis_client: redis.Redis, redis_url: str
) -> None:
    # An ACL user that may not read the keys (a misconfigured operator account): listing must not say "none".
    keyspace(redis_client)
    publish_breaker_state(redis_client, "alive:1", CircuitBreaker())
    redis_client.execute_command("ACL", "SETUSER", "cannot-read", "on", ">pw", "~*", "&*", "+@all", "-get",
                                 "-hgetall")
    try:
        url = redis_url.replace("redis://", "redis://cannot-read:pw@", 1)
        for args in (("breaker", "status"), ("keys", "list")):
            result = ctl(*args, redis_url=url)
            assert result.exit_code == 2, result.output
            assert "Redis refused a command: this user has no permissions" in result.stderr, result.output
    finally:
        redis_client.execute_command("ACL", "DELUSER", "cannot-read")


def test_clean_at_maxmemory_says_what_it_deleted_when_the_audit_entry_is_refused(
    ctl: Ctl, redis_client: redis.Redis
) -> None:
    # Redis at maxmemory (noeviction) takes the DELs but refuses the audit entry's XADD: the keys are gone, so the
    # operator must be told which, and that the audit trail misses it — not "Redis refused a command", exit 2.
    keyspace(redis_client)
    redis_client.config_set("maxmemory", 1)
    try:
        result = ctl("keys", "clean", "--yes", "--json")
    finally:
        redis_client.config_set("maxmemory", 0)
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert sorted(doc["deleted"]) == [completed_key("old"), processing_key("orphan")]
    assert doc["audit_id"] is None and "maxmemory" in doc["audit_error"]
    assert redis_client.exists(processing_key("orphan"), completed_key("old")) == 0
