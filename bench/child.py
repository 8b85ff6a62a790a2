"""A benchmark's helper process (the floor, the reference loop, the Celery peer), started and stopped by its PID."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


class BenchProcessError(RuntimeError):
    """A helper process exited early; the message carries the end of its log."""


@dataclass
class ChildProcess:
    name: str
    argv: Sequence[str]  # after `python`
    log_path: Path
    env: dict[str, str] | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    @classmethod
    def module(cls, name: str, module: str, args: Sequence[str], log_path: Path,
               env: dict[str, str] | None = None) -> ChildProcess:
        return cls(name, ["-m", module, *args], log_path, env)

    def start(self) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, *self.argv], stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=self.env,
        )
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None, "start() first"
        return self._process.pid

    def check_alive(self) -> None:
        """Raise BenchProcessError (with its log) if the process has exited."""
        if self._process is not None and (code := self._process.poll()) is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
            raise BenchProcessError(f"{self.name} exited with {code}; its log ({self.log_path}) ends:\n{tail}")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return process.returncode
