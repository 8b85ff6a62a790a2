"""How `health state` shows a worker's /health/state document: checks, transitions, breaker, model, lag, window."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tacticalctl.formatting import age, markup_text, number, plain, styled, timestamp

_STATE_STYLE = {0: "green", 1: "yellow", 2: "bold red", 3: "bold red"}
_BREAKER_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red"}


def _checks_table(checks: list[dict[str, Any]]) -> Table:
    table = Table(title="health checks", expand=False)
    for column in ("check", "status", "value", "threshold", "message"):
        table.add_column(column, overflow="fold")
    for check in checks:
        status = str(check.get("status", "?"))
        table.add_row(
            Text(str(check.get("name", "?"))),
            styled(status),
            number(check.get("value"), "{:.4g}"),
            number(check.get("threshold"), "{:g}"),
            Text(str(check.get("message", ""))),
        )
    return table


def _transitions_table(transitions: list[dict[str, Any]]) -> Table:
    table = Table(title="recent transitions", expand=False)
    for column in ("at (UTC)", "from → to", "reason", "actions"):
        table.add_column(column, overflow="fold")
    for move in transitions[-10:]:
        actions = move.get("actions") or []
        table.add_row(
            timestamp(move.get("at")),
            Text(f"{move.get('from', '?')} → {move.get('to', '?')}"),
            Text(str(move.get("reason", ""))),
            Text(", ".join(str(a) for a in actions) or "-"),
        )
    if not transitions:
        table.add_row("-", "none since the worker started", "", "")
    return table


def _breaker_line(breaker: dict[str, Any]) -> str:
    name = str(breaker.get("state", "unknown"))
    style = _BREAKER_STYLE.get(name, "white")
    parts = [
        f"circuit breaker [{style}]{plain(name)}[/]",
        f"consecutive failures {number(breaker.get('consecutive_failures'))}",
        f"restarts {number(breaker.get('restart_count'))}/{number(breaker.get('restart_limit'))}",
    ]
    if breaker.get("opened_at"):
        parts.append(f"opened {timestamp(breaker.get('opened_at'))}")
    if breaker.get("last_reason"):
        parts.append(f"last reason: {plain(breaker['last_reason'])}")
    return " · ".join(parts)


def render_state(doc: dict[str, Any]) -> RenderableType:
    code = doc.get("state_code")
    style = _STATE_STYLE.get(code if isinstance(code, int) else -1, "white")
    model = doc.get("model") or {}
    lag = doc.get("lag") or {}
    window = doc.get("window") or {}
    lines = [
        f"[{style}]{plain(doc.get('state', 'unknown'))}[/] (state {number(code)}) since "
        f"{timestamp(doc.get('since'))} · consumer {plain(doc.get('consumer') or '-')} · "
        f"up {plain(age(doc.get('uptime_s')))}",
        _breaker_line(doc.get("circuit_breaker") or {}),
        f"model {plain(model.get('version') or '-')} · staleness {plain(age(model.get('staleness_s')))}",
        f"lag {number(lag.get('count'), unknown='unknown')} undelivered, {number(lag.get('pending'))} pending, "
        f"{number(lag.get('seconds'), '{:.2f}')} s, trend {plain(lag.get('trend') or '-')}",
        f"last {number(window.get('window_s'), '{:g}', '60')} s: {number(window.get('events'))} events, "
        f"{number(window.get('throughput_per_s'), '{:.1f}')}/s, p50 {number(window.get('p50_ms'), '{:.1f}')} ms, "
        f"p99 {number(window.get('p99_ms'), '{:.1f}')} ms, errors {number(window.get('error_rate'), '{:.1%}')}",
    ]
    recovery = doc.get("recovery")
    if isinstance(recovery, dict):
        lines.insert(1, f"recovering: next step to {plain(recovery.get('to') or '?')} at "
                        f"{timestamp(recovery.get('next_step_at'))} if the checks hold")
    return Group(
        *(markup_text(line) for line in lines),
        _checks_table(list(doc.get("health_checks") or [])),
        _transitions_table(list(doc.get("recent_transitions") or [])),
    )
