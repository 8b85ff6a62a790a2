"""Paired A/B of two source trees of this project: is B's worker faster than A's, on a machine whose load drifts?

Starts one stack per tree — its own embedded Redis and one worker running that tree's code — and drives them in
alternating windows (A then B, then B then A, ...) at a fixed `--rate` or `--max`, with this process's `bench.e2e`
driver. The two windows of a pair are seconds apart, so drift in the machine's background load falls on both; the
report gives each side's median, the median of the paired differences (B − A) and in how many pairs B was better.
Changes of a few percent, invisible between two separate `tacticalctl bench` runs here, show up this way.

Run as `python -m bench.ab --a TREE_A --b TREE_B [--rate 1000 | --max] [--window 2] [--pairs 12] [--json]`, the trees
being checkouts of the project (`git worktree add /tmp/tree-a <commit>`). Each side's worker is started inside its
tree, and a side whose worker would import its code from anywhere else (this checkout, an installed copy) is refused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.cpu import CpuMeter
from bench.e2e import Load, StreamTarget, measure_round_trips, wait_until_answering
from bench.workload import Workload
from worker.names import DECISIONS_STREAM, INPUT_STREAM
from worker.process import WorkerProcess
from worker.stack import LocalStack

SIDES = ("a", "b")
METRICS = ("p50_ms", "p99_ms", "throughput_eps", "cpu_us_per_event", "redis_cpu_us_per_event")
HIGHER_IS_BETTER = {"throughput_eps"}
STARTUP_TIMEOUT_S = 120.0


class SourceTreeError(ValueError):
    """A path given as a tree is not a checkout of this project."""


@dataclass(frozen=True, slots=True)
class Window:
    """One side measured for one window."""

    p50_ms: float
    p99_ms: float
    throughput_eps: float
    cpu_us_per_event: float  # the worker's
    redis_cpu_us_per_event: float  # its Redis's main process (the commit scripts run there)


@dataclass(frozen=True, slots=True)
class Comparison:
    metric: str
    a_median: float
    b_median: float
    paired_difference_median: float  # B − A, pair by pair
    b_better: int
    pairs: int


def source_tree(path: Path) -> Path:
    tree = path.resolve()
    if not (tree / "worker" / "cli.py").is_file():
        raise SourceTreeError(f"{path} is not a checkout of tactical-marl (no worker/cli.py): make one with "
                              "`git worktree add <dir> <commit>`")
    return tree


def check_runs_tree(side: str, process: WorkerProcess, tree: Path) -> None:
    """Refuse to measure a side whose worker imported its code from anywhere but its tree: both sides would then
    be the same build, and every difference noise."""
    code_dir = process.code_dir()
    if code_dir != tree:
        raise SourceTreeError(f"side {side}'s worker runs the code in {code_dir}, not the tree {tree}")


def measure_pairs(trees: dict[str, Path], rate: float | None, window_s: float, pairs: int,
                  progress: Callable[[str], None] = lambda message: None) -> dict[str, list[Window]]:
    """`pairs` windows of each side, alternating which goes first."""
    workload = Workload.simulated(256)
    windows: dict[str, list[Window]] = {side: [] for side in SIDES}
    with ExitStack() as cleanup:
        run_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="tactical-ab-")))
        targets = {}
        for side in SIDES:
            progress(f"starting side {side} from {trees[side]}")
            stack = LocalStack(workers=1, worker_settings={"torch_threads": "1"}, run_dir=run_dir / side,
                               worker_source_tree=trees[side])
            cleanup.callback(stack.close)
            stack.start(wait_ready_s=STARTUP_TIMEOUT_S)
            check_runs_tree(side, stack.processes[0], trees[side])
            target = StreamTarget(side, stack.url, INPUT_STREAM, DECISIONS_STREAM)
            cleanup.callback(target.close)
            wait_until_answering(target, workload, f"ab-{side}", timeout_s=STARTUP_TIMEOUT_S)
            measure_round_trips(target, workload, Load(rate, min(1.0, window_s)), f"ab-{side}-warmup")
            targets[side] = (stack, target)
        for pair in range(pairs):
            for side in SIDES if pair % 2 == 0 else SIDES[::-1]:
                progress(f"pair {pair + 1}/{pairs}: side {side}")
                stack, target = targets[side]
                cpu = CpuMeter(process.pid for process in stack.processes).start()
                assert stack.redis is not None and stack.redis.pid is not None, "each side runs its own Redis"
                redis_cpu = CpuMeter([stack.redis.pid]).start()
                trips = measure_round_trips(target, workload, Load(rate, window_s), f"ab-{side}-{pair}")
                latencies = sorted(trips.latencies_s)
                if not latencies:
                    raise RuntimeError(f"side {side} answered nothing in window {pair + 1}: see its log in {run_dir}")
                windows[side].append(Window(
                    p50_ms=statistics.median(latencies) * 1e3,
                    p99_ms=latencies[int(0.99 * (len(latencies) - 1))] * 1e3,
                    throughput_eps=trips.throughput_eps,
                    cpu_us_per_event=cpu.stop() / trips.completed * 1e6,
                    redis_cpu_us_per_event=redis_cpu.stop() / trips.completed * 1e6,
                ))
    return windows


def compare(windows: dict[str, list[Window]]) -> list[Comparison]:
    rows = []
    for metric in METRICS:
        a = [getattr(w, metric) for w in windows["a"]]
        b = [getattr(w, metric) for w in windows["b"]]
        differences = [y - x for x, y in zip(a, b, strict=True)]
        better = sum(1 for d in differences if (d > 0 if metric in HIGHER_IS_BETTER else d < 0))
        rows.append(Comparison(metric, statistics.median(a), statistics.median(b), statistics.median(differences),
                               better, len(differences)))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="the baseline tree")
    parser.add_argument("--b", type=Path, required=True, help="the tree compared with it")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, default=1000.0, help="offered events/s (default 1000)")
    load.add_argument("--max", action="store_true", help="as fast as each worker takes events")
    parser.add_argument("--window", type=float, default=2.0, help="seconds per side and pair")
    parser.add_argument("--pairs", type=int, default=12, help="windows per side")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.window <= 0 or args.pairs < 1:
        parser.error("--rate and --window must be > 0, --pairs at least 1")
    try:
        trees = {"a": source_tree(args.a), "b": source_tree(args.b)}
    except SourceTreeError as exc:
        parser.error(str(exc))
    try:
        rows = compare(measure_pairs(trees, None if args.max else args.rate, args.window, args.pairs))
    except SourceTreeError as exc:
        print(f"bench.ab: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"trees": {side: str(tree) for side, tree in trees.items()},
                          "load": "max" if args.max else args.rate, "window_s": args.window,
                          "comparisons": [asdict(row) for row in rows]}, indent=2))
        return 0
    print(f"{'metric':<24}{'A median':>12}{'B median':>12}{'B − A (paired)':>16}{'B better':>10}")
    for row in rows:
        print(f"{row.metric:<24}{row.a_median:>12.3f}{row.b_median:>12.3f}{row.paired_difference_median:>+16.3f}"
              f"{f'{row.b_better}/{row.pairs}':>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
