"""`tactical-worker`'s command line: every setting is a flag, documented where operators look."""

from __future__ import annotations

import re
from pathlib import Path

from worker.cli import build_parser
from worker.settings import setting_defaults

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
