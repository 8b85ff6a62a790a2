"""How check results print and exit: one table row per step, the exit code of the worst status; and the options
and sources every checklist-like command shares."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tacticalctl.context import get_context
from tacticalctl.errors import ExitCode
from worker.ops.checks import CheckResult, Status
from worker.ops.sources import Sources
from worker.settings import default_models_dir

STATUS_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.CRITICAL: "bold red", Status.UNKNOWN: "magenta"}
EXIT_FOR_STATUS = {Status.OK: ExitCode.OK, Status.WARN: ExitCode.WARNING, Status.CRITICAL: ExitCode.CRITICAL,
                   Status.UNKNOWN: ExitCode.UNKNOWN}

ModelsDirOption = Annotated[
    Path | None,
    typer.Option("--models-dir", envvar="TACTICAL_MODELS_DIR", file_okay=False, show_default=False,
                 help="Directory of model bundles, the worker's TACTICAL_MODELS_DIR (default: the shipped bundles)."),
]


def default_models() -> Path:
    """The models directory when --models-dir / TACTICAL_MODELS_DIR is not given: the shipped bundles."""
    return default_models_dir()


def status_text(status: Status, text: str | None = None) -> str:
    return f"[{STATUS_STYLE[status]}]{text or status.value.upper()}[/]"


def exit_code(status: Status) -> ExitCode:
    return EXIT_FOR_STATUS[status]


def results_table(title: str, results: Sequence[CheckResult], *, numbered: bool = True) -> Table:
    # Fold, never cut: a URL, a path or a command is one long word, and an operator (or the file a cron job writes,
    # 80 columns wide) needs all of it.
    table = Table(title=title, expand=True, show_lines=True)
    if numbered:
        table.add_column("#", justify="right", no_wrap=True)
    table.add_column("step", overflow="fold", ratio=2)
    table.add_column("status", no_wrap=True)
    table.add_column("value", overflow="fold", ratio=3)
    table.add_column("threshold", overflow="fold", ratio=2, min_width=9)
    table.add_column("next action", overflow="fold", ratio=3)
    for index, result in enumerate(results, start=1):
        cells = [result.step, status_text(result.status), result.value, result.threshold, result.next_action or "-"]
        table.add_row(*([str(index)] if numbered else []), *cells)
    return table


@contextmanager
def open_sources(ctx: typer.Context, models_dir: Path | None = None) -> Iterator[Sources]:
    """Redis, the worker and the bundles as the global options name them, each fetched once, closed after."""
    context = get_context(ctx)
    sources = Sources(context.redis_url, context.worker_url, models_dir or default_models())
    try:
        yield sources
    finally:
        sources.close()


__all__ = [
    "EXIT_FOR_STATUS",
    "ModelsDirOption",
    "default_models",
    "exit_code",
    "open_sources",
    "results_table",
    "status_text",
]
