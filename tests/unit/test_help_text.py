"""Command help that the terminal wraps: the docstrings' hand-wrapped lines joined, the breaks that mean something
kept, and every command's help readable at 80 columns (no line cut short mid-sentence)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import typer
from typer.testing import CliRunner

from tacticalctl.app import app
from tacticalctl.help_text import SHORT_HELP_CHARS, reflow


def test_a_paragraphs_wrapped_lines_are_joined_and_paragraphs_stay_apart() -> None:
    text = """First line of the summary,
    its second line.

    A body paragraph wrapped
    by hand, in three
    lines."""
    assert reflow(text) == ("First line of the summary, its second line.\n\n"
                            "A body paragraph wrapped by hand, in three lines.")


def test_list_items_indented_lines_and_new_sentences_keep_their_own_line() -> None:
    text = """Checks:
    - the first item, wrapped
      onto an indented line;
    - the second.
    1. a numbered one.
    Exit 0 ok, 1 warn.
    JSON keys: url,
    status."""
    assert reflow(text).split("\n") == [
        "Checks:",
        "- the first item, wrapped",
        "  onto an indented line;",
        "- the second.",
        "1. a numbered one.",
        "Exit 0 ok, 1 warn.",
        "JSON keys: url, status.",
    ]


def test_a_no_rewrap_paragraph_is_left_as_written_and_a_colon_then_a_number_is_one_line() -> None:
    assert reflow("Summary.\n\n\b\nkeep\nthese") == "Summary.\n\n\b\nkeep\nthese"
    assert reflow("only starting ones:\n1). No live worker") == "only starting ones: 1). No live worker"


def _command_paths(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    ctx = typer.Context(command)  # type: ignore[arg-type]
    for name in getattr(command, "list_commands", lambda ctx: [])(ctx):
        sub = command.get_command(ctx, name)  # type: ignore[attr-defined]
        build = getattr(sub, "_build", None)  # a lazy group: the real one
        yield from _command_paths(build() if build is not None else sub, (*path, name))


_CONTINUES = re.compile(r"[-•*]\s|\d+[.)]\s|\s")  # a list item or an indented line: a break that means something


def _short_lines_mid_sentence(help_output: str) -> list[str]:
    """Lines of the description (above the first panel) that end far short of 80 columns in the middle of a sentence,
    the next line going on with it: what hand-wrapped text looks like once a terminal wraps it again."""
    description = help_output.split("╭")[0].split("\n")
    found = []
    for line, following in itertools.pairwise(description):
        text, after = line.strip(), following.strip()
        if not text or not after or text.startswith("Usage:") or _CONTINUES.match(following[1:]):
            continue
        if len(line.rstrip()) < 50 and not text.endswith((".", ":", ";", ",", ")")):
            found.append(f"{text!r} then {after!r}")
    return found


def test_every_commands_help_reads_at_80_columns_and_the_list_shows_a_short_line_each() -> None:
    runner = CliRunner()
    root = typer.main.get_command(app)
    paths = list(_command_paths(root))
    assert ("health", "state") in paths and ("models", "train") in paths and len(paths) > 40
    ragged = {}
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERM": "dumb"}, prog_name="tacticalctl")
        assert result.exit_code == 0, (path, result.output)
        if found := _short_lines_mid_sentence(result.output):
            ragged[" ".join(path)] = found
    assert not ragged, ragged

    listing = runner.invoke(app, ["--help"], env={"COLUMNS": "80", "TERM": "dumb"}, prog_name="tacticalctl").output
    rows = [line for line in listing.split("╭─ Commands")[1].split("\n")[1:] if line.startswith("│")]
    names = [row[2:17].strip() for row in rows]
    counts = [sum(1 for _ in group) for group in _runs(names)]
    assert max(counts) * 60 < SHORT_HELP_CHARS * 2, f"a command takes {max(counts)} lines of the list"


def _runs(names: list[str]) -> Iterator[list[str]]:
    """The list's rows grouped per command: a named row, then its continuation rows (no name)."""
    group: list[str] = []
    for name in names:
        if name and group:
            yield group
            group = []
        group.append(name)
    if group:
        yield group


def test_bracketed_words_in_help_are_shown_not_taken_for_markup() -> None:
    runner = CliRunner()
    env = {"COLUMNS": "200", "TERM": "dumb"}
    decision = runner.invoke(app, ["decision", "--help"], env=env, prog_name="tacticalctl").output
    assert "votes {agent: [short, hold, long]}" in " ".join(decision.split()), decision
    purge = runner.invoke(app, ["dead-letter", "purge", "--help"], env=env, prog_name="tacticalctl").output
    assert "removed [ids]" in " ".join(purge.split()), purge
