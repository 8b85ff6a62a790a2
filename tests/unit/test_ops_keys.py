"""Idempotency keys as an operator sees them: owner, age, staleness, and what cleanup would take."""

from __future__ import annotations

import pytest

from worker.ops.keys import KeyKind, describe_key, plan_key_cleanup

NOW_MS = 1_700_000_100_000


def test_a_processing_key_names_its_owner_entry_and_the_entry_age() -> None:
    key = describe_key("tactical:processing:abc", "host-a:12|1700000090000-0", 25_000, now_ms=NOW_MS,
                       live={"host-a:12"})
    assert key.kind is KeyKind.PROCESSING
    assert key.correlation_id == "abc"
    assert (key.owner, key.entry_id, key.owner_alive) == ("host-a:12", "1700000090000-0", True)
    assert key.age_s == 10.0
    assert key.ttl_s == 25.0
    assert not key.stale


def test_a_processing_key_whose_owner_has_no_heartbeat_is_stale() -> None:
    key = describe_key("tactical:processing:abc", "host-b:7|1700000090000-0", 25_000, now_ms=NOW_MS,
                       live={"host-a:12"})
    assert key.owner_alive is False
    assert key.stale


def test_an_unreadable_processing_value_is_stale_not_an_error() -> None:
    key = describe_key("tactical:processing:abc", "garbage", -1, now_ms=NOW_MS, live={"garbage"})
    assert key.owner is None and key.entry_id is None and key.age_s is None
    assert key.ttl_s is None  # no expiry
    assert key.stale


def test_a_completed_key_is_aged_by_its_decision_id() -> None:
    key = describe_key("tactical:completed:abc", "1700000000000-3", 3_600_000, now_ms=NOW_MS, live=set(),
                       completed_ttl_s=86_400)
    assert key.kind is KeyKind.COMPLETED
    assert key.age_s == 100.0
    assert key.entry_id == "1700000000000-3"
    assert not key.stale


def test_a_completed_key_without_a_decision_id_is_aged_by_ttl_math() -> None:
    key = describe_key("tactical:completed:abc", "1", 86_000_000, now_ms=NOW_MS, live=set(), completed_ttl_s=86_400)
    assert key.age_s == 400.0
    unknown = describe_key("tactical:completed:abc", "1", -1, now_ms=NOW_MS, live=set(), completed_ttl_s=86_400)
    assert unknown.age_s is None


def test_cleanup_takes_stale_processing_keys_and_completed_keys_past_the_age_only() -> None:
    live = {"alive:1"}
    stale = describe_key("tactical:processing:s", "dead:2|1700000090000-0", 1000, now_ms=NOW_MS, live=live)
    owned = describe_key("tactical:processing:o", "alive:1|1700000090000-0", 1000, now_ms=NOW_MS, live=live)
    old = describe_key("tactical:completed:old", f"{NOW_MS - 90_000_000}-0", -1, now_ms=NOW_MS, live=live)
    young = describe_key("tactical:completed:young", f"{NOW_MS - 1_000}-0", -1, now_ms=NOW_MS, live=live)
    ageless = describe_key("tactical:completed:x", "not-an-id", -1, now_ms=NOW_MS, live=live)
    plan = plan_key_cleanup([stale, owned, old, young, ageless], older_than_s=24 * 3600)
    assert [k.key for k in plan.stale_processing] == ["tactical:processing:s"]
    assert [k.key for k in plan.old_completed] == ["tactical:completed:old"]


def test_cleanup_refuses_an_age_under_the_duplicate_window() -> None:
    for age in (-1, 0, 899):
        with pytest.raises(ValueError, match="at least 15 min"):
            plan_key_cleanup([], older_than_s=age)
    plan_key_cleanup([], older_than_s=900)
