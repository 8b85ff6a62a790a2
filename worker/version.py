"""Which release of tactical-marl this is: what `--version`, `/health` and `tactical_build_info` say, so an operator
can tell which code each worker host runs."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "tactical-marl"


def software_version() -> str:
    """The installed distribution's version; "unknown" when run from a checkout that was never installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


SOFTWARE_VERSION = software_version()  # read once, at import: it does not change while a process runs
