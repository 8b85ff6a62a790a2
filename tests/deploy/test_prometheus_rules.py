"""Prometheus config and alert rules: promtool-valid, unit-tested, and every runbook alert present and routed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_contract import REPO_ROOT, RUNBOOK_METRICS, metric_names_in, require_tool

PROMETHEUS_DIR = REPO_ROOT / "runbook/prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
RUNBOOK = REPO_ROOT / "runbook/RUNBOOK.md"

END_TO_END = 'rate(tactical_request_duration_seconds_bucket{operation="end_to_end"}[5m])'

# The runbook's alerts: name → (severity, a fragment of the expression that carries its threshold).
RUNBOOK_ALERTS = {
    "TacticalP99LatencyHigh": ("P0", f"histogram_quantile(0.99, sum by (le) ({END_TO_END})) > 0.1"),
    "TacticalConsumerLagCritical": ("P0", "max without (instance) (tactical_redis_consumer_lag_seconds) > 5"),
    "TacticalModelStale": ("P0", "tactical_model_staleness_seconds > 900"),
    "TacticalCircuitBreakerOpen": ("P0", "tactical_circuit_breaker_state > 0"),
    "TacticalHealthCritical": ("P0", "tactical_health_state >= 2"),
    "TacticalP50LatencyHigh": ("P1", f"histogram_quantile(0.5, sum by (le) ({END_TO_END})) > 0.05"),
    "TacticalConsumerLagWarning": ("P1", "max without (instance) (tactical_redis_consumer_lag_seconds) > 2"),
    "TacticalErrorRateHigh": ("P1", 'tactical_error_rate{operation="all"} > 0.05'),
    "TacticalModelConfidenceLow": ("P1", "tactical_model_confidence < 0.6"),
    "TacticalEventRateLow": ("P1", "< 50"),
    "TacticalDuplicateEvents": ("P2", "tactical_duplicate_events_total"),
    "TacticalHealthStateTransition": ("P2", "tactical_state_transitions_total"),
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool"), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def one_line(expr: str) -> str:
    text = " ".join(expr.split())
    return text.replace("( ", "(").replace(" )", ")")


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_prometheus_config() -> None:
    result = promtool("check", "config", "runbook/prometheus/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules() -> None:
    result = promtool("check", "rules", "runbook/prometheus/alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", "runbook/prometheus/alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The unit tests are not vacuous: moving the P99 threshold to 200ms makes them fail."""
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text().replace(") > 0.1\n", ") > 0.2\n"))
    assert (tmp_path / "alerts.yml").read_text() != ALERTS.read_text()
    (tmp_path / "alerts_test.yml").write_text(ALERTS_TEST.read_text())
    result = promtool("test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode != 0
    assert "TacticalP99LatencyHigh" in result.stdout + result.stderr


def test_every_runbook_alert_exists_with_its_severity_and_threshold(rules: list[dict[str, Any]]) -> None:
    by_name = {rule["alert"]: rule for rule in rules}
    for name, (severity, fragment) in RUNBOOK_ALERTS.items():
        assert name in by_name, f"missing alert {name}"
        assert by_name[name]["labels"]["severity"] == severity, name
        assert fragment in one_line(by_name[name]["expr"]), f"{name}: expected {fragment!r}"


def test_every_alert_is_routable_and_actionable(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"P0", "P1", "P2"}, name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), f"{name}: needs a for: window"
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        assert re.fullmatch(r"runbook/RUNBOOK\.md#[a-z0-9-]+", annotations["runbook_url"]), name
        assert f"`tacticalctl triage {name}`" in annotations["description"], name


def test_alerts_read_only_runbook_metrics(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        names = metric_names_in(rule["expr"])
        assert names <= RUNBOOK_METRICS, f"{rule['alert']}: unknown metric {names - RUNBOOK_METRICS}"


def test_every_alert_has_a_firing_and_a_quiet_unit_test(rules: list[dict[str, Any]]) -> None:
    cases = [case for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for case in test["alert_rule_test"]]
    for rule in rules:
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"{rule['alert']}: no case where it fires"
        assert any(not case.get("exp_alerts") for case in mine), f"{rule['alert']}: no case where it stays quiet"


def github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_github_anchor_matches_githubs_slugs() -> None:
    assert github_anchor("P99 Latency > 100ms") == "p99-latency--100ms"
    assert github_anchor("Error Rate > 5%") == "error-rate--5"


def test_every_runbook_url_points_at_a_runbook_heading(rules: list[dict[str, Any]]) -> None:
    if not RUNBOOK.exists():
        pytest.skip("runbook/RUNBOOK.md is not written yet")
    headings = re.findall(r"^#+\s+(.+?)\s*#*$", RUNBOOK.read_text(), flags=re.MULTILINE)
    anchors = {github_anchor(heading) for heading in headings}
    for rule in rules:
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: no heading in RUNBOOK.md gives #{anchor}"
