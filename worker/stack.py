"""A whole local stack — an embedded Redis and N worker processes — started and stopped as one.

`tacticalctl up`, the benchmarks and the chaos soak stand on it.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from worker.embedded_redis import EmbeddedRedis
from worker.process import WorkerProcess


@dataclass
class LocalStack:
    workers: int = 1
    redis_url: str | None = None  # None: start an embedded Redis
    http_addrs: tuple[str, ...] = ()  # one per worker; default 127.0.0.1:0 (no fixed port)
    worker_settings: dict[str, str] = field(default_factory=dict)
    worker_source_tree: Path | None = None  # run this checkout's worker (see WorkerProcess.source_tree)
    run_dir: Path | None = None
    log_dir: Path | None = None  # the workers' logs, kept; default: run_dir (removed by close() when temporary)
    redis_fsync_always: bool = False
    own_process_groups: bool = False  # see WorkerProcess.own_process_group: for `tacticalctl up`

    def __post_init__(self) -> None:
        self._exit = ExitStack()
        self.redis: EmbeddedRedis | None = None
        self.processes: list[WorkerProcess] = []
        if self.run_dir is None:
            self.run_dir = Path(self._exit.enter_context(tempfile.TemporaryDirectory(prefix="tactical-stack-")))

    @property
    def url(self) -> str:
        if self.redis_url:
            return self.redis_url
        assert self.redis is not None, "start() first"
        return self.redis.url()

    def start(self, *, wait_ready_s: float = 120.0) -> LocalStack:
        assert self.run_dir is not None
        if not self.redis_url:
            self.redis = EmbeddedRedis(data_dir=self.run_dir / "redis", fsync_always=self.redis_fsync_always,
                                       own_process_group=self.own_process_groups)
            self.redis.start()
            self._exit.callback(self.redis.close)
        self._exit.callback(self.stop_workers)
        for index in range(self.workers):
            self.start_worker(index, wait_ready_s=0)
        for process in self.processes:
            process.wait_ready(wait_ready_s)
        return self

    def start_worker(self, index: int, *, wait_ready_s: float = 120.0) -> WorkerProcess:
        assert self.run_dir is not None
        name = f"stack-worker-{index}-{len(self.processes)}"
        addr = self.http_addrs[index] if index < len(self.http_addrs) else "127.0.0.1:0"
        process = WorkerProcess(
            redis_url=self.url, consumer=name, log_path=(self.log_dir or self.run_dir) / f"{name}.log", http_addr=addr,
            settings=self.worker_settings, source_tree=self.worker_source_tree,
            own_process_group=self.own_process_groups,
        )
        self.processes.append(process)
        return process.start(wait_ready_s=wait_ready_s)

    def stop_workers(self, timeout_s: float = 30.0) -> list[int | None]:
        return [process.stop(timeout_s) for process in self.processes]

    def close(self) -> None:
        self._exit.close()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
