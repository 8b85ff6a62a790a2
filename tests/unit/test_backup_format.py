"""The backup's pure parts: key lines, the snapshot's cut-off for completed keys, and when a restore is refused."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import redis

from worker.backup import DumpedKey, StreamsSnapshot, StreamState
from worker.names import DECISIONS_STREAM, INPUT_STREAM
from worker.restore import CommandProbe, RestorePlan, VerifiedArchive, classify_probe_reply
from worker.stream_archive import _pack, _unpack, record_stream


def test_a_dumped_key_survives_its_line_even_when_its_name_is_not_utf8() -> None:
    for dumped in (DumpedKey(b"tactical:completed:\xff\xfe", b"\x00\x01payload\xff", 1_900_000_000_123),
                   DumpedKey(b"synergy_events", b"\x0f" * 100, None)):
        line = dumped.to_line()
        assert line.endswith("\n") and "\n" not in line[:-1]
        assert DumpedKey.from_line(line) == dumped


def test_packed_entry_fields_come_back_byte_for_byte_and_a_cut_or_padded_blob_is_refused() -> None:
    entries = [[b"matrix", bytes(range(256)) * 7, b"symbol", b"ES", b"", b""], [b"\xff\xfe", b"\x00"],
               [b"k", b"v1", b"k", b"v2"]]  # a name may repeat: kept, in order
    blob = _pack(entries)
    assert _unpack(blob, 3) == entries
    for damaged, count in ((blob[:-1], 3), (blob + b"\x00", 3), (blob, 4), (_pack([[b"odd"]]), 1), (_pack([[]]), 1)):
        with pytest.raises(ValueError):
            _unpack(damaged, count)
    record = {"kind": "entries", "stream": INPUT_STREAM, "ids": ["1-1", "1-2", "1-3"],
              "fields": base64.b64encode(blob).decode()}
    assert record_stream(json.dumps(record)) == INPUT_STREAM
    with pytest.raises(ValueError):  # checked when the archive is opened, before anything is written
        record_stream(json.dumps({**record, "ids": ["1-1"]}))
    stream = {"kind": "stream", "stream": INPUT_STREAM, "last_id": "1-3", "entries_added": 3, "max_deleted_id": "0-0",
              "expire_at_ms": None}
    assert record_stream(json.dumps(stream)) == INPUT_STREAM
    pending = {"kind": "pending", "stream": INPUT_STREAM, "group": "g", "id": "1-1", "consumer": "c",
               "deliveries": 2, "idle_ms": 5}
    for broken in ({**stream, "last_id": None}, {**stream, "entries_added": "3"}, {**pending, "deliveries": "x"},
                   {**pending, "idle_ms": True}):
        with pytest.raises((TypeError, ValueError)):
            record_stream(json.dumps(broken))
    missing = dict(stream)
    del missing["last_id"]
    with pytest.raises(KeyError):
        record_stream(json.dumps(missing))


def test_completed_keys_are_cut_off_at_the_snapshots_last_decision() -> None:
    decisions = StreamState(DECISIONS_STREAM, True, 10, "1700000000500-3")
    snapshot = StreamsSnapshot(1_700_000_000_900, (StreamState(INPUT_STREAM, True, 20, "1700000000400-0"),
                                                   decisions), ())
    assert snapshot.decided_up_to == (1_700_000_000_500, 3)


def test_without_a_decisions_stream_only_keys_from_before_the_snapshot_are_kept() -> None:
    snapshot = StreamsSnapshot(1_700_000_000_900, (StreamState(DECISIONS_STREAM, False),), ())
    cutoff = snapshot.decided_up_to
    assert (1_700_000_000_899, 99) <= cutoff < (1_700_000_000_900, 0)


def _plan(**target: object) -> RestorePlan:
    archive = VerifiedArchive(Path("b.tar.gz"), "0" * 64, None, {"created_at": "2026-01-01T00:00:00Z", "keys": {},
                                                                 "files": {"models/CURRENT": {"sha256": "0" * 64}}})
    values: dict[str, object] = {"existing_streams": (), "existing_tactical_keys": 0, "live_workers": (),
                                 "model_conflicts": (), "models_dir": Path("/models")}
    values.update(target)
    return RestorePlan(archive, **values)  # type: ignore[arg-type]


def test_an_empty_target_is_restored_without_force() -> None:
    assert _plan().target_empty and _plan().refusal(force=False) is None


def test_a_non_empty_target_needs_force() -> None:
    plan = _plan(existing_streams=("synergy_events",), existing_tactical_keys=3)
    assert "not empty (1 streams, 3 tactical:* keys)" in (plan.refusal(force=False) or "")
    assert plan.refusal(force=True) is None


def test_model_files_that_differ_need_force() -> None:
    plan = _plan(model_conflicts=("v1/fvg.pt", "CURRENT"))
    assert "2 files in /models differ" in (plan.refusal(force=False) or "")
    assert plan.refusal(force=True) is None


def test_a_running_worker_blocks_a_restore_even_with_force() -> None:
    plan = _plan(live_workers=("host:1",), existing_streams=("synergy_events",))
    for force in (False, True):
        assert (plan.refusal(force=force) or "").startswith("workers are running against the target (host:1)")


@pytest.mark.parametrize(("reply", "verdict"), [
    # Redis 6's answers to what a rebuild uses (XSETID's arity was 3; XGROUP CREATE knew only MKSTREAM; 6.0 had no
    # XGROUP CREATECONSUMER)
    (redis.ResponseError("wrong number of arguments for 'xsetid' command"), "unsupported"),
    (redis.ResponseError("syntax error"), "unsupported"),
    (redis.ResponseError("Unknown subcommand or wrong number of arguments for 'CREATE'. Try XGROUP HELP."),
     "unsupported"),
    (redis.ResponseError("Unknown subcommand or wrong number of arguments for 'CREATECONSUMER'. Try XGROUP HELP."),
     "unsupported"),
    (redis.exceptions.NoPermissionError("this user has no permissions to run the 'xsetid' command"), "refused"),
    (redis.ResponseError("Command # 2 (XSETID tactical:restore:probe:1 5-0) of pipeline caused error: NOPERM this user "
                         "has no permissions to run the 'xsetid' command"), "refused"),
    (redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'."), None),  # the restore's to report
    (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), None),
    (b"1-1", None),
])
def test_a_probe_reply_tells_a_missing_permission_from_an_older_server(reply: object, verdict: str | None) -> None:
    assert classify_probe_reply(reply) == verdict


def test_a_target_that_cannot_run_the_restore_is_refused_naming_the_fix() -> None:
    older = _plan(commands=CommandProbe(unsupported=("XSETID", "XGROUP CREATE")))
    assert "does not run XSETID, XGROUP CREATE" in (older.refusal(force=True) or "")
    assert "Redis 7.0 or newer" in (older.refusal(force=True) or "")
    acl = _plan(commands=CommandProbe(refused=("XSETID",)))
    assert "may not run XSETID" in (acl.refusal(force=True) or "")
    assert "runbook/acl/users.acl" in (acl.refusal(force=True) or "")
    assert acl.refusal(force=True, models_only=True) is None  # Redis is not touched then


def test_a_backup_takes_the_bundles_and_current_not_locks_staging_or_caches(tmp_path) -> None:
    from worker.backup import _model_files

    models = tmp_path / "models"
    for path in ("v1/manifest.json", "v1/fvg.pt", "CURRENT", ".promote.lock", ".staging-x/fvg.pt",
                 "v1/__pycache__/x.pyc", ".CURRENT.7.tmp"):
        (models / path).parent.mkdir(parents=True, exist_ok=True)
        (models / path).write_text("x")
    assert [p.relative_to(models).as_posix() for p in _model_files(models)] == ["CURRENT", "v1/fvg.pt",
                                                                                "v1/manifest.json"]


def test_a_backup_follows_a_linked_bundle_once_and_no_other_link(tmp_path) -> None:
    """A bundle linked from a shared store is archived (the worker follows it); an alias of a bundle here
    (`current -> v1`), a link to the directory itself or to a tree that is no bundle are not followed."""
    from worker.backup import _model_files

    models, store, other = tmp_path / "models", tmp_path / "store", tmp_path / "other"
    for path in ("models/v1/manifest.json", "models/CURRENT", "store/v2/manifest.json", "store/v2/fvg.pt",
                 "other/big.bin"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    (models / "v2").symlink_to(store / "v2", target_is_directory=True)
    (models / "current").symlink_to(models / "v1", target_is_directory=True)
    (models / "self").symlink_to(models, target_is_directory=True)
    (models / "junk").symlink_to(other, target_is_directory=True)
    assert [p.relative_to(models).as_posix() for p in _model_files(models)] == [
        "CURRENT", "v1/manifest.json", "v2/fvg.pt", "v2/manifest.json"]
