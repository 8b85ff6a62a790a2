"""Grafana dashboard: valid, wired to the provisioned datasource, every runbook query and metric on a panel."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_contract import REPO_ROOT, RUNBOOK_METRICS, metric_names_in, require_tool
from worker.metrics import STAGE_OPERATIONS

GRAFANA_DIR = REPO_ROOT / "runbook/grafana"

# "Grafana Dashboard Queries" of the runbook, verbatim.
RUNBOOK_QUERIES = {
    "P99 Latency by Operation": "histogram_quantile(0.99, rate(tactical_request_duration_seconds_bucket[5m]))",
    "Event Processing Rate": "rate(tactical_events_processed_total[5m])",
    "Consumer Lag": "tactical_redis_consumer_lag_seconds",
    "Health State Over Time": "tactical_health_state",
    "Circuit Breaker Status": "tactical_circuit_breaker_state",
    "Duplicate Event Detection Rate": "rate(tactical_duplicate_events_total[5m])",
    "State Transition Frequency": "rate(tactical_state_transitions_total[1h])",
}

GRID_WIDTH = 24


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads((GRAFANA_DIR / "tactical-dashboard.json").read_text())


@pytest.fixture(scope="module")
def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def exprs(panels: list[dict[str, Any]]) -> list[str]:
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_runbook_queries_each_have_their_panel(panels: list[dict[str, Any]]) -> None:
    by_title = {panel["title"]: panel for panel in panels}
    for title, query in RUNBOOK_QUERIES.items():
        assert title in by_title, f"missing panel {title!r}"
        assert query in [target["expr"] for target in by_title[title]["targets"]], title


def test_panels_read_only_runbook_metrics_and_show_all_of_them(panels: list[dict[str, Any]]) -> None:
    used: set[str] = set()
    for panel in panels:
        for target in panel["targets"]:
            names = metric_names_in(target["expr"])
            assert names, f"{panel['title']}: {target['expr']!r} reads no tactical metric"
            assert names <= RUNBOOK_METRICS, f"{panel['title']}: unknown metric {names - RUNBOOK_METRICS}"
            used |= names
    assert used == RUNBOOK_METRICS, f"metrics without a panel: {RUNBOOK_METRICS - used}"


def test_every_query_is_valid_promql(panels: list[dict[str, Any]], tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, so a typo fails here rather than on the wall screen."""
    promtool = require_tool("promtool")
    rules = [{"record": f"dashboard:query_{n}", "expr": expr} for n, expr in enumerate(exprs(panels))]
    rule_file = tmp_path / "dashboard_queries.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_panels_use_the_provisioned_datasource(panels: list[dict[str, Any]]) -> None:
    datasource = yaml.safe_load((GRAFANA_DIR / "datasource.yml").read_text())["datasources"][0]
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]


def test_panel_layout_is_unique_and_does_not_overlap(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    occupied: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in occupied, f"{panel['title']} overlaps {occupied[(x, y)]}"
                occupied[(x, y)] = panel["title"]


def test_alert_thresholds_are_drawn_where_the_alerts_fire(panels: list[dict[str, Any]]) -> None:
    def steps(title: str) -> set[float]:
        panel = next(p for p in panels if p["title"] == title)
        return {s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"] if s["value"] is not None}

    assert {2, 5} <= steps("Consumer Lag")
    assert {0.05, 0.1} <= steps("End-to-end P99 and P50 Latency")
    assert 0.6 in steps("Model Confidence")
    assert 900 in steps("Model Staleness")
    assert 0.05 in steps("Error Rate by Operation")
    assert 50 in steps("Event Processing Rate")


def test_latency_summed_over_agents_leaves_the_monitors_probes_out(panels: list[dict[str, Any]]) -> None:
    """inference per agent_type is a probe of one agent alone every 10 s, not the hot path's fused call: summed into
    `inference` it would mix two populations. A sum over the histogram keeps agent_type, or reads agent_type="all"
    (end_to_end has no other)."""
    summed = re.compile(r"sum by \(([^)]*)\) \(rate\(tactical_request_duration_seconds_bucket([^\[]*)\[")
    for panel in panels:
        for target in panel["targets"]:
            expr = target["expr"]
            for labels, selector in summed.findall(expr):
                assert ("agent_type" in labels or 'agent_type="all"' in selector
                        or 'operation="end_to_end"' in selector), f"{panel['title']}: {expr}"


def test_the_operations_panel_names_every_operation_the_worker_times(panels: list[dict[str, Any]]) -> None:
    panel = next(p for p in panels if p["title"] == "P50 Latency by Operation")
    for operation in STAGE_OPERATIONS:
        assert operation in panel["description"], operation


AGGREGATION = re.compile(r"\b(sum|max|min|avg|count|topk|bottomk|quantile)\b\s*(by|without)?\s*(\([^)]*\))?\s*\(")


def test_series_of_each_worker_are_named_by_instance(panels: list[dict[str, Any]]) -> None:
    """A query that keeps each worker's series (no aggregation over them) names `instance` in its legend: with
    several replicas, series named alike would read as one."""
    for panel in panels:
        for target in panel["targets"]:
            if not AGGREGATION.search(target["expr"]):
                assert "{{instance}}" in target.get("legendFormat", ""), f"{panel['title']}: {target['expr']}"


def test_dashboard_has_a_stable_uid_for_links(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "tactical-marl"
    assert dashboard["title"]
