"""The end-of-day log archive: a file, or the log piped in (`--log-file -`, a container's `docker-compose logs`)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

from worker.ops.checks import STDIN_LOG, Status, archive_log


def test_a_log_file_is_gzip_copied_into_the_report_dir(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_bytes(b"INFO ready\n" * 50)
    result = archive_log(log, tmp_path / "reports", date="2026-11-26")
    assert result.status is Status.OK
    assert gzip.decompress((tmp_path / "reports" / "worker.log.2026-11-26.gz").read_bytes()) == log.read_bytes()


def test_a_log_piped_on_stdin_is_archived_as_the_worker_log(tmp_path: Path) -> None:
    piped = b"tactical-marl-1  | INFO ready\n" * 50
    result = archive_log(STDIN_LOG, tmp_path / "reports", date="2026-11-26", stdin=io.BytesIO(piped))
    assert result.status is Status.OK and result.value.startswith("stdin → ")
    assert gzip.decompress((tmp_path / "reports" / "worker.log.2026-11-26.gz").read_bytes()) == piped


def test_a_missing_log_file_is_a_warning_and_no_log_file_is_skipped(tmp_path: Path) -> None:
    assert archive_log(tmp_path / "nope.log", tmp_path, date="d").status is Status.WARN
    skipped = archive_log(None, tmp_path, date="d")
    assert skipped.status is Status.OK and skipped.value.startswith("skipped")


def test_a_log_file_that_is_not_a_regular_file_is_named_as_such_and_not_read(tmp_path: Path) -> None:
    for not_a_file in (Path("/dev/zero"), tmp_path):  # a device would be copied for ever; a directory cannot be
        result = archive_log(not_a_file, tmp_path / "reports", date="d")
        assert (result.status, result.value) == (Status.WARN, f"{not_a_file} is not a regular file")
        assert "- to read the log from stdin" in result.next_action
    assert not (tmp_path / "reports").exists()
