"""Every operator action that changes something is audited in `tactical_alerts`. When that key holds something other
than a stream, the audit entry could not be written, so the action is refused before it changes anything: exit 2,
one line that says how to move the key aside."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
import redis

from models.bundle import current_bundle_dir, list_bundles, read_current_version
from tests.cli.conftest import Ctl
from tests.cli.streams import deliver_without_ack, publish
from worker.alerts import recent_alerts
from worker.backup import create_backup
from worker.breaker import record_restart
from worker.heartbeat import write_heartbeat
from worker.names import ALERTS_STREAM, DEAD_LETTER_STREAM, processing_key
from worker.ops.pending import dead_letter_stuck_entries
from worker.settings import WorkerSettings, default_models_dir

SHIPPED = current_bundle_dir(default_models_dir())


def _older_bundle_dir() -> Path:
    """The shipped bundle other than CURRENT's (it was trained from it)."""
    older = next(m.bundle_dir for m in list_bundles(default_models_dir()) if m.version != SHIPPED.name)
    assert older is not None  # list_bundles reads each manifest from its bundle's directory
    return older


OLDER = _older_bundle_dir()


def stale_processing_key(client: redis.Redis, tmp_path: Path) -> list[str]:
    seconds, micros = client.time()
    client.set(processing_key("orphan"), f"dead:9|{seconds * 1000 + micros // 1000 - 5000}-0", px=30_000)
    return ["keys", "clean", "--yes"]


def stuck_entries(client: redis.Redis, tmp_path: Path) -> list[str]:
    publish(client, 2)
    deliver_without_ack(client, "ghost", 2)
    write_heartbeat(client, "alive-1", interval_s=10.0, info={})
    time.sleep(0.05)
    return ["pending", "claim", "--to", "alive-1", "--idle", "10", "--yes"]


def poison_entries(client: redis.Redis, tmp_path: Path) -> list[str]:
    publish(client, 2)
    deliver_without_ack(client, "ghost", 2)
    time.sleep(0.05)
    return ["pending", "dead-letter", "--reason", "poison", "--idle", "10", "--yes"]


def dead_letters(client: redis.Redis, tmp_path: Path) -> list[str]:
    publish(client, 2)
    deliver_without_ack(client, "ghost", 2)
    dead_letter_stuck_entries(client, reason="stuck", min_idle_ms=0, actor="test", apply=True)
    assert client.xlen(DEAD_LETTER_STREAM) == 2
    return ["dead-letter", "replay", "--all", "--include-unconfirmed", "--yes"]  # nothing decided: no decisions


def restarts(client: redis.Redis, tmp_path: Path) -> list[str]:
    record_restart(client, "w-a", time.time(), window_s=300.0)
    return ["breaker", "reset", "--yes", "--wait", "0"]


def a_backup(client: redis.Redis, tmp_path: Path) -> list[str]:
    publish(client, 2)
    return ["backup", str(tmp_path / "tactical.tar.gz"), "--no-models"]


def a_models_restore(client: redis.Redis, tmp_path: Path) -> list[str]:
    """A backup with model bundles, restored onto a new host's empty models directory (Redis left as it is)."""
    archive = tmp_path / "with-models.tar.gz"
    create_backup(client, archive, settings=WorkerSettings(), models_dir=SHIPPED.parent, actor="test",
                  source_url="redis://test")
    (tmp_path / "new-host-models").mkdir()
    return ["restore", str(archive), "--models-only", "--models-dir", str(tmp_path / "new-host-models")]


def a_bundle_to_promote(client: redis.Redis, tmp_path: Path) -> list[str]:
    """A models directory with the shipped bundle CURRENT and the older one it was trained from, forced in."""
    models_dir = tmp_path / "models"
    shutil.copytree(SHIPPED, models_dir / SHIPPED.name)
    shutil.copytree(OLDER, models_dir / OLDER.name)
    (models_dir / "CURRENT").write_text(SHIPPED.name + "\n")
    return ["models", "promote", OLDER.name, "--models-dir", str(models_dir), "--yes", "--force"]


def a_rollback(client: redis.Redis, tmp_path: Path) -> list[str]:
    args = a_bundle_to_promote(client, tmp_path)
    return ["models", "rollback", OLDER.name, "--models-dir", args[4], "--yes"]


def everything(client: redis.Redis) -> dict[bytes, bytes | None]:
    return {key: client.dump(key) for key in sorted(cast(list[bytes], client.keys("*")))}  # redis-py: bytes or str


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("setup", [stale_processing_key, stuck_entries, poison_entries, dead_letters, restarts,
                                   a_backup, a_models_restore, a_bundle_to_promote, a_rollback])
def test_an_action_that_could_not_be_audited_is_not_taken(
    setup: Callable[[redis.Redis, Path], list[str]], ctl: Ctl, redis_client: redis.Redis, tmp_path: Path
) -> None:
    args = setup(redis_client, tmp_path)
    redis_client.set(ALERTS_STREAM, "not a stream")
    keys_before, files_before = everything(redis_client), files(tmp_path)

    result = ctl(*args)

    assert result.exit_code == 2, result.stdout + result.stderr
    assert f"{ALERTS_STREAM} is a string, not a stream" in result.stderr and "nothing was changed" in result.stderr
    assert f"redis-cli RENAME {ALERTS_STREAM} {ALERTS_STREAM}:string" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert everything(redis_client) == keys_before
    assert files(tmp_path) == files_before  # no archive left behind, CURRENT untouched


def test_once_the_key_is_moved_aside_the_action_runs_and_starts_a_new_audit_stream(
    ctl: Ctl, redis_client: redis.Redis, tmp_path: Path
) -> None:
    args = stale_processing_key(redis_client, tmp_path)
    redis_client.set(ALERTS_STREAM, "not a stream")
    assert ctl(*args).exit_code == 2
    redis_client.rename(ALERTS_STREAM, f"{ALERTS_STREAM}:string")

    result = ctl(*args)

    assert result.exit_code == 0, result.stdout + result.stderr
    assert not redis_client.exists(processing_key("orphan"))
    assert [a.kind for a in recent_alerts(redis_client, count=5)] == ["keys_clean"]


def test_a_refusal_that_cannot_be_audited_is_still_said(ctl: Ctl, redis_client: redis.Redis, tmp_path: Path) -> None:
    args = a_bundle_to_promote(redis_client, tmp_path)
    (tmp_path / "models" / OLDER.name / "fvg.pt").write_bytes(b"tampered")
    redis_client.set(ALERTS_STREAM, "not a stream")

    result = ctl(*args)

    assert result.exit_code == 2
    assert f"promotion refused: {OLDER.name} failed verification" in result.stderr
    assert "audit entry not written" in result.stderr and "WRONGTYPE" in result.stderr
    assert read_current_version(tmp_path / "models") == SHIPPED.name


@pytest.mark.parametrize("args", [["alerts"], ["breaker", "history"]])
def test_reading_an_alert_history_of_another_type_says_what_it_is_and_how_to_move_it_aside(
    args: list[str], ctl: Ctl, redis_client: redis.Redis
) -> None:
    redis_client.set(ALERTS_STREAM, "not a stream")

    result = ctl(*args)

    assert result.exit_code == 2, result.stdout + result.stderr
    assert f"{ALERTS_STREAM} is a string, not a stream: the alert history and audit trail cannot be read" in (
        result.stderr)
    assert f"redis-cli RENAME {ALERTS_STREAM} {ALERTS_STREAM}:string" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_checks_and_triage_report_an_unreadable_alert_history_and_go_on(
    ctl: Ctl, redis_client: redis.Redis
) -> None:
    redis_client.set(ALERTS_STREAM, "not a stream")

    check = ctl("morning-check", "--json")
    triage = ctl("triage", "breaker-open")

    said = f"{ALERTS_STREAM} is a string, not a stream"
    assert said in check.stdout and "Traceback" not in check.stdout + check.stderr
    assert said in triage.stdout and "Traceback" not in triage.stdout + triage.stderr
    assert check.exit_code == triage.exit_code == 2  # critical: the other steps were still run and reported
