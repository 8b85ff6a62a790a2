"""Command help that the terminal wraps. The docstrings are wrapped by hand at the source's 120 columns and Rich keeps
those line breaks, so at 80 columns every paragraph came out ragged (a full line, then two words, then a full line)
and the command list showed whole paragraphs. Here a paragraph's wrapped lines are joined; a line that starts a list
item, an indented line, or a new sentence after a full stop or a colon keeps its own. The command list shows a
command's first sentence (`short_help`), cut at a word with "..." past `SHORT_HELP_CHARS`. Help is shown as Rich
markup, where `[ids]` or `[short, hold, long]` read as style tags and vanished from the JSON keys they document:
every command's and parameter's help is escaped, since none is written as markup."""

from __future__ import annotations

import inspect
import re

from rich.markup import escape

try:  # typer vendors click from 0.2x on; before, it used click itself
    from typer._click.core import Command
    from typer._click.utils import make_default_short_help
except ImportError:  # pragma: no cover
    from click import Command  # type: ignore[assignment,import-not-found,no-redef]  # absent with a vendoring typer
    from click.utils import make_default_short_help  # type: ignore[import-not-found,no-redef]

SHORT_HELP_CHARS = 150  # at most three lines of the command list at 80 columns
NO_REWRAP = "\b"  # click's marker: a paragraph that starts with it is shown as written
_OWN_LINE = re.compile(r"(\s|[-*•] |\d+[.)] )")  # indented, or a list item
_NEW_SENTENCE = re.compile(r"[A-Z`-]")


def reflow(help_text: str) -> str:
    """`help_text` with each paragraph's wrapped lines joined (see the module's docstring)."""
    paragraphs = inspect.cleandoc(help_text).split("\n\n")
    return "\n\n".join(paragraph if paragraph.startswith(NO_REWRAP) else _joined(paragraph)
                       for paragraph in paragraphs)


def _joined(paragraph: str) -> str:
    lines = paragraph.split("\n")
    out = [lines[0]]
    for line in lines[1:]:
        previous = out[-1].rstrip()
        keeps_own = _OWN_LINE.match(line) or (previous.endswith((".", ":")) and _NEW_SENTENCE.match(line))
        if keeps_own:
            out.append(line)
        else:
            out[-1] = f"{previous} {line.strip()}"
    return "\n".join(out)


def reflow_command(command: Command) -> None:
    """Reflow `command`'s help and its subcommands', once."""
    if getattr(command, "_help_reflowed", False):
        return
    command._help_reflowed = True  # type: ignore[attr-defined]
    if command.help:
        text = reflow(command.help)
        command.help = escape(text)
        if not command.short_help:
            command.short_help = escape(make_default_short_help(text, SHORT_HELP_CHARS))
    for param in command.params:
        help_text = getattr(param, "help", None)
        if isinstance(help_text, str):
            param.help = escape(help_text)  # type: ignore[attr-defined]
    # A group's subcommands (typer's groups are not click Groups, so asked by what they hold).
    for subcommand in dict(getattr(command, "commands", None) or {}).values():
        reflow_command(subcommand)
