"""`tactical-worker`'s command line: every setting is a flag, documented where operators look."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

from worker.cli import EXIT_CONFIG_ERROR, build_parser, main
from worker.settings import WorkerSettings, setting_defaults
from worker.version import find_build_commit

README = Path(__file__).resolve().parents[2] / "README.md"


def test_help_names_each_flags_environment_variable_and_default_once() -> None:
    shown = " ".join(build_parser().format_help().split())  # unwrapped
    assert "(default: None)" not in shown  # unset flags fall back to the env, then the default: never None
    for name, env, default, _ in setting_defaults():
        assert f"[env {env}; default {default}]" in shown, name


def test_the_readme_settings_table_lists_every_setting() -> None:
    rows = set(re.findall(r"^\| `(--[a-z0-9-]+)` \| `(TACTICAL_[A-Z0-9_]+)` \|", README.read_text(), re.MULTILINE))
    expected = {("--" + name.replace("_", "-"), env) for name, env, _, _ in setting_defaults()}
    assert expected <= rows, sorted(expected - rows)


@pytest.mark.parametrize(
    ("argv", "environ", "named"),
    [
        (["--batch-size", "0"], {}, "--batch-size (TACTICAL_BATCH_SIZE) is 0: it must be at least 1"),
        (["--block-ms", "0"], {}, "--block-ms (TACTICAL_BLOCK_MS) is 0"),  # 0 would block for ever
        ([], {"TACTICAL_HEARTBEAT_INTERVAL_S": "nan"}, "TACTICAL_HEARTBEAT_INTERVAL_S) is nan: give a finite number"),
        ([], {"TACTICAL_HEALTH_INTERVAL_S": "-1"}, "it must be more than 0"),
        (["--log-level", "loud"], {}, "one of DEBUG, INFO, WARNING, ERROR"),
        (["--http-addr", "8001"], {}, "give HOST:PORT"),
        # Polled less often, a live bundle would read as stale (critical after 15 min unconfirmed) between polls
        (["--model-poll-s", "1200"], {}, "--model-poll-s (TACTICAL_MODEL_POLL_S) is 1200.0: it must be at most 300"),
        # Its TTL (2.5 intervals) would outlive the worker-down alert's minute: triage would read a dead worker as live
        ([], {"TACTICAL_HEARTBEAT_INTERVAL_S": "3600"},
         "--heartbeat-interval-s (TACTICAL_HEARTBEAT_INTERVAL_S) is 3600.0: it must be at most 20"),
    ],
)
def test_a_value_the_worker_cannot_work_with_is_one_line_and_exit_2(
    argv: list[str], environ: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    # Refused before anything starts: no Redis (nothing listens on this URL), no models loaded.
    assert main(["--redis-url", "redis://127.0.0.1:1/2", *argv]) == EXIT_CONFIG_ERROR
    error = capsys.readouterr().err
    assert error.startswith("tactical-worker: ") and named in error and error.count("\n") == 1


def test_the_limits_tests_and_operators_rely_on_are_allowed() -> None:
    # A restart limit of 0 opens the breaker on any start (a maintenance hold); a grace or recovery of 0 is "at once".
    settings = WorkerSettings.from_env({}, breaker_restart_limit=0, shutdown_grace_s=0.0, health_recovery_s=0.0,
                                       http_addr="127.0.0.1:0")
    assert settings.breaker_restart_limit == 0 and settings.http_port == 0


def test_the_longest_heartbeat_interval_lets_a_dead_workers_heartbeat_lapse_before_the_worker_down_alert() -> None:
    # TacticalWorkerDown fires after a minute without a scrape; by then `tacticalctl triage worker-down` (and name
    # claiming, stale-key and consumer pruning) must no longer read the dead worker as live.
    from worker.heartbeat import heartbeat_ttl_ms

    settings = WorkerSettings.from_env({"TACTICAL_HEARTBEAT_INTERVAL_S": "20"})
    assert heartbeat_ttl_ms(settings.heartbeat_interval_s) / 1e3 < 60


def test_by_default_a_dead_workers_entries_are_reclaimed_before_the_lag_warning() -> None:
    # Pending past min-idle, found within one claim interval: at the 5 s default every other worker went critical
    # (lag > 5 s) after one crash.
    from worker.health import DEFAULT_THRESHOLDS

    settings = WorkerSettings()
    assert (settings.claim_min_idle_ms + settings.claim_interval_ms) / 1e3 <= DEFAULT_THRESHOLDS.lag_warn_s


def test_version_prints_the_installed_release(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    commit = find_build_commit() or "unknown"
    assert capsys.readouterr().out.strip() == f"tactical-worker {version('tactical-marl')} (commit {commit})"


def test_starting_does_not_ask_git_only_version_does(monkeypatch: pytest.MonkeyPatch) -> None:
    # A slow or hung git (a network home directory) must not delay every start of the worker, nor its --help.
    def no_git(program: str) -> str:
        raise AssertionError("version_line called without --version")

    monkeypatch.setattr("worker.cli.version_line", no_git)
    assert build_parser().parse_args(["--batch-size", "8"]).batch_size == 8
    assert "--version" in build_parser().format_help()
