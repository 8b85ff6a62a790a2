"""Stream retention (`worker.ops.stream_trim`): entries older than the age go, unless a consumer group still needs
them — pending on a worker, or not read yet — and Redis is trimmed a bounded step at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
import redis

from tests.integration.streams import read_group
from worker import stream_entries
from worker.alerts import recent_alerts
from worker.names import COMMANDS_STREAM, CONSUMER_GROUP, DEAD_LETTER_STREAM, DECISIONS_STREAM, INPUT_STREAM
from worker.ops import stream_trim
from worker.ops.stream_trim import StreamTrimError, plan_trim, trim_streams

HOUR_MS = 3_600_000


def now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def add_old(client: redis.Redis, stream: str, count: int, *, hours_ago: float) -> list[bytes]:
    """`count` entries with ids `hours_ago` in the past (explicit ids: Redis stamps new ones with its clock)."""
    start = now_ms(client) - int(hours_ago * HOUR_MS)
    return [cast(bytes, client.xadd(stream, {"n": str(i)}, id=f"{start}-{i + 1}")) for i in range(count)]


def ids_of(client: redis.Redis, stream: str) -> list[bytes]:
    return [entry_id for entry_id, _ in stream_entries.entries(client, stream)]


def trim(client: redis.Redis, hours: float, streams: tuple[str, ...] = stream_trim.TRIMMED_STREAMS):
    plans = plan_trim(client, hours * 3600, streams)
    return trim_streams(client, plans, older_than_s=hours * 3600, actor="test", apply=True)


def test_old_entries_go_new_ones_stay_and_the_trim_is_audited(redis_client: redis.Redis) -> None:
    old = add_old(redis_client, DECISIONS_STREAM, 5, hours_ago=30)
    new = [redis_client.xadd(DECISIONS_STREAM, {"n": "new"}) for _ in range(3)]

    result = trim(redis_client, 24, (DECISIONS_STREAM,))

    assert ids_of(redis_client, DECISIONS_STREAM) == new
    assert result.removed == {DECISIONS_STREAM: len(old)}
    (entry,) = recent_alerts(redis_client, count=1)
    assert entry.kind == "stream_trim" and entry.severity == "AUDIT" and entry.source == "test"
    assert f"{DECISIONS_STREAM} 5" in entry.message


def test_a_dry_run_changes_nothing(redis_client: redis.Redis) -> None:
    add_old(redis_client, DECISIONS_STREAM, 5, hours_ago=30)
    before = ids_of(redis_client, DECISIONS_STREAM)

    plans = plan_trim(redis_client, 24 * 3600, (DECISIONS_STREAM,))
    result = trim_streams(redis_client, plans, older_than_s=24 * 3600, actor="test", apply=False)

    assert [p.removes_any for p in result.plans] == [True] and not result.applied and result.removed == {}
    assert ids_of(redis_client, DECISIONS_STREAM) == before
    assert recent_alerts(redis_client, count=5) == []


@pytest.mark.parametrize(("old", "new"), [(7, 2_000), (2_000, 7), (0, 5), (1_000, 1_000)])
def test_a_plan_counts_exactly_what_it_would_remove(
        redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, old: int, new: int) -> None:
    monkeypatch.setattr(stream_trim, "COUNT_PAGE", 100)  # pages end inside and at the edges of both runs
    add_old(redis_client, DECISIONS_STREAM, old, hours_ago=30)
    redis_client.xadd(DECISIONS_STREAM, {"n": "new"}, id=f"{now_ms(redis_client) - HOUR_MS}-1")
    for _ in range(new - 1):
        redis_client.xadd(DECISIONS_STREAM, {"n": "new"})

    [plan] = plan_trim(redis_client, 24 * 3600, (DECISIONS_STREAM,))

    assert (plan.would_remove, plan.would_remove_exact) == (old, True)
    assert trim(redis_client, 24, (DECISIONS_STREAM,)).removed == ({DECISIONS_STREAM: old} if old else {})


def test_a_count_past_its_limit_from_both_ends_is_a_lower_bound(redis_client: redis.Redis,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_trim, "COUNT_PAGE", 10)
    monkeypatch.setattr(stream_trim, "COUNT_LIMIT", 30)
    reads: list[int] = []
    real_xrange, real_xrevrange = redis_client.xrange, redis_client.xrevrange

    def counted(read: Callable[..., Any]) -> Callable[..., Any]:
        def read_counted(*args: Any, **kwargs: Any) -> Any:
            reads.append(kwargs["count"])
            return read(*args, **kwargs)
        return read_counted

    monkeypatch.setattr(redis_client, "xrange", counted(real_xrange))
    monkeypatch.setattr(redis_client, "xrevrange", counted(real_xrevrange))
    add_old(redis_client, DECISIONS_STREAM, 45, hours_ago=30)
    [redis_client.xadd(DECISIONS_STREAM, {"n": "new"}) for _ in range(40)]

    [plan] = plan_trim(redis_client, 24 * 3600, (DECISIONS_STREAM,))

    assert (plan.would_remove, plan.would_remove_exact) == (30, False)
    assert sum(reads) == 60  # 30 entries read from each end, no more


def test_entries_a_group_has_pending_or_not_read_are_kept(redis_client: redis.Redis) -> None:
    """Old entries: 0-1 read and acked, 2 delivered and still pending on a dead worker, 3-4 acked, 5-6 not read."""
    ids = add_old(redis_client, INPUT_STREAM, 7, hours_ago=30)
    redis_client.xgroup_create(INPUT_STREAM, CONSUMER_GROUP, id="0")
    delivered = read_group(redis_client, "ghost", 5)
    redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, *[entry_id for entry_id, _ in delivered if entry_id != ids[2]])

    [plan] = plan_trim(redis_client, 24 * 3600, (INPUT_STREAM,))
    assert plan.cutoff_id == ids[2].decode() and plan.cutoff_reason == f"group {CONSUMER_GROUP}: oldest pending entry"
    trim(redis_client, 24, (INPUT_STREAM,))
    assert ids_of(redis_client, INPUT_STREAM) == ids[2:]  # the pending one and all after it

    redis_client.xack(INPUT_STREAM, CONSUMER_GROUP, ids[2])  # decided at last: now only the unread hold it back
    [plan] = plan_trim(redis_client, 24 * 3600, (INPUT_STREAM,))
    assert plan.cutoff_reason == f"group {CONSUMER_GROUP}: entries not read yet"
    trim(redis_client, 24, (INPUT_STREAM,))
    assert ids_of(redis_client, INPUT_STREAM) == ids[5:]
    assert [e for _, e in read_group(redis_client, "w")] == [
        {b"n": b"5"}, {b"n": b"6"}]  # still delivered


def test_without_the_workers_group_no_input_entry_is_trimmed(redis_client: redis.Redis) -> None:
    """The worker creates its group at 0 when it first starts: events published before are still to be decided."""
    waiting = add_old(redis_client, INPUT_STREAM, 3, hours_ago=30)
    redis_client.xgroup_create(INPUT_STREAM, "downstream", id="$")  # another reader's group does not stand for it

    result = trim(redis_client, 24, (INPUT_STREAM,))

    assert ids_of(redis_client, INPUT_STREAM) == waiting and result.removed == {}
    assert "not created yet" in result.plans[0].cutoff_reason


def test_a_group_on_an_output_stream_holds_its_unread_entries(redis_client: redis.Redis) -> None:
    """A downstream system reading the commands through a group of its own keeps what it has not read."""
    ids = add_old(redis_client, COMMANDS_STREAM, 4, hours_ago=30)
    redis_client.xgroup_create(COMMANDS_STREAM, "execution", id=ids[1])

    trim(redis_client, 24, (COMMANDS_STREAM,))

    assert ids_of(redis_client, COMMANDS_STREAM) == ids[2:]


def test_a_long_trim_goes_in_bounded_steps_and_ends_exact(redis_client: redis.Redis,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_trim, "TRIM_STEP", 150)
    steps: list[dict] = []
    real_xtrim = redis_client.xtrim

    def counting_xtrim(*args, **kwargs):
        steps.append(kwargs)
        return real_xtrim(*args, **kwargs)

    monkeypatch.setattr(redis_client, "xtrim", counting_xtrim)
    old = add_old(redis_client, DECISIONS_STREAM, 1234, hours_ago=30)
    new = [redis_client.xadd(DECISIONS_STREAM, {"n": "new"}) for _ in range(3)]

    result = trim(redis_client, 24, (DECISIONS_STREAM,))

    assert ids_of(redis_client, DECISIONS_STREAM) == new
    assert result.removed == {DECISIONS_STREAM: len(old)}
    bounded = [s for s in steps if s.get("approximate")]
    assert len(bounded) >= 1234 // 150 and all(s["limit"] == 150 for s in bounded)
    assert steps[-1].get("approximate") is False  # the last node's remainder, exactly


def test_what_it_does_not_trim_is_refused(redis_client: redis.Redis) -> None:
    with pytest.raises(StreamTrimError, match="dead letters wait for an operator"):
        plan_trim(redis_client, 3600, (DEAD_LETTER_STREAM,))
    with pytest.raises(StreamTrimError, match="> 0"):
        plan_trim(redis_client, 0, (DECISIONS_STREAM,))


def test_missing_streams_are_planned_as_empty(redis_client: redis.Redis) -> None:
    result = trim(redis_client, 24)
    assert [(p.stream, p.length, p.removes_any, p.cutoff_reason) for p in result.plans] == [
        (s, 0, False, "no such stream") for s in stream_trim.TRIMMED_STREAMS]
    assert result.removed == {} and result.audit_id is None  # nothing trimmed, nothing audited
