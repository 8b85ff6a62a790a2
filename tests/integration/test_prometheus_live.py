"""A real Prometheus scraping a running worker: the runbook's PromQL gives numbers that agree with what it did."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.deploy.deploy_contract import REPO_ROOT, require_tool
from tests.integration.streams import wait_for, wait_settled
from worker.embedded_redis import free_port
from worker.producer import make_event, publish_events

EVENTS = 300


def query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        doc = json.loads(response.read())
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def scalar(base: str, expr: str) -> float | None:
    result = query(base, expr)
    return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus(tmp_path: Path, request):
    """Prometheus with the project's scrape config and alert rules, pointed at `target` (set by the test)."""
    binary = require_tool("prometheus")
    port = free_port()

    def start(target: str) -> str:
        config = yaml.safe_load((REPO_ROOT / "runbook/prometheus/prometheus.yml").read_text())
        config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
        for job in config["scrape_configs"]:
            job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
            job["static_configs"] = [{"targets": [target if job["job_name"] == "tactical-marl"
                                                  else f"127.0.0.1:{port}"]}]
        shutil.copy(REPO_ROOT / "runbook/prometheus/alerts.yml", tmp_path / "alerts.yml")
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        process = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"),
        )

        def stop() -> None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)

        request.addfinalizer(stop)
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(base + "/-/ready", timeout=1) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(ready, timeout_s=60, interval_s=0.2, what="Prometheus ready")
        return base

    return start


def test_prometheus_scrapes_the_worker_and_the_runbook_queries_agree(prometheus, redis_url, redis_client,
                                                                     start_worker) -> None:
    worker = start_worker(redis_url)
    base = prometheus(worker.http_url.removeprefix("http://"))
    wait_for(lambda: scalar(base, 'up{job="tactical-marl"}') == 1.0, timeout_s=60, what="first scrape")

    rng = np.random.default_rng(11)
    publish_events(redis_client, [make_event(correlation_id=f"prom-{i}", rng=rng) for i in range(EVENTS)])
    wait_settled(redis_client, EVENTS)
    decided = 'sum(tactical_events_processed_total{outcome=~"executed|hold"})'
    wait_for(lambda: scalar(base, decided) == EVENTS, timeout_s=60, what="the decisions scraped")

    executed = sum(1 for _, f in redis_client.xrange("tactical_decisions") if f[b"execute"] == b"1")
    assert scalar(base, 'tactical_events_processed_total{outcome="executed"}') == executed
    # The runbook's queries, as its dashboard and alerts run them.
    rate = scalar(base, "sum(rate(tactical_events_processed_total[1m]))")
    assert rate is not None and rate > 0
    p99 = scalar(base, "histogram_quantile(0.99, sum by (le) (rate(tactical_request_duration_seconds_bucket"
                       '{operation="end_to_end"}[1m])))')
    assert p99 is not None and 0 < p99 <= 1.0, "P99 within the histogram's range"
    per_operation = query(base, "histogram_quantile(0.99, rate(tactical_request_duration_seconds_bucket[5m]))")
    assert {r["metric"]["operation"] for r in per_operation} >= {"end_to_end", "inference", "commit"}
    # The lag gauge is the monitor's reading at its last tick, scraped later: once the stream is settled it reaches 0
    # within a tick and a scrape, not necessarily by the time the last decision is counted.
    wait_for(lambda: scalar(base, "tactical_redis_consumer_lag_seconds") == 0.0, timeout_s=30,
             what="consumer lag back to 0 s once every event is decided")
    assert scalar(base, "tactical_health_state") in (0.0, 1.0)
    assert scalar(base, "tactical_circuit_breaker_state") == 0.0
    assert scalar(base, "rate(tactical_duplicate_events_total[5m])") == 0.0
    # Exported from the start (every pair of states at 0), so the dashboard's rate has series to sum.
    assert scalar(base, "sum(rate(tactical_state_transitions_total[1h]))") is not None
    rules = json.loads(urllib.request.urlopen(base + "/api/v1/rules", timeout=5).read())["data"]["groups"]
    assert sum(len(group["rules"]) for group in rules) >= 13, "the alert rules are loaded"
    # Pending counts too: these rules hold for a minute before firing, longer than this test runs.
    raised = [a["labels"]["alertname"] for a in
              json.loads(urllib.request.urlopen(base + "/api/v1/alerts", timeout=5).read())["data"]["alerts"]
              if a["state"] in ("pending", "firing")]
    assert "TacticalWorkerDown" not in raised and "TacticalP99LatencyHigh" not in raised, raised
