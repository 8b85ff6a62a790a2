"""docker-compose.yml: valid, secrets from .env only, and the services wired as the runbook sizes them."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_contract import REPO_ROOT, require_tool
from worker.settings import WorkerSettings

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
SERVICES = {"tactical-marl", "redis", "prometheus", "alertmanager", "grafana"}


def read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def run_compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: variables of the caller's shell would override the env file.
    env = {"PATH": os.environ["PATH"], "HOME": str(env_file.parent)}
    return subprocess.run(
        [require_tool("docker-compose"), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_env(tmp_path: Path, **changes: str | None) -> Path:
    values = read_env_file(ENV_EXAMPLE)
    for key, value in changes.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return env_file


def resolved_config(env_file: Path) -> dict[str, Any]:
    result = run_compose(env_file, "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return resolved_config(write_env(tmp_path_factory.mktemp("compose")))


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


def duration_seconds(value: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"unparsable duration {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → host path of each bind mount."""
    result = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        result[container] = host
    return result


def test_compose_config_is_valid(tmp_path: Path) -> None:
    result = run_compose(write_env(tmp_path), "config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("secret", ["REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"])
def test_a_missing_secret_is_refused_naming_the_variable(tmp_path: Path, secret: str) -> None:
    result = run_compose(write_env(tmp_path, **{secret: None}), "config", "-q")
    assert result.returncode != 0
    assert f"set {secret} in .env (copy .env.example)" in result.stderr


def test_the_stack_has_its_five_services(config: dict[str, Any]) -> None:
    assert set(config["services"]) == SERVICES


def test_worker_is_built_from_tactical_dockerfile_and_serves_8001(config: dict[str, Any]) -> None:
    worker = config["services"]["tactical-marl"]
    assert worker["build"]["dockerfile"] == "tactical.Dockerfile"
    assert Path(worker["build"]["context"]) == REPO_ROOT
    assert [str(port) for port in worker["expose"]] == ["8001"]
    assert worker["environment"]["TACTICAL_HTTP_ADDR"] == "0.0.0.0:8001"
    assert "healthcheck" not in worker, "the image's HEALTHCHECK is the one definition (tactical.Dockerfile)"


def test_the_worker_scales_out_without_a_port_clash(config: dict[str, Any]) -> None:
    # The runbook's `docker-compose up -d --scale tactical-marl=2`: a fixed host port would bind only once.
    assert "ports" not in config["services"]["tactical-marl"]


def test_models_and_backups_outlive_the_container_and_py_spy_can_attach(config: dict[str, Any]) -> None:
    worker = config["services"]["tactical-marl"]
    mounted = mounts(worker)
    assert mounted["/app/models/jit"] in config["volumes"], "promoted and trained bundles survive a recreate"
    assert worker["environment"]["TACTICAL_MODELS_DIR"] == "/app/models/jit"
    assert mounted["/backups"] in config["volumes"]
    assert "SYS_PTRACE" in worker["cap_add"]


def test_worker_reaches_redis_db_2_with_the_password_from_env(
    config: dict[str, Any], example_env: dict[str, str]
) -> None:
    services = config["services"]
    password = example_env["REDIS_PASSWORD"]
    assert services["tactical-marl"]["environment"]["TACTICAL_REDIS_URL"] == f"redis://:{password}@redis:6379/2"
    assert services["tactical-marl"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert password not in COMPOSE_FILE.read_text(), "secrets come from .env, never from the compose file"


def test_restart_limit_matches_the_breaker_restart_limit(config: dict[str, Any]) -> None:
    worker = config["services"]["tactical-marl"]
    limit = WorkerSettings().breaker_restart_limit
    assert worker["restart"] == f"on-failure:{limit}"
    assert worker["environment"]["TACTICAL_BREAKER_RESTART_LIMIT"] == str(limit)


def test_one_setting_moves_both_restart_limits_together(tmp_path: Path) -> None:
    worker = resolved_config(write_env(tmp_path, TACTICAL_BREAKER_RESTART_LIMIT="3"))["services"]["tactical-marl"]
    assert worker["restart"] == "on-failure:3"
    assert worker["environment"]["TACTICAL_BREAKER_RESTART_LIMIT"] == "3"


def test_worker_gets_the_runbook_resources(config: dict[str, Any]) -> None:
    limits = config["services"]["tactical-marl"]["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) == 16
    assert str(limits["memory"]).upper() in {"32G", "32GB"}


def test_a_smaller_host_sets_the_worker_limits_in_env(tmp_path: Path) -> None:
    # Docker refuses a CPU limit above the host's CPUs: one setting fits the stack to a 2-core machine.
    config = resolved_config(write_env(tmp_path, TACTICAL_WORKER_CPUS="2", TACTICAL_WORKER_MEMORY="4G"))
    limits = config["services"]["tactical-marl"]["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) == 2
    assert str(limits["memory"]).upper() in {"4G", "4GB"} or int(limits["memory"]) == 4 * 1024**3


def test_stop_grace_period_outlasts_the_worker_drain(config: dict[str, Any]) -> None:
    worker = config["services"]["tactical-marl"]
    drain = float(worker["environment"].get("TACTICAL_SHUTDOWN_GRACE_S", WorkerSettings().shutdown_grace_s))
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert duration_seconds(worker["stop_grace_period"]) > drain


def test_redis_7_with_aof_password_and_healthcheck(config: dict[str, Any], example_env: dict[str, str]) -> None:
    redis = config["services"]["redis"]
    assert redis["image"].split(":")[1].startswith("7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--requirepass") + 1] == example_env["REDIS_PASSWORD"]
    assert "/data" in mounts(redis), "the AOF must live on a volume"
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


def test_prometheus_loads_the_config_and_every_rule_file_it_names(config: dict[str, Any]) -> None:
    prometheus = config["services"]["prometheus"]
    mounted = mounts(prometheus)
    config_path = PurePosixPath(
        next(arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file="))
    )
    assert Path(mounted[str(config_path)]) == REPO_ROOT / "runbook/prometheus/prometheus.yml"
    prometheus_yml = yaml.safe_load((REPO_ROOT / "runbook/prometheus/prometheus.yml").read_text())
    assert prometheus_yml["rule_files"]
    for rule_file in prometheus_yml["rule_files"]:
        in_container = str(config_path.parent / rule_file)
        assert Path(mounted[in_container]) == REPO_ROOT / "runbook/prometheus" / rule_file


def test_prometheus_scrapes_every_replica_of_the_worker_service_on_8001() -> None:
    prometheus_yml = yaml.safe_load((REPO_ROOT / "runbook/prometheus/prometheus.yml").read_text())
    job = next(j for j in prometheus_yml["scrape_configs"] if j["job_name"] == "tactical-marl")
    assert "static_configs" not in job, "one static target would alternate between replicas"
    [discovery] = job["dns_sd_configs"]
    assert (discovery["names"], discovery["type"], discovery["port"]) == (["tactical-marl"], "A", 8001)
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_grafana_provisions_the_datasource_and_dashboard(config: dict[str, Any]) -> None:
    grafana = config["services"]["grafana"]
    mounted = mounts(grafana)
    grafana_dir = REPO_ROOT / "runbook/grafana"
    datasource_mount = next(c for c in mounted if c.startswith("/etc/grafana/provisioning/datasources/"))
    assert Path(mounted[datasource_mount]) == grafana_dir / "datasource.yml"
    providers_mount = next(c for c in mounted if c.startswith("/etc/grafana/provisioning/dashboards/"))
    assert Path(mounted[providers_mount]) == grafana_dir / "dashboards.yml"

    providers = yaml.safe_load((grafana_dir / "dashboards.yml").read_text())["providers"]
    dashboard_dir = PurePosixPath(providers[0]["options"]["path"])
    dashboard_mount = str(dashboard_dir / "tactical-dashboard.json")
    assert Path(mounted[dashboard_mount]) == grafana_dir / "tactical-dashboard.json"

    datasource = yaml.safe_load((grafana_dir / "datasource.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == read_env_file(ENV_EXAMPLE)["GRAFANA_ADMIN_PASSWORD"]


def test_every_variable_the_compose_file_requires_is_in_env_example(example_env: dict[str, str]) -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    assert required, "the compose file should refuse to start without its secrets"
    assert required <= set(example_env)


def test_env_file_is_never_committed() -> None:
    ignored = [line.strip() for line in (REPO_ROOT / ".gitignore").read_text().splitlines()]
    assert ".env" in ignored


def test_prometheus_sends_alerts_to_the_alertmanager_service(config: dict[str, Any]) -> None:
    prometheus_yml = yaml.safe_load((REPO_ROOT / "runbook/prometheus/prometheus.yml").read_text())
    targets = [t for am in prometheus_yml["alerting"]["alertmanagers"] for c in am["static_configs"]
               for t in c["targets"]]
    assert targets == ["alertmanager:9093"]
    alertmanager = config["services"]["alertmanager"]
    mounted = mounts(alertmanager)
    config_path = next(arg.split("=", 1)[1] for arg in alertmanager["command"] if arg.startswith("--config.file="))
    assert Path(mounted[config_path]) == REPO_ROOT / "runbook/alertmanager/alertmanager.yml"
    assert Path(mounted["/etc/alertmanager/secrets"]) == REPO_ROOT / "secrets/alertmanager"
    assert "alertmanager" in config["services"]["prometheus"]["depends_on"]
