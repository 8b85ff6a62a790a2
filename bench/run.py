"""One benchmark run: the model alone, then for each offered load the floor, the reference loop, the worker end to
end and (optionally) the Celery peer, against one embedded Redis, each measured from the client side.

The targets take turns in rounds (floor, reference, e2e, peer; then again, each round starting one target later), and
each target's samples are pooled over its rounds. On a shared machine the background load drifts over a run; measured
back to back in one block each, a target could be timed in a quiet minute and the next in a busy one, and a ratio of
the two would measure the drift. Taking turns spreads every target over the same minutes."""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.child import ChildProcess
from bench.cpu import CpuMeter
from bench.e2e import Load, StreamTarget, Target, measure_round_trips, wait_until_answering
from bench.model import load_ensemble, measure_model
from bench.names import FLOOR_STREAMS, REFERENCE_STREAMS
from bench.report import BenchReport, LatencySummary, LoadPoint, PhaseResult, load_label
from bench.workload import DEFAULT_POOL_SIZE, Workload
from worker.feed import run_id
from worker.inference import row_invariant_kernels
from worker.names import DECISIONS_STREAM, INPUT_STREAM
from worker.process import WorkerStartError
from worker.redis_text import server_label
from worker.stack import LocalStack

PEERS = ("celery",)
STARTUP_TIMEOUT_S = 120.0


class BenchConfigError(ValueError):
    """A benchmark option is out of range; the message names it."""


@dataclass(frozen=True)
class BenchConfig:
    rates: tuple[float, ...] = (1000.0,)
    max_throughput: bool = False  # --max: every target as fast as it takes events, instead of the rates
    duration_s: float = 10.0  # per target and load, over all rounds
    warmup_s: float = 1.0  # before each measured round of a target, not counted
    rounds: int = 3  # turns each target takes per load
    workers: int = 1
    peer: str | None = None
    peer_rate: float = 100.0  # the peer's latency is measured at min(rate, this): a rate it sustains
    backlog: int = 2000  # --max: events in flight at most
    model_iterations: int = 2000
    model_batch_size: int = 100
    pool_size: int = DEFAULT_POOL_SIZE
    worker_settings: Mapping[str, str] = field(default_factory=dict)  # extra TACTICAL_* for the workers
    run_dir: Path | None = None  # logs of every process; default a temporary directory

    def __post_init__(self) -> None:
        if not self.max_throughput and not self.rates:
            raise BenchConfigError("give at least one --rate, or --max")
        if any(rate <= 0 for rate in self.rates):
            raise BenchConfigError(f"--rate must be > 0 events/s, got {list(self.rates)}")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise BenchConfigError(f"--duration must be > 0 and --warmup >= 0, got {self.duration_s}, {self.warmup_s}")
        if not 1 <= self.rounds <= 20:
            raise BenchConfigError(f"--rounds must be 1..20, got {self.rounds}")
        if not 1 <= self.workers <= 16:
            raise BenchConfigError(f"--workers must be 1..16, got {self.workers}")
        if self.peer is not None and self.peer not in PEERS:
            raise BenchConfigError(f"--peer {self.peer!r} is not one of {', '.join(PEERS)}")
        if self.peer_rate <= 0 or self.backlog < 1:
            raise BenchConfigError(f"--peer-rate must be > 0 and --backlog >= 1, got {self.peer_rate}, {self.backlog}")

    @property
    def loads(self) -> tuple[float | None, ...]:
        return (None,) if self.max_throughput else self.rates


Progress = Callable[[str], None]


@dataclass
class _Measured:
    """A target, the processes behind it (for CPU and liveness) and the streams to empty after each phase."""

    target: Target
    pids: tuple[int, ...]
    alive: Callable[[], None]
    streams: tuple[str, ...] = ()


def run_bench(config: BenchConfig, progress: Progress = lambda message: None) -> BenchReport:
    with ExitStack() as cleanup:
        run_dir = config.run_dir or Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="tactical-bench-")))
        run = run_id()
        progress("building the workload from the simulator")
        workload = Workload.simulated(config.pool_size)

        progress("timing the model alone")
        ensemble = load_ensemble()
        with row_invariant_kernels:  # held through the loop, as the worker holds them while it serves
            model = measure_model(ensemble, workload, iterations=config.model_iterations)
            batched = measure_model(ensemble, workload, iterations=max(20, config.model_iterations // 20),
                                    batch_size=config.model_batch_size)
        del ensemble

        progress(f"starting Redis and {config.workers} worker(s) (loading and warming the models)")
        settings = {"torch_threads": "1", **config.worker_settings}
        stack = LocalStack(workers=config.workers, worker_settings=settings, run_dir=run_dir / "stack")
        cleanup.callback(stack.close)
        stack.start(wait_ready_s=STARTUP_TIMEOUT_S)
        assert stack.redis is not None and stack.redis.pid is not None
        url, redis_pid = stack.url, stack.redis.pid

        def workers_alive() -> None:
            for process in stack.processes:
                if process.poll() is not None:
                    raise WorkerStartError(process.consumer, f"exited with {process.poll()}", process.log_text())

        targets: dict[str, _Measured] = {}
        for name, module, streams in (("floor", "bench.floor", FLOOR_STREAMS),
                                      ("reference", "bench.reference", REFERENCE_STREAMS)):
            child = ChildProcess.module(name, module, ["--redis-url", url], run_dir / f"{name}.log").start()
            cleanup.callback(child.stop)
            target = StreamTarget(name, url, streams.input, streams.output)
            cleanup.callback(target.close)
            targets[name] = _Measured(target, (child.pid,), child.check_alive, (streams.input, streams.output))
        e2e = StreamTarget("e2e", url, INPUT_STREAM, DECISIONS_STREAM)
        cleanup.callback(e2e.close)
        targets["e2e"] = _Measured(e2e, tuple(p.pid for p in stack.processes), workers_alive,
                                   (INPUT_STREAM, DECISIONS_STREAM))
        if config.peer == "celery":
            from bench.peer_celery import CeleryTarget, start_celery_worker

            progress("starting the Celery peer")
            child = start_celery_worker(url, run_dir / "celery.log")
            cleanup.callback(child.stop)
            peer = CeleryTarget(url)
            cleanup.callback(peer.close)
            targets["peer"] = _Measured(peer, (child.pid,), child.check_alive)

        for name, measured in targets.items():
            progress(f"waiting for {name} to answer")
            wait_until_answering(measured.target, workload, f"{run}-{name}", timeout_s=STARTUP_TIMEOUT_S,
                                 alive=measured.alive)

        admin = redis.Redis.from_url(url)
        cleanup.callback(admin.close)
        points = []
        names = list(targets)
        for rate in config.loads:
            rounds: dict[str, list[PhaseResult]] = {name: [] for name in names}
            for turn in range(config.rounds):
                for name in names[turn % len(names):] + names[: turn % len(names)]:
                    measured = targets[name]
                    offered = rate if name != "peer" or rate is None else min(rate, config.peer_rate)
                    label = load_label(offered)
                    progress(f"{name} at {label} (round {turn + 1}/{config.rounds})")
                    phase = _measure_phase(name, measured, workload, config, offered, redis_pid,
                                           f"{run}-{name}-{label}-{turn}")
                    rounds[name].append(phase)
                    if phase.completed == phase.sent:
                        for stream in measured.streams:
                            admin.xtrim(stream, maxlen=0, approximate=False)
            phases = {name: PhaseResult.pooled(results) for name, results in rounds.items()}
            points.append(LoadPoint(rate=rate, e2e=phases["e2e"], floor=phases["floor"],
                                    reference=phases["reference"], peer=phases.get("peer")))

        return BenchReport(
            duration_s=config.duration_s,
            rounds=config.rounds,
            workers=config.workers,
            model=model,
            model_batch_us_per_event=batched.p50_ms * 1e3 / config.model_batch_size,
            model_batch_size=config.model_batch_size,
            points=tuple(points),
            machine=machine_info(admin),
        )


def _measure_phase(name: str, measured: _Measured, workload: Workload, config: BenchConfig, rate: float | None,
                   redis_pid: int, id_prefix: str) -> PhaseResult:
    drain_s = max(10.0, config.duration_s)
    if config.warmup_s > 0:
        measure_round_trips(measured.target, workload, Load(rate, config.warmup_s, config.backlog),
                            f"{id_prefix}-warmup", drain_timeout_s=drain_s, alive=measured.alive)
    process_cpu = CpuMeter(measured.pids).start()
    redis_cpu = CpuMeter([redis_pid]).start()
    client_cpu = CpuMeter([os.getpid()]).start()
    trips = measure_round_trips(measured.target, workload, Load(rate, config.duration_s / config.rounds,
                                                                config.backlog),
                                id_prefix, drain_timeout_s=drain_s, alive=measured.alive)
    return PhaseResult(
        name=name,
        rate=rate,
        latency=LatencySummary.from_seconds(trips.latencies_s),
        latencies_s=trips.latencies_s,
        sent=trips.sent,
        completed=trips.completed,
        elapsed_s=trips.elapsed_s,
        process_cpu_s=process_cpu.stop(),
        redis_cpu_s=redis_cpu.stop(),
        client_cpu_s=client_cpu.stop(),
    )


def machine_info(client: redis.Redis | None = None) -> dict[str, Any]:
    """What the figures were measured on: cores, CPU model, load, versions."""
    import torch

    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if client is not None:
        server = client.info("server")
        info["redis"] = server.get("redis_version")  # Redis-compatible, on Valkey too
        info["server"] = server_label(server)
    return info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
