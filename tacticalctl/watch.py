"""Refresh a view in place until Ctrl-C or a duration: what every `--watch` / `watch` command runs."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console, RenderableType
from rich.live import Live


def watch(
    console: Console,
    render: Callable[[], RenderableType],
    *,
    interval_s: float,
    duration_s: float | None = None,
) -> None:
    """Show `render()` and redraw it every `interval_s` seconds. Ctrl-C (SIGINT) ends it cleanly: the caller exits 0.

    `render` is called at each refresh and should catch its own I/O errors and show them, so a watch survives a
    worker restart or a Redis blip."""
    started = time.monotonic()
    try:
        with Live(render(), console=console, auto_refresh=False, redirect_stdout=False) as live:
            while True:
                remaining = None if duration_s is None else duration_s - (time.monotonic() - started)
                if remaining is not None and remaining <= 0:
                    break
                time.sleep(interval_s if remaining is None else min(interval_s, remaining))
                live.update(render(), refresh=True)
    except KeyboardInterrupt:
        pass
    # Rich ends a live view with a newline on a terminal only: piped or redirected, the last view's last line would
    # run into whatever comes next (a shell prompt, the next line of a log).
    if not console.is_terminal:
        console.line()
