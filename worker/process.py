"""Running `tactical-worker` as a child process: what `tacticalctl up`, the benchmarks and the tests share."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

READY_MARK = "ready: model"
_HTTP_URL = re.compile(r"ready: model .* http (http://\S+)")


class WorkerStartError(RuntimeError):
    """The worker process exited or did not become ready; the message carries the end of its log, `summary` says it in
    one line (what happened and the log's last line: the worker's own reason, e.g. a port in use, refused
    credentials, a tampered bundle)."""

    def __init__(self, consumer: str, what: str, log: str) -> None:
        super().__init__(f"worker {consumer} {what}:\n{log[-3000:]}")
        last = next((line.strip() for line in reversed(log.splitlines()) if line.strip()), "its log is empty")
        self.summary = f"worker {consumer} {what}: {last}"


@dataclass
class WorkerProcess:
    redis_url: str
    consumer: str
    log_path: Path
    http_addr: str = "127.0.0.1:0"
    settings: dict[str, str] = field(default_factory=dict)  # extra TACTICAL_* values, by setting name
    python: str = sys.executable
    # Run this checkout's worker rather than the installed one (benchmarks comparing builds). `python -m` puts the
    # working directory first on sys.path, ahead of PYTHONPATH, so the process is started inside the tree.
    source_tree: Path | None = None
    # Its own process group, out of reach of the terminal's signals: for a parent that stops it itself on Ctrl-C
    # (`tacticalctl up`), so the worker gets one SIGTERM, not the terminal's SIGINT and then a second signal. The
    # parent must then stop it on every way out (SIGTERM, SIGHUP too): nothing else will.
    own_process_group: bool = False

    def __post_init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self.http_url: str | None = None  # known once ready (the worker logs the port it bound)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "TACTICAL_REDIS_URL": self.redis_url,
                "TACTICAL_CONSUMER": self.consumer,
                "TACTICAL_HTTP_ADDR": self.http_addr,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update({"TACTICAL_" + name.upper(): str(value) for name, value in self.settings.items()})
        if self.source_tree is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.source_tree), env.get("PYTHONPATH")]))
        return env

    def code_dir(self) -> Path:
        """The checkout whose `worker` package a process started like this one imports (same interpreter, working
        directory and environment): what a benchmark of two builds must check before it trusts a difference."""
        probe = "import pathlib, worker; print(pathlib.Path(worker.__file__).absolute().parent.parent)"
        found = subprocess.run([self.python, "-P", "-c", probe], env=self.environment(), cwd=self.source_tree,
                               capture_output=True, text=True, check=True, timeout=60)
        return Path(found.stdout.strip())

    def start(self, *, wait_ready_s: float = 60.0) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            # -P: the working directory does not go first on sys.path. Started from a directory holding a `models/`
            # folder (an ML project's), that folder was imported as the `models` package and the worker died at
            # import; a source tree comes in through PYTHONPATH.
            [self.python, "-P", "-m", "worker.cli"],
            env=self.environment(),
            cwd=self.source_tree,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            process_group=0 if self.own_process_group else None,
        )
        if wait_ready_s:
            self.wait_ready(wait_ready_s)
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_text()
            if READY_MARK in text:
                found = _HTTP_URL.search(text)
                self.http_url = found.group(1) if found else None
                return
            if self.poll() is not None:
                raise WorkerStartError(self.consumer, f"exited with {self.poll()}", self.log_text())
            time.sleep(0.05)
        raise WorkerStartError(self.consumer, f"not ready after {timeout_s}s", self.log_text())

    def poll(self) -> int | None:
        return self._process.poll() if self._process else None

    def signal(self, signum: int) -> None:
        if self._process and self._process.poll() is None:
            self._process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed, nothing is committed."""
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout_s: float) -> int:
        assert self._process is not None
        code = self._process.wait(timeout=timeout_s)
        if self._log:
            self._log.close()
            self._log = None
        return code

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait for the drain; SIGKILL if it does not finish in time."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
        return self.wait(10)
