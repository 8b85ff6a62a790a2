"""What the operator commands print: durations, ages, sparklines, exit codes."""

from __future__ import annotations

import pytest

from tacticalctl.errors import ExitCode
from tacticalctl.formatting import age, exit_code_for, parse_duration, sparkline
from worker.health import CheckStatus


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400.0), ("90m", 5400.0), ("45s", 45.0), ("2d", 172800.0), ("500ms", 0.5), ("30", 30.0),
     (" 1.5h ", 5400.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1h", "1w", "1 hour"])
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="24h"):
        parse_duration(text)


def test_ages_read_naturally() -> None:
    assert [age(None), age(4.25), age(42), age(185), age(7620), age(3 * 86400 + 4 * 3600)] == [
        "-", "4.2s", "42s", "3m05s", "2h07m", "3d04h"]


def test_sparkline_scales_to_at_least_the_floor() -> None:
    assert sparkline([]) == ""
    assert sparkline([0.0, 0.0]) == "▁▁"
    assert sparkline([0.0, 5.0, 10.0]) == "▁▅█"
    assert sparkline([0.1, 0.2], floor_max=5.0) == "▁▁"  # a calm lag stays low


def test_check_levels_become_monitoring_exit_codes() -> None:
    assert [exit_code_for(s) for s in CheckStatus] == [ExitCode.OK, ExitCode.WARNING, ExitCode.CRITICAL]


@pytest.mark.parametrize("text", ["3651d", "100000d", "99999999999h"])
def test_a_duration_past_ten_years_is_refused_not_overflowed(text: str) -> None:
    # `eod --since 100000d` computed a date before year 1 and died with a traceback.
    with pytest.raises(ValueError, match="longer than 3650d"):
        parse_duration(text)
    assert parse_duration("3650d") == 3650 * 86400.0


def test_text_from_redis_cannot_drive_the_terminal() -> None:
    # An ESC in an alert's message reached the terminal as it was.
    from tacticalctl.formatting import plain

    shown = plain("boom\x1b[2J\x07 [bold]x[/] tab\tand\nline")
    assert "\x1b" not in shown and "\x07" not in shown
    assert shown == "boom\\x1b[2J\\x07 \\[bold]x\\[/] tab\tand\nline"


def test_a_groups_unknown_entries_read_is_a_dash_not_none() -> None:
    """Redis reports no entries-read for a group created at an explicit id: the backup and restore tables said None."""
    from rich.console import Console

    from tacticalctl.backup import streams_table
    from worker.backup import StreamState

    state = StreamState("synergy_events", True, 3, "5-0", groups=(
        {"name": "tactical_group", "last_delivered_id": "5-0", "entries_read": None, "pending": 0},))
    console = Console(width=200, record=True)
    console.print(streams_table([state], "streams"))
    text = console.export_text()
    assert "None" not in text and "tactical_group" in text
