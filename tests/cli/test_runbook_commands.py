"""runbook/RUNBOOK.md: every `tacticalctl …` line in it parses, and every link into it lands on a heading.

Nothing is executed against a service: each command line goes through click's own parser (`make_context`) down
to the leaf command, which is where a misspelt command, a removed option or a missing required value fails.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import typer
import yaml
from typer._click.core import Command  # typer's vendored click (tacticalctl.app reads its UsageError from it too)

from tacticalctl.app import app
from worker.ops.triage import PLAYBOOKS

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "runbook" / "RUNBOOK.md"
ALERT_RULES = ROOT / "runbook" / "prometheus" / "alerts.yml"
PLACEHOLDER = re.compile(r"<[^>]+>")
SHELL_ENDS = {"|", ">", ">>", "&&", ";", "2>&1"}


def code_block_lines(markdown: str) -> list[str]:
    lines, inside = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        if inside:
            lines.append(line.strip())
    return lines


def tacticalctl_lines(markdown: str) -> list[str]:
    """Every command line in code blocks, and every inline `tacticalctl …` span in the prose."""
    in_blocks = [line for line in code_block_lines(markdown) if line.startswith("tacticalctl ")]
    prose = re.sub(r"```.*?```", "", markdown, flags=re.S)
    inline = re.findall(r"`(tacticalctl [^`]+)`", prose)
    return in_blocks + inline


def argv_of(line: str) -> list[str]:
    words = shlex.split(PLACEHOLDER.sub("PLACEHOLDER", line), comments=True)
    assert words[0] == "tacticalctl", line
    argv = []
    for word in words[1:]:
        if word in SHELL_ENDS or word.startswith(">"):
            break
        argv.append(word)
    return argv


@cache
def _tacticalctl() -> Command:
    """The click command tree, built once: building it takes longer than parsing a line."""
    return typer.main.get_command(app)


def parse(argv: list[str]) -> list[str]:
    """Parse like `tacticalctl` would, down to the leaf command; returns the command path. Raises the parser's
    usage error on an unknown command or option, a missing required option, a bad value or an extra argument."""
    command = _tacticalctl()
    ctx = command.make_context("tacticalctl", list(argv))
    path: list[str] = []
    while hasattr(command, "resolve_command"):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            break
        name, resolved, rest = command.resolve_command(ctx, rest)
        assert resolved is not None and name is not None
        command = resolved
        ctx = command.make_context(name, rest, parent=ctx)
        path.append(name)
    return path


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_anchors(markdown: str) -> list[str]:
    headings = [re.sub(r"^#+\s*", "", line) for line in markdown.splitlines()
                if line.startswith("#") and line.lstrip("#").startswith(" ")]
    in_code = {line for line in code_block_lines(markdown) if line.startswith("#")}
    return [github_anchor(h) for h in headings if f"# {h}" not in in_code and f"#{h}" not in in_code]


MARKDOWN = RUNBOOK.read_text(encoding="utf-8")
LINES = tacticalctl_lines(MARKDOWN)


def test_the_runbook_has_commands_for_every_procedure() -> None:
    commands = {tuple(parse(argv_of(line))) for line in LINES}
    for expected in [("morning-check",), ("market-check",), ("eod",), ("health",), ("health", "state"),
                     ("lag", "watch"), ("stream", "info"), ("pending",), ("pending", "claim"), ("keys", "clean"),
                     ("breaker", "reset"), ("alerts",), ("models", "verify"), ("models", "promote"), ("latency",),
                     ("duplicates",), ("triage",)]:
        assert expected in commands, f"the runbook never shows `tacticalctl {' '.join(expected)}`"


@pytest.mark.parametrize("line", LINES)
def test_every_tacticalctl_line_parses(line: str) -> None:
    parse(argv_of(line))


def test_a_broken_line_is_caught() -> None:
    with pytest.raises(typer.TyperException, match="No such option"):
        parse(argv_of("tacticalctl keys clean --older-then 24h"))
    with pytest.raises(typer.TyperException, match="Missing parameter: to"):
        parse(argv_of("tacticalctl pending claim --yes"))  # --to is required
    with pytest.raises(typer.TyperException, match="No such command"):
        parse(argv_of("tacticalctl modles list"))


def test_the_anchor_rule_matches_github() -> None:
    assert github_anchor("P99 Latency > 100ms") == "p99-latency--100ms"
    assert github_anchor("Model Confidence < 0.6") == "model-confidence--06"
    assert github_anchor("Event Rate < 50/s") == "event-rate--50s"
    assert github_anchor("Error Rate > 5%") == "error-rate--5"


def test_headings_are_unique() -> None:
    anchors = runbook_anchors(MARKDOWN)
    duplicated = sorted({a for a in anchors if anchors.count(a) > 1})
    assert not duplicated, f"GitHub would suffix these anchors with -1: {duplicated}"


def test_every_alert_rule_links_to_a_heading() -> None:
    rules = [rule for group in yaml.safe_load(ALERT_RULES.read_text())["groups"] for rule in group["rules"]]
    anchors = set(runbook_anchors(MARKDOWN))
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        assert url.startswith("runbook/RUNBOOK.md#"), url
        assert url.split("#", 1)[1] in anchors, f"{rule['alert']} links to a missing heading: {url}"


def test_every_triage_playbook_links_to_a_heading_and_its_commands_parse() -> None:
    anchors = set(runbook_anchors(MARKDOWN))
    for playbook in PLAYBOOKS:
        assert playbook.anchor in anchors, f"triage {playbook.name} links to a missing heading #{playbook.anchor}"
        for action in playbook.actions:
            for line in re.findall(r"`(tacticalctl [^`]+)`", action):
                parse(argv_of(line))


def test_internal_links_land_on_headings() -> None:
    anchors = set(runbook_anchors(MARKDOWN))
    for target in re.findall(r"\]\(#([^)]+)\)", MARKDOWN):
        assert target in anchors, f"link to #{target}, which no heading produces"
