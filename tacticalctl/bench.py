"""`tacticalctl bench`: the worker end to end beside the floor, the model alone, a bare reference loop and a peer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tacticalctl.context import JsonOption, get_context, print_json
from tacticalctl.errors import CtlError, ExitCode


def bench(
    ctx: typer.Context,
    rate: Annotated[list[float] | None, typer.Option(
        help="Offered events/s; repeat for a sweep (the first rate is the headline). Default 1000.")] = None,
    max_throughput: Annotated[bool, typer.Option(
        "--max", help="Drive every target as fast as it takes events, instead of at --rate.")] = False,
    duration: Annotated[float, typer.Option(help="Seconds measured per target and load, over all rounds.",
                                            min=0.1)] = 10.0,
    warmup: Annotated[float, typer.Option(help="Seconds of unmeasured load before each round of a target.",
                                          min=0.0)] = 1.0,
    rounds: Annotated[int, typer.Option(
        help="Turns each target takes per load, alternating, samples pooled: drift in the machine's background load "
             "falls on every target alike.", min=1, max=20)] = 3,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1, max=16)] = 1,
    peer: Annotated[str | None, typer.Option(help="Also measure a peer: 'celery' (needs the bench extra).")] = None,
    peer_rate: Annotated[float, typer.Option(
        help="The peer's latency is measured at min(--rate, this): a rate it can sustain.", min=0.1)] = 100.0,
    backlog: Annotated[int, typer.Option(help="--max: events in flight at most.", min=1)] = 2000,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of latency against rate (use several --rate).",
                                              dir_okay=False)] = None,
    logs: Annotated[Path | None, typer.Option(help="Keep every process's log in this directory.",
                                              file_okay=False)] = None,
    json_output: JsonOption = False,
) -> None:
    """Benchmark here: embedded Redis, N workers; latency from the producer's XADD to the decision being readable.

    Beside the worker it measures the floor, the model alone and a bare reference loop (and with --peer, Celery), then
    judges the README's performance targets within the run: at 1000/s e2e p50 <= 1 ms, p99 <= 2 ms and p50 <= 2x the
    floor's; with --max >= 6,000 events/s from one worker and >= 0.70x the reference loop; >= 5x the peer on p50 (at a
    fixed rate) and >= 10x on throughput (with --max). The exit code does not depend on them: a benchmark on a shared
    machine reports, it does not gate."""
    try:
        import bench  # noqa: F401
    except ImportError:
        raise CtlError("the benchmark is not installed here (the container image leaves bench/ out): run it from a "
                       "source checkout, `pip install -e . && tacticalctl bench`; it starts its own Redis and workers",
                       ExitCode.UNKNOWN) from None
    from bench.child import BenchProcessError
    from bench.e2e import RoundTripError
    from bench.report import plot_latency, render_table
    from bench.run import BenchConfig, BenchConfigError, run_bench
    from bench.targets import judge, render_targets
    from worker.embedded_redis import EmbeddedRedisError
    from worker.process import WorkerStartError

    console = get_context(ctx).console
    try:
        config = BenchConfig(rates=tuple(rate or (1000.0,)), max_throughput=max_throughput, duration_s=duration,
                             warmup_s=warmup, rounds=rounds, workers=workers, peer=peer, peer_rate=peer_rate,
                             backlog=backlog, run_dir=logs)
    except BenchConfigError as exc:
        raise CtlError(str(exc), ExitCode.UNKNOWN) from None
    if plot is not None and max_throughput:
        raise CtlError("--plot draws latency against --rate; it cannot be combined with --max", ExitCode.UNKNOWN)
    if peer == "celery":
        try:
            import celery  # noqa: F401
        except ImportError:
            raise CtlError("--peer celery needs Celery: pip install -e '.[bench]'", ExitCode.UNKNOWN) from None

    try:
        if json_output:
            report = run_bench(config)
        else:
            with console.status("bench: starting") as status:
                report = run_bench(config, progress=lambda message: status.update(f"bench: {message}"))
    except (WorkerStartError, BenchProcessError, RoundTripError, EmbeddedRedisError) as exc:
        raise CtlError(f"bench could not run: {exc}", ExitCode.UNKNOWN) from None
    if plot is not None:
        plot_latency(report, plot)
    targets = judge(report)
    if json_output:
        print_json({**report.to_json(), "targets": [result.to_json() for result in targets]})
        return
    console.print(render_table(report))
    if targets:
        console.print(render_targets(targets))
    machine = report.machine
    console.print(f"machine: {machine.get('nproc')} cores, {machine.get('cpu_model')}, "
                  f"load {machine.get('load_avg_1m')}, {machine.get('server')}, torch {machine.get('torch')}")
    if plot is not None:
        console.print(f"plot written to {plot}")


def register(app: typer.Typer) -> None:
    app.command()(bench)
