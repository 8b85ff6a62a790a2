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


def test_a_decision_row_reads_whole_in_an_80_column_terminal() -> None:
    from collections import deque

    from rich.console import Console

    from tacticalctl.up import decision_row, render

    fields = {b"correlation_id": b"run7f3a-s0-SIM-20260112T021000Z", b"synergy_type": b"TYPE_4", b"direction": b"-1",
              b"vote_fvg": b"0.01,0.02,0.97", b"vote_momentum": b"0.6,0.3,0.1", b"vote_entry": b"0.0,0.0,1.0",
              b"action": b"long", b"score": b"0.93412", b"execute": b"0",
              b"reason": b"against direction: long 0.934 < 0.95"}
    row = decision_row(b"1700000000000-0", b"1700000000012-0", fields)
    console = Console(width=80, record=True, color_system=None)
    console.print(render(deque([row]), {"sent": 1, "decided": 1, "executed": 0, "commands": 0, "dead": 0}, 1.0))
    line = next(line for line in console.export_text().splitlines() if "20260112T021000Z" in line)

    for cell in ("20260112T021000Z", "TYPE_4", "short", "L.97 S.60 L1.0", "long 0.934", "against d"):
        assert cell in line, (cell, line)
    assert line.endswith(" 12"), "the latency (ms, event id to decision id) is never cut"
