"""How the operator commands print things: statuses, times, ages, durations, sparklines, exit codes."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from tacticalctl.errors import ExitCode
from worker.health import CheckStatus

STATUS_STYLE = {CheckStatus.OK: "green", CheckStatus.WARN: "yellow", CheckStatus.CRITICAL: "bold red"}
_EXIT_FOR_STATUS = {CheckStatus.OK: ExitCode.OK, CheckStatus.WARN: ExitCode.WARNING,
                    CheckStatus.CRITICAL: ExitCode.CRITICAL}
_SPARK = "▁▂▃▄▅▆▇█"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
MAX_DURATION_S = 3650 * 86400.0
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def exit_code_for(status: CheckStatus) -> ExitCode:
    return _EXIT_FOR_STATUS[status]


def make_console(*, stderr: bool = False) -> Console:
    """Every console of tacticalctl: Rich's emoji codes off, since what it prints is data, and data has colons in it
    (`SET tactical:heartbeat:w1` in a refusal, `ES:100:0930` as a correlation id printed `tactical💓w1`, `ES💯0930`)."""
    return Console(stderr=stderr, no_color=bool(os.environ.get("NO_COLOR")), emoji=False)


def markup_text(markup: str, **kwargs: Any) -> Text:
    """`Text.from_markup` without emoji codes, for the same reason as `make_console`."""
    return Text.from_markup(markup, emoji=False, **kwargs)


def plain(value: object) -> str:
    """Text from Redis or the worker, escaped so Rich prints it as it is (a `[tag]` in a reason stays visible), its
    control characters shown as escapes: what anyone who can write to Redis put there never drives the terminal."""
    return escape(_CONTROL.sub(lambda m: repr(m.group())[1:-1], str(value)))


def audit_not_written(error: str, change: str) -> str:
    """The line for a change made whose audit entry Redis refused (at maxmemory it takes the XTRIM, DEL, XCLAIM or
    XDEL that frees or moves, and refuses the XADD): the change stands, the trail misses it."""
    return f"[yellow]audit entry not written[/]: {plain(error)} — the {change} stands; record it by hand"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but tab and newline


def live_worker_counts(words: Sequence[str]) -> str:
    """`3 live workers: 2 healthy, 1 not read`: one word per live worker (its state or status), counted in the order
    first seen."""
    counts = Counter(words)
    return (f"{len(words)} live worker{'s' if len(words) != 1 else ''}: "
            + ", ".join(f"{count} {plain(word)}" for word, count in counts.items()))


def styled(status: CheckStatus | str, text: str | None = None) -> str:
    """`text` (default: the status) in the status's colour, as Rich markup."""
    try:
        level = CheckStatus(status)
    except ValueError:
        return escape(text or str(status))
    return f"[{STATUS_STYLE[level]}]{escape(text or level.value)}[/]"


def timestamp(value: Any) -> str:
    """Unix seconds or ISO text → `YYYY-MM-DD HH:MM:SS` UTC; None → `-`. Escaped for Rich."""
    if value is None or value == "":
        return "-"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return escape(str(value).replace("T", " ").removesuffix("Z").split(".")[0])


def age(seconds: float | None) -> str:
    """`42s`, `3m05s`, `2h07m`, `3d04h`; None → `-`."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def number(value: Any, fmt: str = "{:g}", unknown: str = "-") -> str:
    """`value` formatted with `fmt`, as it is when it is not a number (escaped for Rich); None → `unknown`."""
    if value is None:
        return unknown
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return escape(str(value))


def latency_ms(value: float | None, saturated: bool = False) -> str:
    """`3.10 ms`; a quantile beyond the histogram's last finite bucket `>1000 ms` (the true value is larger); None →
    `-`."""
    if value is None:
        return "-"
    return f">{value:.0f} ms" if saturated else f"{value:.2f} ms"


def parse_duration(text: str) -> float:
    """`90`, `90s`, `30m`, `24h`, `2d`, `500ms` → seconds. Raises ValueError with the accepted forms."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration: use a number with ms, s, m, h or d (e.g. 24h, 30m, 90s)")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds > MAX_DURATION_S:  # beyond any history Redis keeps, and past what a date can be computed from
        raise ValueError(f"{text!r} is longer than {MAX_DURATION_S // 86400:.0f}d")
    return seconds


def sparkline(values: Sequence[float], *, floor_max: float = 0.0) -> str:
    """One character per value, scaled to the larger of the values' maximum and `floor_max` (so a flat low line
    stays low instead of being stretched to full height)."""
    if not values:
        return ""
    top = max(max(values), floor_max)
    if top <= 0:
        return _SPARK[0] * len(values)
    last = len(_SPARK) - 1
    return "".join(_SPARK[min(last, max(0, round(v / top * last)))] for v in values)


def these(count: int, singular: str, plural: str) -> str:
    """`this name` or `these 3 names`: what a dry run's "Add --yes to remove …" names."""
    return f"this {singular}" if count == 1 else f"these {count} {plural}"
