"""CLI conventions every command shares: NO_COLOR, shell completion, no tracebacks."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.cli.conftest import Ctl

COLOUR = re.compile(r"\x1b\[(3[0-7]|9[0-7]|38;)")  # a foreground colour escape
CTL = [sys.executable, "-c", "from tacticalctl.app import main; main()"]


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CTL, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "150", **env})


def test_no_color_removes_colour_even_when_colour_is_forced(redis_url: str, nobody_url: str) -> None:
    args = ["--redis-url", redis_url, "--worker-url", nobody_url, "morning-check"]
    coloured = run(args, FORCE_COLOR="1")
    assert COLOUR.search(coloured.stdout), "FORCE_COLOR alone colours the status column"
    plain = run(args, FORCE_COLOR="1", NO_COLOR="1")
    assert plain.returncode == coloured.returncode == 2
    assert not COLOUR.search(plain.stdout)


def test_shell_completion_completes_nouns_verbs_and_alert_names() -> None:
    def complete(words: str) -> str:
        env = {"_TACTICALCTL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
        return subprocess.run(["tacticalctl"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, **env}).stdout

    assert "reset" in complete("tacticalctl breaker re").split()
    assert "morning-check" in complete("tacticalctl morn").split()
    assert "TacticalP99LatencyHigh" in complete("tacticalctl triage TacticalP99").split()


def test_an_unreachable_redis_is_one_line_on_stderr_and_critical(ctl: Ctl) -> None:
    result = ctl("keys", "list", redis_url="redis://127.0.0.1:1/2")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "Redis unreachable" in result.stderr
    assert "Traceback" not in result.stderr
