"""`tacticalctl up`: the main job on a fresh machine, end to end and stopping by itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from worker.embedded_redis import free_port


def test_up_runs_redis_worker_and_feed_and_stops_cleanly() -> None:
    port = free_port()
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-c", "from tacticalctl.app import main; main()", "up", "--duration", "8", "--rate", "40",
         "--http-addr", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = re.search(r"sent (\d+), decided (\d+), executed (\d+); worker exit codes \[0\]", result.stdout)
    assert summary, result.stdout[-2000:]
    sent, decided, executed = map(int, summary.groups())
    assert sent >= 100 and decided >= 0.8 * sent and executed <= decided
    assert "live decisions" in result.stdout
