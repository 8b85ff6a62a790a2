"""CPU and memory of a worker process and of its host, read from /proc — what the runbook used `docker stats` and
`free -h` for. Linux only; on a process of another host (or another PID namespace) the numbers are not ours to read,
and the functions return None rather than guess.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")


def _cpu_ticks(pid: int) -> int | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return utime + stime


def process_cpu_percent(
    pid: int, *, interval_s: float = 0.5, sleep: Callable[[float], None] = time.sleep
) -> float | None:
    """CPU used by `pid` over `interval_s`, in percent of one core (200 = two cores busy); None if unreadable."""
    before = _cpu_ticks(pid)
    started = time.monotonic()
    sleep(interval_s)
    after = _cpu_ticks(pid)
    elapsed = time.monotonic() - started
    if before is None or after is None or elapsed <= 0:
        return None
    return (after - before) / os.sysconf("SC_CLK_TCK") / elapsed * 100.0


def process_rss_mb(pid: int) -> float | None:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def meminfo() -> dict[str, int]:
    """/proc/meminfo in kB, by field name; empty where /proc is not available."""
    values: dict[str, int] = {}
    try:
        for line in (PROC / "meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[name] = int(parts[0])
    except OSError:
        return {}
    return values


@dataclass(frozen=True, slots=True)
class HostStats:
    cpus: int
    load_1m: float
    mem_total_mb: float | None
    mem_available_mb: float | None

    @property
    def mem_available_ratio(self) -> float | None:
        if not self.mem_total_mb or self.mem_available_mb is None:
            return None
        return self.mem_available_mb / self.mem_total_mb

    def as_dict(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "load_1m": self.load_1m, "mem_total_mb": self.mem_total_mb,
                "mem_available_mb": self.mem_available_mb}


def host_stats() -> HostStats:
    info = meminfo()
    total = info.get("MemTotal")
    available = info.get("MemAvailable")
    return HostStats(
        cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        load_1m=os.getloadavg()[0],
        mem_total_mb=None if total is None else total / 1024.0,
        mem_available_mb=None if available is None else available / 1024.0,
    )


__all__ = ["HostStats", "host_stats", "meminfo", "process_cpu_percent", "process_rss_mb"]
