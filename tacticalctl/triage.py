"""`tacticalctl triage [ALERT]`: run an alert's diagnosis from the runbook, print the findings and what to do."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from tacticalctl.context import JsonOption, get_context, print_json
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import plain
from tacticalctl.results import ModelsDirOption, exit_code, open_sources, status_text
from worker.ops.triage import (
    PLAYBOOKS,
    TriageReport,
    UnknownAlert,
    alert_names,
    resolve_alert,
    triage_current,
    worst_of,
)
from worker.ops.triage import triage as run_triage


def _complete_alert(incomplete: str) -> list[str]:
    names = [*alert_names(), *(alias for playbook in PLAYBOOKS for alias in playbook.aliases)]
    return [name for name in names if name.lower().startswith(incomplete.lower())]


def render_report(console: Console, report: TriageReport) -> None:
    console.rule(f"[bold]{report.severity} {report.title}[/] — {report.alert}: {status_text(report.status)}")
    if report.reason:
        console.print(f"picked because: {plain(report.reason)}")
    console.print(f"runbook: {report.runbook}")
    console.print("[bold]findings[/]")
    for finding in report.findings:
        console.print(f"  {status_text(finding.status, f'{finding.status.value.upper():8}')} {plain(finding.summary)}",
                      highlight=False)
    console.print("[bold]recommended actions[/]")
    for number, action in enumerate(report.actions, start=1):
        console.print(f"  {number}. {plain(action)}", highlight=False)


def triage(
    ctx: typer.Context,
    alert: Annotated[str | None, typer.Argument(
        help="Alert: " + ", ".join(alert_names()) + ", or a Prometheus alert name (TacticalP99LatencyHigh, …). "
        "Without it, the alerts the current state calls for.", autocompletion=_complete_alert,
        show_default=False)] = None,
    models_dir: ModelsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Diagnose an alert (or what the current state calls for): findings and the runbook's actions.

    Runs the runbook's diagnosis for ALERT — Redis INFO/SLOWLOG/latency, the worker's CPU and memory (/proc),
    XINFO and XPENDING, the breaker, the health state and transitions, the idempotency keys, the model bundle —
    and prints the findings and the recommended actions. Exit by the worst finding: 0 ok, 1 warning, 2 critical,
    3 a diagnosis step could not run (and no finding is critical or warning).

    JSON keys: picked (true when no ALERT was given), status, alerts [{alert, title, severity, runbook, status,
    reason, findings [{status, summary, evidence}], actions}]."""
    if alert is not None:
        try:
            resolve_alert(alert)
        except UnknownAlert as exc:
            raise CtlError(str(exc), ExitCode.UNKNOWN) from None
    console = get_context(ctx).console
    with open_sources(ctx, models_dir) as sources:
        if alert is not None:
            reports = [run_triage(sources, alert)]
        elif json_output:
            reports = triage_current(sources)
        else:
            with console.status("reading the current state…"):
                reports = triage_current(sources)
    status = worst_of(reports)
    if json_output:
        print_json({"picked": alert is None, "status": status.value, "alerts": [r.as_dict() for r in reports]})
    elif not reports:
        console.print("no alert condition: Redis and the worker answer, latency, lag, errors, confidence, breaker, "
                      "keys and the model bundle are within the runbook's thresholds")
    else:
        for report in reports:
            render_report(console, report)
    raise typer.Exit(int(exit_code(status)))


def register(app: typer.Typer) -> None:
    app.command()(triage)
