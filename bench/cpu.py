"""CPU time of processes, from /proc/<pid>/stat: what each event costs the worker (and Redis), not just how long."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` (all its threads) so far. OSError if the process is gone."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after its closing parenthesis.
    after_name = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(after_name[11]), int(after_name[12])
    return (utime + stime) / _TICKS_PER_SECOND


@dataclass(frozen=True, slots=True)
class CpuSample:
    seconds: float

    @classmethod
    def of(cls, pids: Iterable[int]) -> CpuSample:
        return cls(sum(process_cpu_seconds(pid) for pid in pids))

    def since(self, earlier: CpuSample) -> float:
        return self.seconds - earlier.seconds


class CpuMeter:
    """CPU seconds a set of processes spends between `start()` and `stop()`."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = tuple(pids)
        self._start: CpuSample | None = None
        self.seconds: float | None = None

    def start(self) -> CpuMeter:
        self._start = CpuSample.of(self.pids)
        return self

    def stop(self) -> float:
        assert self._start is not None, "start() first"
        self.seconds = CpuSample.of(self.pids).since(self._start)
        return self.seconds
