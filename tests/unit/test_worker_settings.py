"""Worker settings: flags over `TACTICAL_*` over defaults, and a refusal that names the variable."""

from __future__ import annotations

import pytest

from worker.cli import build_parser
from worker.settings import SettingsError, WorkerSettings, parse_bool


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("true", True), ("Yes", True), (" on ", True),
                                            ("0", False), ("false", False), ("NO", False), ("off", False)])
def test_a_switch_reads_the_usual_spellings(raw: str, value: bool) -> None:
    assert parse_bool(raw) is value
    settings = WorkerSettings.from_env({"TACTICAL_PARK_NEXT_READ": raw}, consumer="c", models_dir=".")
    assert settings.park_next_read is value


def test_a_switch_is_on_by_default_and_a_flag_overrides_the_environment() -> None:
    assert WorkerSettings.from_env({}, consumer="c", models_dir=".").park_next_read is True
    args = build_parser().parse_args(["--park-next-read", "off"])
    settings = WorkerSettings.from_env({"TACTICAL_PARK_NEXT_READ": "on"}, **vars(args))
    assert settings.park_next_read is False


def test_an_unreadable_switch_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="TACTICAL_PARK_NEXT_READ='sometimes' is not a valid bool"):
        WorkerSettings.from_env({"TACTICAL_PARK_NEXT_READ": "sometimes"})
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(["--park-next-read", "sometimes"])
    assert refused.value.code == 2
