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


def run(*args: str) -> list[str]:
    code = PROBE.format(port=free_port(), args=list(args))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return result.stdout.strip().splitlines()[-2:]


def test_a_health_check_starts_without_torch() -> None:
    assert run("health") == ["exit 2", "torch False"]  # nothing listens: CRITICAL, and without loading torch
    assert run("lag", "--help") == ["exit 0", "torch False"]


def test_the_models_commands_load_when_asked_for() -> None:
    assert run("models", "list", "--models-dir", str(default_models_dir())) == ["exit 0", "torch True"]
