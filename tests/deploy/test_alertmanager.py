"""runbook/alertmanager/alertmanager.yml: valid, and each severity reaches whom the runbook's Escalation Matrix
names (amtool answers for the configuration as Alertmanager reads it)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.deploy.deploy_contract import REPO_ROOT, require_tool

CONFIG = REPO_ROOT / "runbook" / "alertmanager" / "alertmanager.yml"
ALERT_RULES = REPO_ROOT / "runbook" / "prometheus" / "alerts.yml"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("amtool"), *args], capture_output=True, text=True, timeout=60)


def receivers_of(**labels: str) -> set[str]:
    result = amtool("config", "routes", "test", f"--config.file={CONFIG}",
                    *(f"{key}={value}" for key, value in labels.items()))
    assert result.returncode == 0, result.stderr
    return set(result.stdout.strip().split(","))


def test_the_configuration_is_valid() -> None:
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("severity", "receivers"), [
    ("P0", {"team-channel", "on-call"}),  # On-Call Engineer, immediately
    ("P1", {"team-channel", "on-call"}),  # On-Call Engineer, within 15 minutes
    ("P2", {"team-channel"}),  # Team Lead: the channel, no page
])
def test_each_severity_reaches_whom_the_escalation_matrix_names(severity: str, receivers: set[str]) -> None:
    assert receivers_of(alertname="TacticalAnything", severity=severity) == receivers


def test_every_alert_rule_is_routed_by_its_severity() -> None:
    rules = [rule for group in yaml.safe_load(ALERT_RULES.read_text())["groups"] for rule in group["rules"]]
    for rule in rules:
        severity = rule["labels"]["severity"]
        expected = {"team-channel", "on-call"} if severity in ("P0", "P1") else {"team-channel"}
        assert receivers_of(alertname=rule["alert"], severity=severity) == expected, rule["alert"]


def test_receiver_secrets_come_from_files_never_from_the_repository() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    [slack] = receivers["team-channel"]["slack_configs"]
    [pagerduty] = receivers["on-call"]["pagerduty_configs"]
    assert "api_url" not in slack and slack["api_url_file"].startswith("/etc/alertmanager/secrets/")
    assert "routing_key" not in pagerduty and pagerduty["routing_key_file"].startswith("/etc/alertmanager/secrets/")
    assert "secrets/" in (REPO_ROOT / ".gitignore").read_text().split()
