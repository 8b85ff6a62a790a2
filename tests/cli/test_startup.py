"""What starting `tacticalctl` costs: the checks a monitor or a container healthcheck runs every few seconds must not
load torch (~1.5 s and ~200 MB); only the `models` commands do."""

from __future__ import annotations

import subprocess
import sys

from worker.embedded_redis import free_port
from worker.settings import default_models_dir

PROBE = """
import sys
sys.argv = ["tacticalctl", "--worker-url", "http://127.0.0.1:{port}", *{args!r}]
from tacticalctl.app import main
try:
    main()
except SystemExit as exit:
    print("exit", exit.code)
print("torch", "torch" in sys.modules)
"""


def run(*args: str, output: list[str] | None = None) -> list[str]:
    code = PROBE.format(port=free_port(), args=list(args))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = result.stdout.strip().splitlines()
    if output is not None:
        output.extend(lines[:-2])
    return lines[-2:]


def test_a_health_check_starts_without_torch() -> None:
    assert run("health") == ["exit 2", "torch False"]  # nothing listens: CRITICAL, and without loading torch
    assert run("lag", "--help") == ["exit 0", "torch False"]


def test_the_models_commands_load_when_asked_for() -> None:
    assert run("models", "list", "--models-dir", str(default_models_dir())) == ["exit 0", "torch True"]


def test_the_command_list_shows_the_models_group_without_loading_it() -> None:
    shown: list[str] = []
    assert run("--help", output=shown) == ["exit 0", "torch False"]
    (row,) = [line for line in shown if line.startswith("│ models ")]
    assert "Model bundles: list, verify, compile, sign, promote" in row


def test_the_models_group_runs_its_own_help_and_refuses_an_unknown_command() -> None:
    shown: list[str] = []
    assert run("models", "--help", output=shown) == ["exit 0", "torch True"]
    for command in ("list", "verify", "compile", "sign", "promote", "train", "eval"):
        assert any(line.startswith(f"│ {command} ") for line in shown), command
    assert run("models", "no-such-command")[0] == "exit 3"  # a typo: UNKNOWN, as for any command line that fails


def test_python_dash_m_tacticalctl_runs_the_cli() -> None:
    # Where the console script is not on PATH (a checkout on PYTHONPATH, a venv not activated), `python -m tacticalctl`
    # is how one runs it.
    result = subprocess.run([sys.executable, "-m", "tacticalctl", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("tacticalctl ")
    usage = subprocess.run([sys.executable, "-m", "tacticalctl", "lag", "--help"], capture_output=True, text=True,
                           timeout=120)
    assert "Usage: tacticalctl lag" in usage.stdout, usage.stdout  # named as the console script, not "python -m …"
