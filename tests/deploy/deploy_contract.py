"""What the deployment tests share: the repository root, the runbook's metric contract, the external tools."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# The runbook's metric names (DESIGN.md "Names fixed by the runbook"): alerts and panels may use only these.
RUNBOOK_METRICS = frozenset(
    {
        "tactical_request_duration_seconds",
        "tactical_events_processed_total",
        "tactical_errors_total",
        "tactical_error_rate",
        "tactical_active_positions",
        "tactical_model_confidence",
        "tactical_agent_accuracy",
        "tactical_execution_rate",
        "tactical_redis_consumer_lag_seconds",
        "tactical_model_staleness_seconds",
        "tactical_health_state",
        "tactical_circuit_breaker_state",
        "tactical_duplicate_events_total",
        "tactical_state_transitions_total",
    }
)

_METRIC_TOKEN = re.compile(r"\btactical_[a-z0-9_]+")
_HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")


def metric_names_in(expr: str) -> set[str]:
    """The runbook metrics an expression reads, histogram series folded onto their metric."""
    names = set()
    for token in _METRIC_TOKEN.findall(expr):
        base = _HISTOGRAM_SERIES.sub("", token)
        names.add(base if base in RUNBOOK_METRICS else token)
    return names


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"`{name}` is not on PATH (.ci/run installs it)")
    return path
