"""The chaos soak, short: real worker processes SIGKILLed, stalled and restarted, Redis (AOF, fsync always) restarted
by SIGKILL and by SIGTERM, while events flow — then nothing lost, nothing doubled, nothing pending. And the counting
itself, on hand-made tallies."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from bench.chaos import ChaosConfig, ChaosConfigError, StreamTally, chaos_counts, pause_before_next, run_chaos


def tally(**changes: object) -> StreamTally:
    base: dict[str, object] = {
        "decided": Counter({"a": 1, "b": 1, "c": 1}),
        "executed": Counter({"a": 1}),
        "commands": Counter({"a": 1}),
        "dead": Counter({"bad": 1}),
        "dead_entries": Counter({"1-0": 1}),
        "dead_reasons": Counter({"matrix_not_finite": 1}),
        "input_entries": 4,
        "pending": 0,
        "undelivered": 0,
    }
    return StreamTally(**{**base, **changes})  # type: ignore[arg-type]


SENT = ["a", "b", "c", "bad"]


def test_a_clean_tally_has_no_violations() -> None:
    counts = chaos_counts(SENT, ["bad"], tally())
    assert (counts.sent, counts.decided, counts.executed, counts.dead_lettered, counts.lost) == (4, 3, 1, 1, 0)
    assert counts.violations() == []


def test_a_sent_id_neither_decided_nor_dead_lettered_is_lost() -> None:
    counts = chaos_counts([*SENT, "d"], ["bad"], tally())
    assert counts.lost == 1
    assert counts.violations() == ["lost = 1"]


@pytest.mark.parametrize(
    ("changes", "violation"),
    [
        ({"decided": Counter({"a": 2, "b": 1, "c": 1})}, "duplicate_decisions = 1"),
        ({"commands": Counter({"a": 3})}, "duplicate_commands = 2"),
        ({"commands": Counter({"a": 1, "b": 1})}, "commands_without_execution = 1"),
        ({"dead_entries": Counter({"1-0": 2})}, "duplicate_dead_letters = 1"),
        ({"decided": Counter({"a": 1, "b": 1, "c": 1, "bad": 1})}, "invalid_decided = 1"),
        ({"pending": 3}, "pending = 3"),
        ({"undelivered": 2}, "undelivered = 2"),
    ],
)
def test_each_kind_of_double_or_leftover_is_a_violation(changes: dict[str, object], violation: str) -> None:
    assert chaos_counts(SENT, ["bad"], tally(**changes)).violations() == [violation]


def test_one_id_sent_twice_and_dead_lettered_from_both_entries_is_not_a_double() -> None:
    counts = chaos_counts(SENT, ["bad"], tally(dead=Counter({"bad": 2}), dead_entries=Counter({"1-0": 1, "2-0": 1})))
    assert counts.violations() == []


def test_options_out_of_range_are_refused_by_name() -> None:
    with pytest.raises(ChaosConfigError, match="--kill-interval-ms"):
        ChaosConfig(kill_interval_ms=(500, 100))
    with pytest.raises(ChaosConfigError, match="--stall-fraction"):
        ChaosConfig(stall_fraction=1.5)
    result = subprocess.run([sys.executable, "-m", "bench.chaos", "--events", "0"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "--events must be at least 1" in result.stderr


def test_short_soak_under_sigkill_stalls_and_redis_restarts_loses_and_doubles_nothing(tmp_path) -> None:
    config = ChaosConfig(
        events=2000,
        workers=3,
        rate=250.0,
        kill_interval_ms=(300, 700),
        redis_restarts=2,  # one SIGKILL, one SIGTERM
        redis_down_ms=300,
        stall_fraction=0.25,
        min_worker_kills=3,
        invalid_every=50,
        max_seconds=100.0,
        run_dir=tmp_path / "chaos",
    )

    report = run_chaos(config)

    c, f = report.counts, report.faults
    assert f.worker_kills >= 3
    assert (f.redis_sigkill_restarts, f.redis_sigterm_restarts) == (1, 1)
    assert report.settled, report.as_dict()
    assert c.sent == 2000 and c.sent_invalid == 40
    assert c.lost == 0, report.as_dict()
    assert c.duplicate_decisions == 0 and c.duplicate_commands == 0 and c.commands_without_execution == 0
    assert c.duplicate_dead_letters == 0
    assert c.pending == 0 and c.undelivered == 0
    assert c.decided == 1960 and c.dead_lettered == 40 and c.invalid_decided == 0
    assert f.unexpected_worker_exits == 0, f.exit_logs
    assert report.ok, report.violations


def test_the_producer_never_sleeps_a_negative_time() -> None:
    """An event can fall due between the producer's look at the clock and its sleep: the soak's producer thread died
    on `sleep length must be non-negative` (a 20,000-event soak, 2026-11-29 evening), which ended the soak."""
    assert pause_before_next(9, 1000.0, 0.0101) == 0.0  # due at 10 ms, already past
    assert pause_before_next(9, 1000.0, 0.0095) == pytest.approx(0.0005)
    assert pause_before_next(0, 10.0, 0.0) == 0.01  # at most 10 ms: it looks for a stop that often
