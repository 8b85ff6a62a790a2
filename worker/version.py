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
_GIT_TIMEOUT_S = 2.0  # each of two calls: a slow disk must not hold a worker's start


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
    if not is_checkout(root):
        return None
    try:
        head = _git(root, "rev-parse", "--short=12", "HEAD")
        changed = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return (f"{head}-dirty" if changed else head) or None


def is_checkout(root: Path) -> bool:
    return (root / ".git").exists()


def _git(root: Path, *args: str) -> str:
    """git asked about `root` alone: no GIT_DIR or GIT_INDEX_FILE inherited from a hook or a shell (they would name
    another repository's commit), no index.lock taken (an operator's git in the same checkout must not fail on it),
    and `root` trusted whoever owns it (this process already runs the code there; git would refuse a checkout owned
    by another user, and the commit would be unknown; git before 2.38 ignores safe.directory given here, and such a
    checkout's commit is unknown there)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GIT_")}
    return subprocess.run(
        ["git", "--no-optional-locks", "-c", f"safe.directory={root}", "-C", str(root), *args],
        capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=True, env=env, stdin=subprocess.DEVNULL,
    ).stdout.strip()


def find_build_commit(root: Path = SOURCE_ROOT, environ: dict[str, str] | None = None) -> str | None:
    """The checkout's own commit when running from one, else what the image recorded at build time, else None. A
    checkout git cannot read is unknown: a TACTICAL_BUILD_COMMIT left in the environment would name other code."""
    if is_checkout(root):
        return checkout_commit(root)
    environ = dict(os.environ) if environ is None else environ
    return environ.get(BUILD_COMMIT_ENV, "").strip() or None


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
