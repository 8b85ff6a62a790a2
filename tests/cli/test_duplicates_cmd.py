"""`tacticalctl duplicates`: repeated correlation ids in the input, repeated commands, the worker's counter."""

from __future__ import annotations

import json

import numpy as np
import redis

from tests.cli.conftest import Ctl, WorkerAnswers, counting_worker
from worker.heartbeat import write_heartbeat
from worker.names import COMMANDS_STREAM
from worker.producer import make_event, publish_event
from worker.stream_entries import entries


def publish(client: redis.Redis, *correlation_ids: str) -> None:
    for index, cid in enumerate(correlation_ids):
        publish_event(client, make_event(correlation_id=cid, rng=np.random.default_rng(index)))


def command(client: redis.Redis, cid: str) -> None:
    client.xadd(COMMANDS_STREAM, {"correlation_id": cid, "side": "BUY", "quantity": "1"})


def test_no_duplicates_exit_0(ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]) -> None:
    url, _ = worker_http
    publish(redis_client, "a", "b", "c")
    command(redis_client, "a")
    result = ctl("duplicates", worker_url=url)
    assert result.exit_code == 0, result.stdout
    # The worker at --worker-url, named as it answers: no other has a heartbeat here.
    assert ("tactical_duplicate_events_total: 0 duplicate events caught by 1 worker(s) since each started "
            "(host-a:101 0): events already decided") in " ".join(result.stdout.split())
    assert "no correlation id repeated in the last 15m (3 events)" in result.stdout


def test_a_resent_event_is_a_warning_naming_it(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    url, _ = worker_http
    publish(redis_client, "order-1", "order-2", "order-1", "order-1")
    result = ctl("duplicates", worker_url=url)
    assert result.exit_code == 1
    assert "order-1" in result.stdout and "order-2" not in result.stdout
    doc = json.loads(ctl("duplicates", "--json", worker_url=url).stdout)
    assert set(doc) == {"window_s", "duplicate_events_total", "workers", "worker_error", "input", "commands",
                        "status"}
    assert doc["window_s"] == 900
    [offender] = doc["input"]["offenders"]
    assert (offender["correlation_id"], offender["count"], len(offender["entry_ids"])) == ("order-1", 3, 3)
    assert doc["status"] == "warn"


def test_two_commands_for_one_event_are_critical(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    url, _ = worker_http
    command(redis_client, "trade-7")
    command(redis_client, "trade-8")
    command(redis_client, "trade-7")
    result = ctl("duplicates", worker_url=url)
    assert result.exit_code == 2
    assert "trade-7" in result.stdout and "exactly-once output is broken" in result.stdout


def test_last_limits_the_look_back(ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]) -> None:
    url, _ = worker_http
    publish(redis_client, "old", "old", "x", "y", "z")
    assert ctl("duplicates", "--last", "3", worker_url=url).exit_code == 0
    assert ctl("duplicates", "--last", "5", worker_url=url).exit_code == 1


def test_an_unreachable_worker_still_shows_the_offenders_and_exits_2(ctl: Ctl, redis_client: redis.Redis) -> None:
    publish(redis_client, "again", "again")
    result = ctl("duplicates")
    assert result.exit_code == 2
    assert "duplicate counter unavailable" in result.stdout and "again" in result.stdout


def test_an_id_that_looks_like_markup_is_printed_as_it_is(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    """Correlation ids are any visible ASCII: `[/x]` is Rich's closing tag, and used to end the command in a
    traceback (exit 1)."""
    url, _ = worker_http
    publish(redis_client, "ord[/x]1", "ord[/x]1")
    result = ctl("duplicates", worker_url=url)
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "ord[/x]1" in result.stdout
    triage = ctl("triage", "duplicate-processing", worker_url=url)
    assert "ord[/x]1" in triage.stdout and "Traceback" not in triage.stdout + triage.stderr


def test_an_id_with_an_emoji_code_in_it_is_printed_as_it_is(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    """Ids joined with colons are common (`ES:100:0930`), and `:100:` is one of Rich's emoji codes: printed through
    it, the id an operator reads and copies was `ES💯0930`."""
    url, _ = worker_http
    publish(redis_client, "ES:100:0930", "ES:100:0930")
    for args in (("duplicates",), ("triage", "duplicate-processing")):
        result = ctl(*args, worker_url=url)
        assert "ES:100:0930" in result.stdout, result.stdout + result.stderr  # the triage: 2, no worker alive
        assert "\U0001f4af" not in ascii(result.stdout)


def test_the_window_sees_a_second_trade_however_many_commands_came_after(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    """A thousand commands are half a minute at the runbook's rates: the default look-back is the time window that
    market-check and TacticalDuplicateEvents use, every command of it."""
    url, _ = worker_http
    command(redis_client, "twice")
    command(redis_client, "twice")
    sender = redis_client.pipeline(transaction=False)
    for i in range(2500):
        sender.xadd(COMMANDS_STREAM, {"correlation_id": f"fill-{i}", "side": "BUY", "quantity": "1"})
    sender.execute()
    result = ctl("duplicates", "--json", worker_url=url)
    assert result.exit_code == 2
    assert [o["correlation_id"] for o in json.loads(result.stdout)["commands"]["offenders"]] == ["twice"]
    assert "what each was decided, with its commands: `tacticalctl decision twice`" in ctl(
        "duplicates", worker_url=url).stdout
    assert ctl("duplicates", "--last", "1000", worker_url=url).exit_code == 0  # the count look-back misses it
    report = ctl("market-check", "--json", worker_url=url)
    [step] = [s for s in json.loads(report.stdout)["steps"] if s["step"] == "duplicate events"]
    assert step["status"] == "critical", step


def test_a_replay_of_a_dead_letter_is_not_a_resend(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    """`dead-letter replay` deletes the dead letter and re-adds the event, marked: the copy that was dead-lettered
    was never decided, so the two are not an upstream resending. A corrected event sent after a dead-lettered copy
    (the dead letter still there) is not one either."""
    from worker.names import INPUT_STREAM

    url = _replay_one_and_correct_another(ctl, redis_client, worker_http)
    assert redis_client.xlen(INPUT_STREAM) == 4
    assert ctl("duplicates", worker_url=url).exit_code == 0
    publish(redis_client, "fixed-1")  # a resend of the replayed event: two copies that could be decided
    result = ctl("duplicates", "--json", worker_url=url)
    assert result.exit_code == 1
    assert [o["correlation_id"] for o in json.loads(result.stdout)["input"]["offenders"]] == ["fixed-1"]


def test_last_judges_replays_and_dead_lettered_copies_as_the_window_does(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    """`--last N` is the same check over a count of entries (the runbook's "or `--last 10000`"): a replayed dead
    letter, or a corrected event sent after a dead-lettered copy, used to be listed there as a resend (exit 1) while
    `--window` said none."""
    url = _replay_one_and_correct_another(ctl, redis_client, worker_http)
    assert ctl("duplicates", worker_url=url).exit_code == 0
    result = ctl("duplicates", "--last", "1000", "--json", worker_url=url)
    assert result.exit_code == 0, result.stdout
    assert json.loads(result.stdout)["input"]["offenders"] == []
    publish(redis_client, "fixed-1")  # a resend of the replayed event: two copies that could be decided
    resent = ctl("duplicates", "--last", "1000", "--json", worker_url=url)
    assert resent.exit_code == 1
    assert [o["correlation_id"] for o in json.loads(resent.stdout)["input"]["offenders"]] == ["fixed-1"]


def _replay_one_and_correct_another(ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]) -> str:
    """Two events dead-lettered from a dead consumer: `fixed-1` replayed, `corrected-1` sent again by the upstream
    (its dead letter kept). Returns the worker's URL."""
    from tests.cli.streams import deliver_without_ack
    from worker.names import DEAD_LETTER_STREAM
    from worker.ops.pending import dead_letter_stuck_entries

    publish(redis_client, "fixed-1", "corrected-1")
    deliver_without_ack(redis_client, "ghost", 2)
    dead_letter_stuck_entries(redis_client, reason="bad matrix", min_idle_ms=0, actor="test", apply=True)
    [replay_me] = [e for e, f in entries(redis_client, DEAD_LETTER_STREAM) if f[b"correlation_id"] == b"fixed-1"]
    # Nothing decided yet, so no tactical_decisions: the replay cannot know it undecided unless told.
    assert ctl("dead-letter", "replay", "--id", replay_me.decode(), "--include-unconfirmed", "--yes").exit_code == 0
    publish(redis_client, "corrected-1")  # the upstream's corrected event
    return worker_http[0]


def test_the_counter_of_every_live_worker_is_summed_and_one_not_read_is_a_warning(
    ctl: Ctl, redis_client: redis.Redis, nobody_url: str
) -> None:
    """Scaled out, each worker counts only the duplicates it caught: the command read the worker at --worker-url
    alone, and "other workers count their own" left the operator to find and read them."""
    here, other = counting_worker("host-a:101", 3), counting_worker("host-b:202", 4)
    try:
        write_heartbeat(redis_client, "host-a:101", interval_s=30.0, info={"http": here.url.removeprefix("http://")})
        write_heartbeat(redis_client, "host-b:202", interval_s=30.0, info={"http": f"0.0.0.0:{other.port}"})
        result = ctl("duplicates", worker_url=here.url)
        assert result.exit_code == 0, result.stdout
        said = " ".join(result.stdout.split())
        assert ("tactical_duplicate_events_total: 7 duplicate events caught by 2 worker(s) since each started "
                "(host-a:101 3, host-b:202 4): events already decided") in said
        doc = json.loads(ctl("duplicates", "--json", worker_url=here.url).stdout)
        assert doc["duplicate_events_total"] == 7 and doc["worker_error"] is None and doc["status"] == "ok"
        assert [(w["consumer"], w["duplicate_events_total"], w["error"]) for w in doc["workers"]] == [
            ("host-a:101", 3, None), ("host-b:202", 4, None)]

        write_heartbeat(redis_client, "host-c:303", interval_s=30.0, info={"http": nobody_url.removeprefix("http://")})
        result = ctl("duplicates", worker_url=here.url)
        assert result.exit_code == 1, result.stdout
        said = " ".join(result.stdout.split())
        assert "7 duplicate events caught by 2 worker(s) since each started (host-a:101 3, host-b:202 4)" in said
        assert ("not read, so their duplicates are missing from that total: host-c:303 (worker unreachable at "
                f"{nobody_url}/metrics") in said, result.stdout
        doc = json.loads(ctl("duplicates", "--json", worker_url=here.url).stdout)
        assert doc["duplicate_events_total"] == 7 and doc["status"] == "warn"
        [unread] = [w for w in doc["workers"] if w["consumer"] == "host-c:303"]
        assert unread["duplicate_events_total"] is None and unread["error"].startswith("worker unreachable at")
    finally:
        here.stop()
        other.stop()
