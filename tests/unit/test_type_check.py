"""The shipped packages and every test directory are mypy-clean (STYLE.md: type hints everywhere): a type error fails
the suite, as a broken behaviour does. The scope is `[tool.mypy]` in pyproject.toml (worker, tacticalctl, models,
bench, tests/unit, tests/cli, tests/integration, tests/performance, tests/deploy and the test helpers they import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_packages_and_tests_type_check() -> None:
    # The cache in the checkout (.mypy_cache, ignored by git): ~50 s cold, mostly torch's stubs; seconds after.
    result = subprocess.run([sys.executable, "-m", "mypy"], capture_output=True, text=True, cwd=ROOT, timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout
