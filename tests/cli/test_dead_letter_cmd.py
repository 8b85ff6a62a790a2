"""`tacticalctl dead-letter list | replay`: reading the dead-letter stream and putting events back."""

from __future__ import annotations

import json
import re
from typing import cast

import numpy as np
import pytest
import redis
from typer.testing import CliRunner

from tacticalctl.app import app
from tests.cli.conftest import WIDE, Ctl
from tests.cli.streams import deliver_without_ack, publish
from worker.alerts import recent_alerts
from worker.events import encode_event
from worker.names import DEAD_LETTER_STREAM, DECISIONS_STREAM, INPUT_STREAM, completed_key
from worker.ops.pending import dead_letter_stuck_entries
from worker.stream_entries import entries


def dead_letters(client: redis.Redis, count: int, reason: str, prefix: str) -> dict[bytes, dict[bytes, bytes]]:
    """`count` real dead letters with `reason`, on a system that has decided events before (else the replay cannot
    know them undecided: there is no tactical_decisions); returns original entry id → original fields."""
    decided_before(client)
    ids = publish(client, count, prefix=prefix)
    deliver_without_ack(client, "ghost", count)
    originals = {entry_id: fields for entry_id, fields in entries(client, INPUT_STREAM) if entry_id in set(ids)}
    dead_letter_stuck_entries(client, reason=reason, min_idle_ms=0, actor="test", apply=True)
    return originals


def decided_before(client: redis.Redis) -> None:
    """A decision of another event before the ones a test dead-letters: tactical_decisions is there, as on any system
    that has decided something."""
    if not client.exists(DECISIONS_STREAM):
        decision(client, "decided-before")


def test_list_shows_each_reason_and_whole_ids_on_a_narrow_terminal_and_beside_a_long_correlation_id(
    redis_client: redis.Redis, redis_url: str
) -> None:
    from typer.testing import CliRunner

    from tacticalctl.app import app

    long_id = "x" * 120
    redis_client.xadd(INPUT_STREAM, {"correlation_id": long_id})
    dead_letters(redis_client, 1, "matrix has NaN in row 3", "narrow")
    redis_client.xadd(DEAD_LETTER_STREAM, {"correlation_id": long_id, "dead_reason": "missing_field: missing symbol",
                                           "dead_entry_id": "1-1"})
    redis_client.xadd(DEAD_LETTER_STREAM, {"correlation_id": "cid\x1b]0;pwned\x07", "dead_reason": "evil\x1b[2J",
                                           "dead_entry_id": "1-2"})
    ids = [entry_id.decode() for entry_id, _ in entries(redis_client, DEAD_LETTER_STREAM)]
    for columns in ("80", "200"):
        result = CliRunner().invoke(app, ["--redis-url", redis_url, "dead-letter", "list"],
                                    env={"COLUMNS": columns, "NO_COLOR": "1"})
        assert result.exit_code == 0, result.output
        flat = result.stdout.replace("\n", "").replace(" ", "").replace("│", "")
        assert "matrixhasNaNinrow3" in flat and "missing_field:missingsymbol" in flat, (columns, result.stdout)
        for entry_id in ids:
            assert entry_id in result.stdout, (columns, entry_id, result.stdout)
        assert "\x1b" not in result.stdout and "evil\\x1b[2J" in result.stdout  # shown, never sent to the terminal


def test_list_shows_reason_deliveries_and_original_id(ctl: Ctl, redis_client: redis.Redis) -> None:
    originals = dead_letters(redis_client, 2, "matrix has NaN", "a")
    result = ctl("dead-letter", "list")
    assert result.exit_code == 0
    assert "matrix has NaN" in result.stdout and "a-0" in result.stdout
    for entry_id in originals:
        assert entry_id.decode() in result.stdout
    doc = json.loads(ctl("dead-letter", "list", "--json").stdout)
    assert doc["total"] == 2
    assert set(doc["entries"][0]) == {"id", "reason", "delivery_count", "original_id", "consumer",
                                      "correlation_id", "original_fields"}
    assert doc["entries"][0]["delivery_count"] == 1


def test_list_filters_by_reason(ctl: Ctl, redis_client: redis.Redis) -> None:
    dead_letters(redis_client, 1, "matrix has NaN", "a")
    dead_letters(redis_client, 1, "unknown synergy type", "b")
    doc = json.loads(ctl("dead-letter", "list", "--reason", "SYNERGY", "--json").stdout)
    assert [e["correlation_id"] for e in doc["entries"]] == ["b-0"]
    assert doc["total"] == 2


def test_replay_dry_run_changes_nothing(ctl: Ctl, redis_client: redis.Redis) -> None:
    dead_letters(redis_client, 2, "stuck", "a")
    before = redis_client.xlen(INPUT_STREAM)
    result = ctl("dead-letter", "replay", "--all")
    assert result.exit_code == 0 and "dry run" in result.stdout
    assert redis_client.xlen(DEAD_LETTER_STREAM) == 2 and redis_client.xlen(INPUT_STREAM) == before


def test_replay_by_id_re_adds_the_original_fields_and_removes_the_dead_letter(
    ctl: Ctl, redis_client: redis.Redis
) -> None:
    originals = dead_letters(redis_client, 2, "stuck", "a")
    dead_ids = [entry_id.decode() for entry_id, _ in entries(redis_client, DEAD_LETTER_STREAM)]
    before = redis_client.xlen(INPUT_STREAM)
    result = ctl("dead-letter", "replay", "--id", dead_ids[0], "--yes", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    new_id = doc["replayed"][dead_ids[0]]
    (_, replayed_fields), = entries(redis_client, INPUT_STREAM, lower=new_id, upper=new_id)
    original_id, original = next(iter(originals.items()))
    # The original fields, and which entry it replays (the duplicate checks do not take it for a resend).
    assert replayed_fields == {**original, b"replayed_from": original_id}
    assert not any(name.startswith(b"dead_") for name in replayed_fields)
    assert redis_client.xlen(INPUT_STREAM) == before + 1
    assert [i.decode() for i, _ in entries(redis_client, DEAD_LETTER_STREAM)] == dead_ids[1:]
    audit = recent_alerts(redis_client, count=1)[-1]
    assert (audit.id, audit.kind, audit.fields["count"]) == (doc["audit_id"], "dead_letter_replay", "1")


def test_replay_all_with_a_reason_takes_only_matching(ctl: Ctl, redis_client: redis.Redis) -> None:
    dead_letters(redis_client, 2, "redis timeout", "a")
    dead_letters(redis_client, 1, "bad matrix", "b")
    result = ctl("dead-letter", "replay", "--all", "--reason", "timeout", "--yes")
    assert result.exit_code == 0 and "replayed 2 dead letters" in result.stdout
    left = entries(redis_client, DEAD_LETTER_STREAM)
    assert [fields[b"dead_reason"] for _, fields in left] == [b"bad matrix"]


def test_replay_needs_a_choice_and_known_ids(ctl: Ctl, redis_client: redis.Redis) -> None:
    assert ctl("dead-letter", "replay").exit_code == 3
    dead_letters(redis_client, 1, "stuck", "a")
    result = ctl("dead-letter", "replay", "--id", "1-1", "--yes")
    assert result.exit_code == 3
    assert "not in synergy_events:dead: 1-1" in result.stderr
    assert redis_client.xlen(DEAD_LETTER_STREAM) == 1


def test_reasons_are_printed_as_written_even_with_brackets(ctl: Ctl, redis_client: redis.Redis) -> None:
    dead_letters(redis_client, 1, "[bold]matrix[/] has 1679 bytes [expected 1680]", "a")
    result = ctl("dead-letter", "list")
    assert "[bold]matrix[/] has 1679 bytes [expected 1680]" in result.stdout


def test_a_command_redis_refuses_is_one_line_and_critical(ctl: Ctl, redis_client: redis.Redis, redis_url: str) -> None:
    # An ACL user without XDEL (as the shipped operator user was): the replay's script is refused mid-command.
    dead_letters(redis_client, 1, "stuck", "a")
    redis_client.execute_command("ACL", "SETUSER", "no-xdel", "on", ">pw", "+@all", "-xdel", "~*")
    try:
        limited = redis_url.replace("redis://", "redis://no-xdel:pw@", 1)
        result = ctl("dead-letter", "replay", "--all", "--yes", redis_url=limited)
    finally:
        redis_client.execute_command("ACL", "DELUSER", "no-xdel")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "Redis refused a command" in result.stderr
    assert "Traceback" not in result.output


def test_replaying_only_dead_letters_without_their_fields_says_so_and_exits_1(
    ctl: Ctl, redis_client: redis.Redis
) -> None:
    bare = cast(bytes, redis_client.xadd(DEAD_LETTER_STREAM, {"dead_reason": "max_deliveries",
                                                              "dead_entry_id": "1-1"})).decode()
    for flags in ((), ("--yes",), ("--yes", "--json")):
        result = ctl("dead-letter", "replay", "--id", bare, *flags)
        assert result.exit_code == 1, (flags, result.stdout, result.stderr)
    for flags in ((), ("--yes",)):
        said = ctl("dead-letter", "replay", "--id", bare, *flags)
        assert "no original fields left" in said.stderr and "replayed" not in said.stdout
    assert redis_client.xlen(INPUT_STREAM) == 0


def test_replay_leaves_events_that_are_still_invalid_unless_told(ctl: Ctl, redis_client: redis.Redis) -> None:
    # A producer sent short matrices; the worker dead-lettered them. A replay would only dead-letter them again,
    # and put the error rate back up: they stay, and the valid one (stuck on a dead worker) goes.
    from worker.producer import make_event, publish_event

    decided_before(redis_client)
    valid = make_event(correlation_id="fine-0", rng=np.random.default_rng(0))
    broken = {**encode_event(make_event(correlation_id="short-0", rng=np.random.default_rng(1))),
              "matrix": b"\x00" * 1676}
    publish_event(redis_client, valid)
    redis_client.xadd(INPUT_STREAM, broken)  # type: ignore[arg-type]  # redis-py: fields, an invariant dict
    deliver_without_ack(redis_client, "ghost", 2)
    dead_letter_stuck_entries(redis_client, reason="stuck on a dead worker", min_idle_ms=0, actor="test", apply=True)
    fine_id, short_id = (entry_id.decode() for entry_id, _ in entries(redis_client, DEAD_LETTER_STREAM))

    dry = ctl("dead-letter", "replay", "--all")
    assert dry.exit_code == 0
    assert "still invalid" in dry.stdout and "matrix_size" in dry.stdout and "replay 1 dead letters" in dry.stdout
    # The table of what is replayed lists only what is; what is left out is listed apart, with why.
    to_replay, left_out = dry.stdout.split("left out (stay in synergy_events:dead)")
    assert fine_id in to_replay and short_id not in to_replay
    assert short_id in left_out and fine_id not in left_out and "still invalid: matrix_size" in left_out
    doc = json.loads(ctl("dead-letter", "replay", "--all", "--yes", "--json").stdout)
    assert list(doc["replayed"]) == [fine_id]
    assert doc["invalid"][short_id].startswith("matrix_size: matrix is 1676 bytes")
    assert [i.decode() for i, _ in entries(redis_client, DEAD_LETTER_STREAM)] == [short_id]

    again = ctl("dead-letter", "replay", "--all", "--yes")
    assert again.exit_code == 1 and "1 are still invalid" in again.stderr
    forced = json.loads(ctl("dead-letter", "replay", "--all", "--yes", "--include-invalid", "--json").stdout)
    assert list(forced["replayed"]) == [short_id] and forced["invalid"] == {}


def test_replay_judges_the_events_by_the_workers_size_limit(ctl: Ctl, redis_client: redis.Redis,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.producer import make_event

    big = {**encode_event(make_event(correlation_id="big-0", rng=np.random.default_rng(1))), "note": "x" * 70_000}
    redis_client.xadd(INPUT_STREAM, big)  # type: ignore[arg-type]  # redis-py: fields, an invariant dict
    deliver_without_ack(redis_client, "ghost", 1)
    dead_letter_stuck_entries(redis_client, reason="payload_too_large: over 65,536", min_idle_ms=0, actor="test",
                              apply=True)
    assert json.loads(ctl("dead-letter", "replay", "--all", "--json").stdout)["invalid"], "too large at the default"
    monkeypatch.setenv("TACTICAL_MAX_EVENT_BYTES", "200000")  # the workers' limit, raised
    doc = json.loads(ctl("dead-letter", "replay", "--all", "--json").stdout)
    assert doc["invalid"] == {} and len(doc["planned"]) == 1


def test_show_prints_every_field_the_matrix_as_its_size(ctl: Ctl, redis_client: redis.Redis) -> None:
    from worker.producer import make_event

    event = encode_event(make_event(correlation_id="shown-0", rng=np.random.default_rng(0)))
    redis_client.xadd(INPUT_STREAM, {**event, "matrix": b"\xff" * 1676})  # type: ignore[dict-item]  # as above
    deliver_without_ack(redis_client, "ghost", 1)
    dead_letter_stuck_entries(redis_client, reason="short matrix", min_idle_ms=0, actor="test", apply=True)
    [(dead_id, _)] = entries(redis_client, DEAD_LETTER_STREAM)

    result = ctl("dead-letter", "show", dead_id.decode())
    assert result.exit_code == 0, result.stderr
    assert "shown-0" in result.stdout and "short matrix" in result.stdout and "<1676 bytes, not text>" in result.stdout
    doc = json.loads(ctl("dead-letter", "show", dead_id.decode(), "--json").stdout)
    assert doc["correlation_id"] == "shown-0" and doc["fields"]["matrix"] == "<1676 bytes, not text>"
    assert doc["fields"]["dead_reason"].startswith("short matrix")
    multi_line = cast(bytes, redis_client.xadd(DEAD_LETTER_STREAM, {
        "correlation_id": "c-2", "symbol": "ES\tX", "dead_reason": "processing_error: line one\nline two",
        "matrix": b"\x00" * 1680}))
    fields = json.loads(ctl("dead-letter", "show", multi_line.decode(), "--json").stdout)["fields"]
    assert fields["dead_reason"] == "processing_error: line one\nline two" and fields["symbol"] == "ES\tX"
    assert fields["matrix"] == "<1680 bytes, not text>"  # zeros decode as text, but are no text to read
    missing = ctl("dead-letter", "show", "1-1")
    assert missing.exit_code == 3 and "not in synergy_events:dead" in missing.stderr


def test_purge_removes_the_chosen_dead_letters_for_good_and_audits_which(ctl: Ctl, redis_client: redis.Redis) -> None:
    dead_letters(redis_client, 2, "matrix has NaN", "bad")
    dead_letters(redis_client, 1, "stuck on a dead worker", "keep")
    before = [entry_id.decode() for entry_id, _ in entries(redis_client, DEAD_LETTER_STREAM)]

    dry = ctl("dead-letter", "purge", "--all", "--reason", "nan")
    assert dry.exit_code == 0 and "dry run: nothing changed" in dry.stdout
    assert redis_client.xlen(DEAD_LETTER_STREAM) == 3

    doc = json.loads(ctl("dead-letter", "purge", "--all", "--reason", "nan", "--yes", "--json").stdout)
    assert doc["applied"] and doc["removed"] == before[:2] and doc["skipped"] == []
    assert [entry_id.decode() for entry_id, _ in entries(redis_client, DEAD_LETTER_STREAM)] == before[2:]
    assert redis_client.xlen(INPUT_STREAM) == 3  # nothing went back to the workers
    (entry,) = recent_alerts(redis_client, count=1)
    assert entry.kind == "dead_letter_purge" and entry.id == doc["audit_id"]
    assert "bad-0" in entry.fields["entries"] and "bad-1" in entry.fields["entries"]

    gone = ctl("dead-letter", "purge", "--id", before[0], "--yes")
    assert gone.exit_code == 3 and "not in synergy_events:dead" in gone.stderr
    assert ctl("dead-letter", "purge").exit_code == 3  # no choice made


def test_purge_at_maxmemory_says_what_it_removed_when_the_audit_entry_is_refused(ctl: Ctl,
                                                                                  redis_client: redis.Redis) -> None:
    # Redis at maxmemory (noeviction) takes the XDELs but refuses the audit entry: the letters are gone for good, so
    # the command says which (exit 1), not "Redis refused a command" as if nothing had happened.
    dead_letters(redis_client, 2, "matrix has NaN", "bad")
    redis_client.config_set("maxmemory", 1)
    try:
        shown = ctl("dead-letter", "purge", "--all", "--yes")
        assert redis_client.xlen(DEAD_LETTER_STREAM) == 0
    finally:
        redis_client.config_set("maxmemory", 0)
    assert shown.exit_code == 1, shown.output
    said = " ".join(shown.stdout.split())
    assert "purged 2 dead letters" in said and "audit entry not written" in said and "record it by hand" in said


def test_replay_leaves_a_dead_letter_decided_between_the_look_and_the_replay(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The completed key is checked again in the replay's own script: a copy decided after the replay looked (a
    resend a worker just committed) is not put back to be acked as a duplicate, and its dead letter stays."""
    import worker.ops.dead_letters as dead_letter_ops
    from worker.names import completed_key

    dead_letters(redis_client, 2, "stuck", "late")
    chosen = dead_letter_ops.select_dead_letters(redis_client)
    redis_client.set(completed_key("late-0"), "1700000000000-0")  # the resend's decision, committed meanwhile
    monkeypatch.setattr(dead_letter_ops, "decided_since",  # the look came before it
                        lambda *args: dead_letter_ops.DecisionLookup({}, {}))
    result = dead_letter_ops.replay_dead_letters(redis_client, chosen, actor="t", apply=True)
    assert result.decided == {chosen[0].id: "1700000000000-0"}
    assert list(result.replayed) == [chosen[1].id] and result.skipped == ()
    assert [e for e, _ in entries(redis_client, DEAD_LETTER_STREAM)] == [chosen[0].id.encode()]


def decision(client: redis.Redis, correlation_id: str) -> str:
    """A decision entry as a worker's commit writes it (correlation_id first, then the rest)."""
    entry_id = client.xadd(DECISIONS_STREAM, {"correlation_id": correlation_id, "action": "long", "execute": "1",
                                              "reason": "executed", "event_id": "1-1"})
    return cast(bytes, entry_id).decode()


def test_replay_leaves_a_dead_letter_decided_since_once_its_completed_key_is_gone(
    ctl: Ctl, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resend decided a day ago: its completed key has expired (or `keys clean` took it), its decision is still in
    tactical_decisions. The replay used to put the event back, and a worker decided it, and traded it, again."""
    import worker.ops.dead_letters as dead_letter_ops

    monkeypatch.setattr(dead_letter_ops, "DECISION_SCAN_PAGE", 2)  # the scan pages through the stream
    dead_letters(redis_client, 2, "stuck", "resent")
    dead_ids = [entry_id.decode() for entry_id, _ in entries(redis_client, DEAD_LETTER_STREAM)]
    for i in range(5):
        decision(redis_client, f"other-{i}")
    decided = decision(redis_client, "resent-1")  # the resend's decision; no completed key left
    decision(redis_client, "other-5")
    assert redis_client.exists(completed_key("resent-1")) == 0

    dry = json.loads(ctl("dead-letter", "replay", "--all", "--json").stdout)
    assert dry["decided"] == {dead_ids[1]: decided} and dry["decisions_trimmed"] == {}
    said = ctl("dead-letter", "replay", "--all")
    to_replay, left_out = said.stdout.split("left out (stay in synergy_events:dead)")
    assert dead_ids[0] in to_replay and dead_ids[1] not in to_replay
    assert f"decided since: decision {decided}" in left_out and "replay 1 dead letters" in said.stdout
    before = redis_client.xlen(INPUT_STREAM)
    doc = json.loads(ctl("dead-letter", "replay", "--all", "--yes", "--json").stdout)
    assert list(doc["replayed"]) == [dead_ids[0]] and doc["decided"] == {dead_ids[1]: decided}
    assert redis_client.xlen(INPUT_STREAM) == before + 1
    assert [i.decode() for i, _ in entries(redis_client, DEAD_LETTER_STREAM)] == [dead_ids[1]]
    again = ctl("dead-letter", "replay", "--all", "--yes")
    assert again.exit_code == 1 and "1 were decided since" in again.stderr


def test_replay_leaves_out_a_dead_letter_the_decisions_stream_no_longer_reaches_back_to_unless_told(
    ctl: Ctl, redis_client: redis.Redis
) -> None:
    """tactical_decisions trimmed (`stream trim`) past the dead-lettered entry: a resend's decision may have gone
    with it. The replay used to put such a dead letter back with a warning and exit 0 — a second decision, and trade,
    if the producer had sent it again. It now leaves it out (exit 1, JSON `unconfirmed`) unless
    --include-unconfirmed; a dead letter the stream still reaches back to is known undecided and replays."""
    dead_letters(redis_client, 1, "stuck", "old")
    decision(redis_client, "other-0")
    kept = decision(redis_client, "other-1")
    redis_client.xtrim(DECISIONS_STREAM, maxlen=1, approximate=False)
    dead_letters(redis_client, 1, "stuck", "new")  # dead-lettered after the first decision kept
    old_id, new_id = (entry_id.decode() for entry_id, _ in entries(redis_client, DEAD_LETTER_STREAM))

    dry = ctl("dead-letter", "replay", "--all", "--json")
    doc = json.loads(dry.stdout)
    assert dry.exit_code == 1 and doc["unconfirmed"] == {old_id: kept}
    assert (doc["decided"], doc["decisions_trimmed"]) == ({}, {})
    said = ctl("dead-letter", "replay", "--all")
    assert said.exit_code == 1, said.stdout
    to_replay, left_out = said.stdout.split("left out (stay in synergy_events:dead)")
    assert new_id in to_replay and old_id not in to_replay
    assert old_id in left_out and "not known to be undecided" in left_out and kept in left_out
    assert "not known to be undecided: 1 left out" in said.stdout and "--include-unconfirmed" in said.stdout
    assert "replay 1 dead letters" in said.stdout

    before = redis_client.xlen(INPUT_STREAM)
    done = ctl("dead-letter", "replay", "--all", "--yes", "--json")
    doc = json.loads(done.stdout)
    assert done.exit_code == 1 and list(doc["replayed"]) == [new_id] and doc["unconfirmed"] == {old_id: kept}
    assert redis_client.xlen(INPUT_STREAM) == before + 1
    assert [i.decode() for i, _ in entries(redis_client, DEAD_LETTER_STREAM)] == [old_id]
    alone = ctl("dead-letter", "replay", "--id", old_id, "--yes")
    assert alone.exit_code == 1 and "1 are not known to be undecided" in alone.stderr
    assert redis_client.xlen(INPUT_STREAM) == before + 1

    told = ctl("dead-letter", "replay", "--id", old_id, "--include-unconfirmed", "--yes", "--json")
    doc = json.loads(told.stdout)
    assert told.exit_code == 0 and list(doc["replayed"]) == [old_id]
    assert (doc["unconfirmed"], doc["decisions_trimmed"]) == ({}, {old_id: kept})
    [audited] = [a for a in recent_alerts(redis_client, count=10) if a.kind == "dead_letter_replay"
                 and a.id == doc["audit_id"]]
    assert audited.fields["unconfirmed_count"] == "1" and "not known to be undecided" in audited.message

    dead_letters(redis_client, 1, "stuck", "newer")
    decision(redis_client, "other-2")
    redis_client.xtrim(DECISIONS_STREAM, maxlen=0, approximate=False)  # emptied, decisions made since included
    emptied = json.loads(ctl("dead-letter", "replay", "--all", "--json").stdout)
    assert list(emptied["unconfirmed"]) == [e.decode() for e, _ in entries(redis_client, DEAD_LETTER_STREAM)]


def test_replay_says_how_many_decisions_it_read_and_shows_a_long_scan_on_a_terminal_only(
    redis_client: redis.Redis, redis_url: str, nobody_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The look for decisions reads tactical_decisions from the earliest dead-lettered entry on, as far as it must,
    in pages: however long, it says how many it read, and draws its progress on stderr where that is a terminal
    (never with --json, never on stdout)."""
    import worker.ops.dead_letters as dead_letter_ops

    monkeypatch.setattr(dead_letter_ops, "DECISION_SCAN_PAGE", 2)
    dead_letters(redis_client, 1, "stuck", "never-decided")
    for i in range(7):
        decision(redis_client, f"other-{i}")

    def run(*args: str, terminal: bool) -> tuple[int, str, str]:
        env = {**WIDE, "TTY_COMPATIBLE": "1" if terminal else "0"}
        result = CliRunner().invoke(app, ["--redis-url", redis_url, "--worker-url", nobody_url, "dead-letter",
                                          "replay", "--all", *args], env=env, catch_exceptions=False)
        ansi = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")  # a terminal's stdout is styled too
        return result.exit_code, ansi.sub("", result.stdout), ansi.sub("", result.stderr)

    code, out, err = run(terminal=True)
    assert code == 0 and "read 7 decisions" in out and "replay 1 dead letters" in out
    assert "reading tactical_decisions" in err and "decisions read" in err and "reading" not in out
    code, out, err = run(terminal=False)
    assert code == 0 and "read 7 decisions" in out and err == ""
    code, out, err = run("--json", terminal=True)
    assert code == 0 and json.loads(out)["decisions_read"] == 7 and err == ""


def test_replay_leaves_out_every_dead_letter_without_a_completed_key_when_there_is_no_decisions_stream(
    ctl: Ctl, redis_client: redis.Redis
) -> None:
    """tactical_decisions deleted (DEL, or a Redis restored without it) after a resend was decided and its completed
    key went: the replay read "no decisions stream" as "nothing ever decided" and put the event back, to be decided,
    and traded, a second time. Such a dead letter is now not known to be undecided (exit 1, JSON `unconfirmed` with
    null, `decisions_gap` missing) unless --include-unconfirmed; one with its completed key is still decided."""
    dead_letters(redis_client, 2, "stuck", "gone")
    decision(redis_client, "gone-0")  # the resend's decision; its completed key expired
    redis_client.set(completed_key("gone-1"), "1700000000000-0")
    redis_client.delete(DECISIONS_STREAM)
    resent_id, keyed_id = (entry_id.decode() for entry_id, _ in entries(redis_client, DEAD_LETTER_STREAM))

    dry = ctl("dead-letter", "replay", "--all", "--json")
    doc = json.loads(dry.stdout)
    assert dry.exit_code == 1 and doc["unconfirmed"] == {resent_id: None} and doc["decisions_gap"] == "missing"
    assert doc["decided"] == {keyed_id: "1700000000000-0"} and doc["decisions_trimmed"] == {}
    said = ctl("dead-letter", "replay", "--all", "--yes")
    assert said.exit_code == 1 and "1 are not known to be undecided" in said.stderr
    assert "there is no decisions stream" in said.stdout and "there is no tactical_decisions to look in" in said.stdout
    assert redis_client.xlen(DEAD_LETTER_STREAM) == 2

    told = ctl("dead-letter", "replay", "--id", resent_id, "--include-unconfirmed", "--yes", "--json")
    doc = json.loads(told.stdout)
    assert told.exit_code == 0 and list(doc["replayed"]) == [resent_id]
    assert (doc["unconfirmed"], doc["decisions_trimmed"], doc["decisions_gap"]) == ({}, {resent_id: None}, "missing")


def test_replay_leaves_out_a_dead_letter_a_later_decision_was_deleted_after_unless_told(
    ctl: Ctl, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resend's decision deleted from the middle of tactical_decisions (XDEL; its first entry stays where it was):
    only the first entry's id was compared, so the replay read "not there" as "not decided" and put the event back.
    Redis 7's max-deleted-entry-id tells it: a dead letter older than the latest decision deleted is not known to be
    undecided (JSON `decisions_gap` deleted); one dead-lettered after it is. A server that does not say what was
    removed (no max-deleted-entry-id: before Redis 7.0) knows undecided only what came after its last decision."""
    dead_letters(redis_client, 1, "stuck", "resent")
    gone = decision(redis_client, "resent-0")  # the resend's decision, its completed key expired
    decision(redis_client, "other-0")
    assert redis_client.xdel(DECISIONS_STREAM, gone) == 1
    dead_letters(redis_client, 1, "stuck", "later")  # dead-lettered after the deletion: nothing after it is gone
    resent_id, later_id = (entry_id.decode() for entry_id, _ in entries(redis_client, DEAD_LETTER_STREAM))
    ms, seq = gone.split("-")
    whole_from = f"{ms}-{int(seq) + 1}"  # every decision after the one deleted is there

    dry = ctl("dead-letter", "replay", "--all", "--json")
    doc = json.loads(dry.stdout)
    assert dry.exit_code == 1 and doc["unconfirmed"] == {resent_id: whole_from} and doc["decisions_gap"] == "deleted"
    assert (doc["decided"], doc["decisions_trimmed"]) == ({}, {})
    said = ctl("dead-letter", "replay", "--all")
    assert said.exit_code == 1
    to_replay, left_out = said.stdout.split("left out (stay in synergy_events:dead)")
    assert later_id in to_replay and resent_id not in to_replay and resent_id in left_out
    assert "deleted from the decisions stream (XDEL" in left_out
    assert "has been deleted from tactical_decisions (XDEL)" in said.stdout and "--include-unconfirmed" in said.stdout
    told = json.loads(ctl("dead-letter", "replay", "--id", resent_id, "--include-unconfirmed", "--json").stdout)
    assert (told["unconfirmed"], told["decisions_trimmed"]) == ({}, {resent_id: whole_from})

    # A server whose XINFO STREAM does not say what was deleted: only a dead letter after the last decision ever made
    # is known undecided (`later` is; `resent` is left out even had the deletion been older than it).
    answer = redis.Redis.xinfo_stream
    monkeypatch.setattr(redis.Redis, "xinfo_stream", lambda client, name, full=False: {
        k: v for k, v in answer(client, name).items() if k != "max-deleted-entry-id"})
    blind = ctl("dead-letter", "replay", "--all", "--json")
    doc = json.loads(blind.stdout)
    assert blind.exit_code == 1 and list(doc["unconfirmed"]) == [resent_id] and doc["decisions_gap"] == "unknown"
    assert "does not say what was removed" in ctl("dead-letter", "replay", "--all").stdout
