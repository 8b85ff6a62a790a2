"""The delivery contract, end to end: real Redis, real worker processes, the shipped model bundle."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from models.bundle import current_bundle_dir
from tests.bundles import with_broken_agent
from tests.events import many_events
from tests.integration.streams import (
    command_ids,
    decided_ids,
    executed_decisions,
    pending_count,
    wait_decided,
    wait_for,
    wait_settled,
)
from worker.embedded_redis import EmbeddedRedis
from worker.names import COMMANDS_STREAM, CONSUMER_GROUP, DECISIONS_STREAM, INPUT_STREAM
from worker.producer import publish_events
from worker.settings import default_models_dir


def events(n: int, seed: int = 0, prefix: str = "evt"):
    return many_events(n, prefix=prefix, seed=seed, directions=(-1, 1))


def assert_exactly_once(client: redis.Redis, expected_ids: set[bytes]) -> None:
    decided = decided_ids(client)
    assert set(decided) == expected_ids
    assert max(decided.values()) == 1, "an event was decided twice"
    commands = command_ids(client)
    assert commands == executed_decisions(client), "one command per executed decision, none other"
    assert pending_count(client) == 0


def test_500_events_are_decided_once_each(redis_url, redis_client, start_worker) -> None:
    publish_events(redis_client, events(500))
    start_worker(redis_url)
    wait_settled(redis_client, 500)
    assert_exactly_once(redis_client, {f"evt-{i}".encode() for i in range(500)})
    assert redis_client.xlen(COMMANDS_STREAM) > 0, "the shipped model executes some trades"


def test_one_correlation_id_three_times_gives_one_decision(redis_url, redis_client, start_worker) -> None:
    event = events(1)[0]
    publish_events(redis_client, [event, event, event])
    start_worker(redis_url)
    wait_for(lambda: pending_count(redis_client) == 0 and redis_client.xlen(DECISIONS_STREAM) == 1,
             what="three entries acked, one decision")
    time.sleep(0.3)
    assert decided_ids(redis_client) == {b"evt-0": 1}
    assert redis_client.xlen(COMMANDS_STREAM) <= 1
    # A later redelivery of the same id, after it completed, is still a duplicate.
    publish_events(redis_client, [event])
    wait_for(lambda: pending_count(redis_client) == 0 and redis_client.xinfo_groups(INPUT_STREAM)[0]["lag"] == 0,
             what="fourth entry acked")
    assert decided_ids(redis_client) == {b"evt-0": 1}


def test_sigkill_mid_batch_then_another_worker_finishes_exactly_once(redis_url, redis_client, start_worker) -> None:
    publish_events(redis_client, events(3000))
    first = start_worker(redis_url, batch_size=20)
    wait_decided(redis_client, 200)
    first.kill()
    assert redis_client.xlen(DECISIONS_STREAM) < 3000, "the kill came mid-stream"
    start_worker(redis_url, claim_min_idle_ms=300)
    wait_settled(redis_client, 3000, timeout_s=120)
    assert_exactly_once(redis_client, {f"evt-{i}".encode() for i in range(3000)})


def test_two_workers_share_the_stream_without_double_processing(redis_url, redis_client, start_worker) -> None:
    start_worker(redis_url, batch_size=10)
    start_worker(redis_url, batch_size=10)
    publish_events(redis_client, events(1000))
    wait_settled(redis_client, 1000)
    assert_exactly_once(redis_client, {f"evt-{i}".encode() for i in range(1000)})
    consumers = {c["name"]: c for c in redis_client.xinfo_consumers(INPUT_STREAM, CONSUMER_GROUP)}
    assert len(consumers) == 2


def test_sigterm_while_busy_commits_in_flight_and_exits_zero(redis_url, redis_client, start_worker) -> None:
    publish_events(redis_client, events(5000))
    worker = start_worker(redis_url, batch_size=50)
    wait_decided(redis_client, 100)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert pending_count(redis_client) == 0, "everything read was committed before exit"
    decided = decided_ids(redis_client)
    assert max(decided.values()) == 1
    assert redis_client.xlen(DECISIONS_STREAM) < 5000, "it stopped reading instead of draining the whole stream"


def test_redis_restart_under_a_running_worker_loses_nothing(private_redis: EmbeddedRedis, start_worker) -> None:
    url = private_redis.url()
    client = redis.Redis.from_url(url)
    publish_events(client, events(500, prefix="a"))
    start_worker(url)
    wait_decided(client, 100)
    client.close()
    private_redis.restart(down_for_s=1.0)
    client = redis.Redis.from_url(url)
    publish_events(client, events(500, seed=1, prefix="b"))
    wait_settled(client, 1000, timeout_s=120)
    expected = {f"a-{i}".encode() for i in range(500)} | {f"b-{i}".encode() for i in range(500)}
    assert_exactly_once(client, expected)
    client.close()


def test_a_sigterm_while_redis_is_still_unreachable_at_start_exits_0(tmp_path: Path) -> None:
    from worker.embedded_redis import free_port

    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "--redis-url", f"redis://127.0.0.1:{free_port()}/2",
             "--http-addr", "127.0.0.1:0"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "unreachable" in log_path.read_text(), timeout_s=90, what="the worker retrying Redis")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in log_path.read_text()


def test_tampered_model_file_is_refused(tmp_path: Path, redis_url: str) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(default_models_dir(), models_dir)
    target = current_bundle_dir(models_dir) / "momentum.pt"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "--redis-url", redis_url, "--models-dir", str(models_dir),
         "--http-addr", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 3
    assert "momentum.pt" in result.stderr
    assert "SHA-256 mismatch" in result.stderr


@pytest.mark.parametrize(("broken", "complaint"), [("raises", "fvg: raised"), ("nan", "fvg: non-finite output")])
def test_a_bundle_whose_agent_cannot_decide_is_refused_at_start(tmp_path: Path, redis_url: str, broken: str,
                                                               complaint: str) -> None:
    models_dir = tmp_path / "models"
    with_broken_agent(current_bundle_dir(default_models_dir()), models_dir, broken)
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "--redis-url", redis_url, "--models-dir", str(models_dir),
         "--http-addr", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert "refusing to start" in result.stderr and complaint in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_and_the_operator_cli_work_over_a_unix_socket(tmp_path: Path, start_worker) -> None:
    """`TACTICAL_REDIS_URL=unix:///path/redis.sock` (a Redis on the same host, without TCP): the worker decides
    every event and tacticalctl reads the group, both with the options they use over TCP."""
    from typer.testing import CliRunner

    from tacticalctl.app import app
    from worker.connection import connect

    with EmbeddedRedis(data_dir=tmp_path / "unix-redis", unix_socket=True, appendonly=False) as server:
        url = server.url()
        assert url.startswith("unix://")
        client = connect(url)
        publish_events(client, events(50, prefix="unix"))
        start_worker(url)
        wait_settled(client, 50)
        assert_exactly_once(client, {f"unix-{i}".encode() for i in range(50)})

        pending = CliRunner().invoke(app, ["--redis-url", url, "pending", "--json"],
                                     env={"COLUMNS": "200", "NO_COLOR": "1"}, catch_exceptions=False)
        assert pending.exit_code == 0, pending.output
        assert json.loads(pending.stdout)["count"] == 0
        client.close()
