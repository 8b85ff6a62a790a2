"""The runbook's daily checklists — morning, market hours, end of day — as ordered lists of checks.

Each list follows the runbook's steps in its order; a run is every step's `CheckResult` and the worst status.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.ops import checks
from worker.ops.checks import CheckResult, Status
from worker.ops.keys import DEFAULT_OLDER_THAN_S
from worker.ops.sources import Sources

OVERNIGHT_S = 16 * 3600.0


@dataclass(frozen=True, slots=True)
class ChecklistRun:
    name: str
    results: tuple[CheckResult, ...]
    generated_at: float

    @property
    def status(self) -> Status:
        return checks.worst([r.status for r in self.results])

    def as_dict(self) -> dict[str, Any]:
        return {
            "checklist": self.name,
            "status": self.status.value,
            "generated_at": datetime.fromtimestamp(self.generated_at, UTC).isoformat(timespec="seconds"),
            "steps": [result.as_dict() for result in self.results],
        }


def _run(name: str, sources: Sources, steps: Sequence[Callable[[], CheckResult]]) -> ChecklistRun:
    return ChecklistRun(name, tuple(step() for step in steps), sources.now())


def morning_check(sources: Sources, *, since_s: float = OVERNIGHT_S) -> ChecklistRun:
    """Morning startup, 30 minutes before market open: the runbook's 8 steps."""
    return _run("morning-check", sources, [
        lambda: checks.check_worker_running(sources),
        lambda: checks.check_redis_ping(sources),
        lambda: checks.check_jit_compilation(sources),
        lambda: checks.check_overnight_performance(sources, since_s),
        lambda: checks.check_health_endpoint(sources),
        lambda: checks.check_health_state(sources),
        lambda: checks.check_stale_processing_keys(sources),
        lambda: checks.check_breaker_history(sources, since_s),
    ])


def market_check(sources: Sources) -> ChecklistRun:
    """During market hours, every 15 minutes: the runbook's 8 steps."""
    return _run("market-check", sources, [
        lambda: checks.check_p99_latency(sources),
        lambda: checks.check_consumer_lag(sources),
        lambda: checks.check_active_positions(sources),
        lambda: checks.check_error_rate(sources),
        lambda: checks.check_model_confidence(sources),
        lambda: checks.check_health_transitions(sources),
        lambda: checks.check_duplicate_alerts(sources),
        lambda: checks.check_breaker_status(sources),
    ])


def seconds_since_midnight_utc(now: float) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    return now - moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def end_of_day(
    sources: Sources,
    *,
    report_dir: Path,
    since_s: float | None = None,
    log_file: Path | None = None,
    older_than_s: float = DEFAULT_OLDER_THAN_S,
    apply: bool = False,
    actor: str,
    completed_ttl_s: float | None = None,
) -> ChecklistRun:
    """After market close: the runbook's 8 steps. Key cleanup and the breaker reset act only when `apply`."""
    now = sources.now()
    period = seconds_since_midnight_utc(now) if since_s is None else since_s
    date = datetime.fromtimestamp(now - period, UTC).strftime("%Y-%m-%d")
    report_step = checks.check_daily_report(sources, since_s=period, report_dir=report_dir)
    report = report_step.details.get("report")
    results = (
        checks.archive_log(log_file, report_dir, date=date),
        report_step,
        checks.check_degradation(report),
        checks.check_model_update(sources),
        checks.check_backups(sources),
        checks.check_transitions_of_day(report),
        checks.cleanup_old_keys(sources, older_than_s=older_than_s, apply=apply, actor=actor,
                                completed_ttl_s=completed_ttl_s),
        checks.reset_breaker_counters(sources, since_s=period, apply=apply, actor=actor),
    )
    return ChecklistRun("eod", results, now)


__all__ = ["OVERNIGHT_S", "ChecklistRun", "end_of_day", "market_check", "morning_check"]
