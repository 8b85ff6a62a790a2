"""`tacticalctl up`: the main job on a fresh machine, end to end and stopping by itself."""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from worker.actions import AGENT_NAMES
from worker.aggregator import AggregatorConfig, aggregate
from worker.decision_entry import decision_fields
from worker.embedded_redis import free_port
from worker.names import DECISIONS_STREAM, INPUT_STREAM
from worker.producer import make_event
from worker.records import AgentVote
from worker.stream_entries import entries


def test_up_runs_redis_worker_and_feed_and_stops_cleanly(tmp_path: Path) -> None:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    logs = tmp_path / "logs"
    result = subprocess.run(
        [sys.executable, "-c", "from tacticalctl.app import main; main()", "up", "--duration", "8", "--rate", "40",
         "--http-addr", "127.0.0.1:0", "--log-dir", str(logs)],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = re.search(r"sent (\d+), decided (\d+), executed (\d+); worker exit codes \[0\]", result.stdout)
    assert summary, result.stdout[-2000:]
    sent, decided, executed = map(int, summary.groups())
    # The feed stops first, then the worker drains what it took: every event sent is decided, and the summary counts
    # the decisions committed while the worker drained too (it used to stop counting at the view's last read).
    assert sent >= 100 and decided == sent and executed <= decided
    assert "live decisions" in result.stdout
    # Asked for any free port, the operator is told the one the worker bound: where /health and /metrics are.
    assert re.search(r"worker HTTP on http://127\.0\.0\.1:[1-9]\d*", result.stdout), result.stdout[:500]
    # The worker's log is named, and kept where --log-dir said, with its start and its clean stop.
    [log] = logs.glob("*.log")
    assert f"worker log: {log}" in result.stdout
    assert re.search(r"worker \S+ stopped", log.read_text()), log.read_text()[-2000:]


def test_up_runs_from_a_directory_holding_a_models_folder(tmp_path: Path) -> None:
    """An ML project's working directory has a `models/` folder: the worker process was started with it first on
    sys.path, imported it as the `models` package, and died at import (a QA helper's). `-P` here mimics the
    `tacticalctl` console script, which does not put the working directory on sys.path either."""
    (tmp_path / "models").mkdir()
    result = subprocess.run(
        [sys.executable, "-P", "-c", "from tacticalctl.app import main; main()", "up", "--duration", "3",
         "--rate", "20", "--http-addr", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(r"worker exit codes \[0\]", result.stdout), result.stdout[-2000:]


def test_a_decision_row_reads_whole_in_an_80_column_terminal() -> None:
    from collections import deque

    from rich.console import Console

    from tacticalctl.up import decision_row, render

    fields = {b"correlation_id": b"run7f3a-s0-SIM-20260112T021000Z", b"synergy_type": b"TYPE_4", b"direction": b"-1",
              b"votes_f32le": struct.pack("<9f", 0.01, 0.02, 0.97, 0.6, 0.3, 0.1, 0.0, 0.0, 1.0),
              b"action": b"long", b"score": b"0.93412", b"execute": b"0",
              b"reason": b"against direction: long 0.934 < 0.95"}
    row = decision_row(b"1700000000000-0", b"1700000000012-0", fields)
    console = Console(width=80, record=True, color_system=None)
    console.print(render(deque([row]), {"sent": 1, "decided": 1, "executed": 0, "commands": 0, "dead": 0}, 1.0))
    line = next(line for line in console.export_text().splitlines() if "20260112T021000Z" in line)

    for cell in ("20260112T021000Z", "TYPE_4", "short", "L.97 S.60 L1.0", "long 0.934", "against d"):
        assert cell in line, (cell, line)
    assert line.endswith(" 12"), "the latency (ms, event id to decision id) is never cut"


def test_a_decision_whose_score_is_not_a_number_is_shown_not_a_crash() -> None:
    from tacticalctl.up import decision_row

    fields = {b"correlation_id": b"odd", b"synergy_type": b"TYPE_1", b"direction": b"1", b"action": b"long",
              b"execute": b"0", b"reason": b"someone else's entry"}
    for score in (b"nan", b"high", None):
        row = decision_row(b"1700000000000-0", b"1700000000012-0", fields | ({b"score": score} if score else {}))
        assert row[4] == "long ?"


def test_a_decision_whose_text_looks_like_markup_is_shown_as_it_is() -> None:
    from collections import deque

    from rich.console import Console

    from tacticalctl.up import decision_row, render

    fields = {b"correlation_id": b"ord[/x]1", b"synergy_type": b"TYPE_1", b"direction": b"1",
              b"vote_fvg": b"0.1,0.2,0.7", b"vote_momentum": b"0.1,0.2,0.7", b"vote_entry": b"0.1,0.2,0.7",  # older

              b"action": b"long", b"score": b"0.5", b"execute": b"0", b"reason": b"below [red]threshold"}
    row = decision_row(b"1700000000000-0", b"1700000000012-0", fields)
    console = Console(width=120, record=True, color_system=None)
    console.print(render(deque([row]), {"sent": 1, "decided": 1, "executed": 0, "commands": 0, "dead": 0}, 1.0))
    text = console.export_text()
    assert "ord[/x]1" in text and "below [red]threshold" in text


@pytest.mark.parametrize("p_long", [0.459, 0.6496, 0.7896])
def test_a_rows_figures_agree_with_each_other_and_with_the_decision_as_stored(redis_client: redis.Redis,
                                                                            p_long: float) -> None:
    # Three agents voting long at p (float32, as the agents give it): the score is p too, whatever the weights.
    # 0.459 read `L.46 L.46 L.46` and `long 0.459` beside "below threshold: long 0.458 < 0.65"; 0.6496 read
    # `long 0.650`, as if it met the bar it did not; 0.7896 (executed) read `L.79` beside 0.790, its stored 0.78960….
    from tacticalctl.up import decision_row

    p, other = float(np.float32(p_long)), float(np.float32((1.0 - p_long) / 2))
    votes = [AgentVote(agent, (other, other, p), 0.9) for agent in AGENT_NAMES]
    decision = aggregate(make_event(correlation_id=f"agree-{p_long}"), votes, AggregatorConfig(), "v1")
    event_id = redis_client.xadd(INPUT_STREAM, {"n": "1"})
    redis_client.xadd(DECISIONS_STREAM, decision_fields(decision, event_id))  # type: ignore[arg-type]
    [(decision_id, fields)] = entries(redis_client, DECISIONS_STREAM)

    _, _, _, agents, vote, shown_decision, _ = decision_row(fields[b"event_id"], decision_id, fields)
    score = vote.split()[1]
    assert score in fields[b"reason"].decode(), "the vote column shows the score its reason does"
    if fields[b"execute"] == b"0":
        assert score in shown_decision
    assert float(score) <= float(fields[b"score"]) + 1e-9, "never more than the stored score"
    action = vote.split()[0]
    for call in agents.split():  # `L.45`: each agent's call and probability, its first two decimals the score's
        assert call[0] == action[0].upper() and score.startswith("0" + call[1:]), (agents, vote)


def _start_up(port: int, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-c", "from tacticalctl.app import main; main()", "up", "--rate", "40",
         "--http-addr", f"127.0.0.1:{port}", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, process_group=0,
    )


def _wait_for_line(process: subprocess.Popen[str], pattern: str) -> re.Match[str]:
    assert process.stdout is not None
    for line in process.stdout:
        found = re.search(pattern, line)
        if found:
            return found
    raise AssertionError(f"`up` ended before printing {pattern!r}: {process.stderr.read() if process.stderr else ''}")


def _refused(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c", "sighup"])
def test_a_signal_stops_everything_up_started_cleanly(how: str) -> None:
    http_port = free_port()
    process = _start_up(http_port)
    try:
        redis_port = int(_wait_for_line(process, r"Redis at redis://127\.0\.0\.1:(\d+)/").group(1))
        time.sleep(2)  # decisions flowing
        if how == "sigterm":
            process.send_signal(signal.SIGTERM)  # a supervisor stopping it
        elif how == "sighup":
            process.send_signal(signal.SIGHUP)  # the terminal or SSH session gone
        else:
            os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches its whole foreground group
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, out[-2000:] + err[-2000:]
    assert re.search(r"worker exit codes \[0\]", out), out[-2000:]  # drained and exited on one signal
    assert _refused(http_port) and _refused(redis_port), "the worker or Redis outlived `up`"


def test_a_port_in_use_is_one_line_before_anything_starts() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-c", "from tacticalctl.app import main; main()", "up", "--duration", "5",
             "--http-addr", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert time.monotonic() - started < 20, "refused before loading the models"


def test_a_worker_that_cannot_start_is_one_line(tmp_path) -> None:
    models = tmp_path / "models"
    import shutil

    from worker.settings import default_models_dir

    shutil.copytree(default_models_dir(), models)
    current = (models / "CURRENT").read_text().strip()
    agent = next((models / current).glob("*.pt"))
    agent.write_bytes(agent.read_bytes() + b"tampered")
    result = subprocess.run(
        [sys.executable, "-c", "from tacticalctl.app import main; main()", "up", "--duration", "5",
         "--http-addr", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=180, env={**os.environ, "TACTICAL_MODELS_DIR": str(models)},
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.startswith("tacticalctl: worker ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_port_a_worker_just_released_counts_as_free() -> None:
    # A served request leaves the port in TIME_WAIT; the worker's server binds it anyway (SO_REUSEADDR): so must
    # the check, or `up` refuses for a minute after any `tacticalctl health`.
    import threading
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tacticalctl.up import _check_port_free

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
    server.shutdown()
    server.server_close()
    _check_port_free(f"127.0.0.1:{port}")  # raises CtlError when it thinks the port taken


def test_an_external_redis_restarting_is_waited_out_by_the_view_and_the_feed(private_redis) -> None:
    """With --external-redis, Redis can go away under `up` (a restart, a failover). The view and the feed wait it out
    as the worker does, and the decisions flow again once it is back: no traceback, no stack torn down."""
    import redis

    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    process = subprocess.Popen(
        [sys.executable, "-c", "from tacticalctl.app import main; main()", "--redis-url", private_redis.url(), "up",
         "--external-redis", "--duration", "10", "--rate", "40", "--http-addr", f"127.0.0.1:{free_port()}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, process_group=0,
    )
    try:
        _wait_for_line(process, r"Redis at ")
        time.sleep(2)  # decisions flowing
        private_redis.restart(kill=True, down_for_s=1.5)
        back_ms = int(time.time() * 1000)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, out[-2000:] + err[-2000:]
    assert "Traceback" not in err + out, err[-3000:]
    assert re.search(r"worker exit codes \[0\]", out), out[-2000:]
    client = redis.Redis.from_url(private_redis.url())
    try:
        after = entries(client, "synergy_events", lower=f"{back_ms}-0", count=1000)
        decided_after = entries(client, "tactical_decisions", lower=f"{back_ms}-0", count=1000)
    finally:
        client.close()
    assert len(after) >= 40, "the feed did not resume once Redis was back"
    assert len(decided_after) >= 0.8 * len(after), (len(decided_after), len(after))


def _up_for_4_seconds(redis_url: str) -> subprocess.CompletedProcess[str]:
    """`up --external-redis` on `redis_url` for 4 s at 40 events/s; it must end cleanly."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-c", "from tacticalctl.app import main; main()", "--redis-url", redis_url, "up",
         "--external-redis", "--duration", "4", "--rate", "40", "--http-addr", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def test_a_stream_name_holding_another_type_is_said_in_the_view_not_the_end_of_the_stack(private_redis) -> None:
    """Someone wrote a string under the dead-letter stream's name: the view's count of it is refused. `up` says so
    and keeps running (the worker rides it out too), then stops cleanly with its summary."""
    import redis

    client = redis.Redis.from_url(private_redis.url())
    client.set("synergy_events:dead", "not a stream")
    client.close()
    result = _up_for_4_seconds(private_redis.url())
    assert "Redis refused a command: WRONGTYPE" in result.stdout
    summary = re.search(r"sent (\d+), decided (\d+), executed \d+; worker exit codes \[0\]", result.stdout)
    assert summary and int(summary.group(2)) > 0, result.stdout[-2000:]


def test_with_an_external_redis_the_view_counts_only_what_this_run_produced(private_redis) -> None:
    """An external Redis holds earlier runs' commands and dead letters: the view's counts start from zero."""
    import redis

    client = redis.Redis.from_url(private_redis.url())
    for index in range(500):
        client.xadd("execution_commands", {"correlation_id": f"earlier-{index}"})
        client.xadd("synergy_events:dead", {"correlation_id": f"earlier-{index}"})
    client.close()
    result = _up_for_4_seconds(private_redis.url())
    views = re.findall(r"executed (\d+)\s+commands (\d+)\s+dead-lettered (\d+)", result.stdout)
    assert views, result.stdout[-2000:]
    executed, commands, dead = (int(n) for n in views[-1])
    assert commands <= executed and dead < 500, views[-1]


def test_a_worker_that_did_not_exit_cleanly_has_its_logs_end_shown_before_it_is_removed(tmp_path: Path) -> None:
    from rich.console import Console

    from tacticalctl.up import _show_failed_workers_logs
    from worker.process import WorkerProcess
    from worker.stack import LocalStack

    log_dir = tmp_path / "x[" / "red]y [bold]logs"  # a --log-dir that reads as markup (…/x[/red]y…): shown as it is
    log_dir.mkdir(parents=True)
    stack = LocalStack(workers=2, run_dir=tmp_path)
    for name, text in (("w-clean", "started\nworker w-clean stopped\n"),
                       ("w-killed", "".join(f"line {i}\n" for i in range(30)) + "[bold]batch 7 took\n")):
        (log_dir / f"{name}.log").write_text(text)
        stack.processes.append(WorkerProcess(redis_url="redis://127.0.0.1:1/2", consumer=name,
                                             log_path=log_dir / f"{name}.log"))
    console = Console(record=True, width=300, color_system=None)
    _show_failed_workers_logs(stack, [0, -9], console)
    shown = console.export_text()
    assert f"worker w-killed exited with -9; the end of its log ({log_dir / 'w-killed.log'}):" in shown
    assert "w-clean" not in shown
    assert "[bold]batch 7 took" in shown, "the log is shown as written, not read as markup"
    assert "line 11" in shown and "line 10\n" not in shown, "its last 20 lines"
