"""Which release and commit of tactical-marl this is: what `--version`, `/health`, `/health/state` and
`tactical_build_info` say, so an operator can tell which code each worker host runs (two checkouts of one release at
different commits say different things)."""

from __future__ import annotations

import functools
import os
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "tactical-marl"
# Set by the image (tactical.Dockerfile's TACTICAL_COMMIT build argument): an installed copy has no git history.
BUILD_COMMIT_ENV = "TACTICAL_BUILD_COMMIT"
# The checkout this code runs from, when it runs from one (an editable install, or the tests).
SOURCE_ROOT = Path(__file__).resolve().parents[1]
_GIT_TIMEOUT_S = 5.0


def software_version() -> str:
    """The installed distribution's version; "unknown" when run from a checkout that was never installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


SOFTWARE_VERSION = software_version()  # read once, at import: it does not change while a process runs


def checkout_commit(root: Path) -> str | None:
    """The commit `root` (a git checkout) has out, 12 hex digits, with "-dirty" when tracked files differ from it;
    None when `root` is not a checkout's top or git cannot say. Only `root` itself is asked: code installed into
    some other repository's tree must not report that repository's commit."""
    if not (root / ".git").exists():
        return None
    try:
        described = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12", "--exclude=*"],
            capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return described.stdout.strip() or None


def find_build_commit(root: Path = SOURCE_ROOT, environ: dict[str, str] | None = None) -> str | None:
    """The checkout's own commit when running from one, else what the image recorded at build time, else None."""
    environ = dict(os.environ) if environ is None else environ
    return checkout_commit(root) or environ.get(BUILD_COMMIT_ENV, "").strip() or None


@functools.cache
def build_commit() -> str | None:
    """`find_build_commit`, asked once per process (a git call): a running process keeps the code it loaded."""
    return find_build_commit()


def release() -> dict[str, str | None]:
    """The fields every version report carries: the release and the commit (None: not known)."""
    return {"version": SOFTWARE_VERSION, "commit": build_commit()}


def version_line(program: str) -> str:
    """What `--version` prints: `tacticalctl 0.1.0 (commit 0123456789ab)`."""
    return f"{program} {SOFTWARE_VERSION} (commit {build_commit() or 'unknown'})"
