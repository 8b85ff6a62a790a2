"""The performance targets this project set itself, judged against one benchmark run.

The targets (README, "Performance"), each measured within one run so that a ratio never compares two moments of a
shared machine:
- at 1,000 events/s: e2e p50 ≤ 1 ms, e2e p99 ≤ 2 ms, e2e p50 ≤ 2× the floor's p50;
- `--max`: ≥ 6,000 events/s with one worker process, ≥ 0.70× the reference loop's throughput;
- with `--peer`: the peer's p50 ≥ 5× the worker's (at a fixed rate), and the worker's throughput ≥ 10× the peer's
  (under `--max`).
A target is judged only where the run measured it: the latency targets at exactly 1,000/s, the 6,000 events/s with
one worker, latency against the peer at a fixed rate (flat out, a p50 is the length of each one's queue, not its
speed). A figure the run could not produce (no samples) is "unknown", never met.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.table import Table
from rich.text import Text

from bench.report import BenchReport, LoadPoint, load_label, ratio

TARGET_RATE = 1000.0  # the offered load the latency targets are set at


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    unit: str  # "ms", "×" or "events/s"
    limit: float
    at_most: bool  # met when the value is <= limit (else >= limit)
    value: Callable[[BenchReport, LoadPoint], float | None]
    applies: Callable[[BenchReport, LoadPoint], bool]

    @property
    def wanted(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {_shown(self.limit, self.unit, _DECIMALS[self.unit])}"

    def meets(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit


@dataclass(frozen=True, slots=True)
class TargetResult:
    target: Target
    load: str  # "1000/s" or "max"
    value: float | None

    @property
    def measured(self) -> float | None:
        """The value, or None when the run could not produce it (no samples: NaN)."""
        return None if self.value is None or not math.isfinite(self.value) else self.value

    @property
    def met(self) -> bool | None:
        """None when the run could not measure it."""
        value = self.measured
        return None if value is None else self.target.meets(value)

    def decimals(self, fewest: int) -> int:
        """Decimals to show the value with: `fewest`, or more where that many would round it onto the other side of
        the limit (2.0004× judged above ≤ 2.00× must not read "2.00×  no")."""
        value, met = self.measured, self.met
        digits = fewest
        while value is not None and digits < 9 and self.target.meets(round(value, digits)) != met:
            digits += 1
        return digits

    def to_json(self) -> dict[str, Any]:
        value = self.measured
        return {"target": self.target.name, "load": self.load, "wanted": self.target.wanted,
                "value": None if value is None else round(value, self.decimals(3)), "met": self.met}


def _at_target_rate(report: BenchReport, point: LoadPoint) -> bool:
    return point.rate == TARGET_RATE


def _flat_out(report: BenchReport, point: LoadPoint) -> bool:
    return point.rate is None


TARGETS: tuple[Target, ...] = (
    Target("e2e p50", "ms", 1.0, True, lambda r, p: p.e2e.latency.p50_ms, _at_target_rate),
    Target("e2e p99", "ms", 2.0, True, lambda r, p: p.e2e.latency.p99_ms, _at_target_rate),
    Target("e2e p50 / floor p50", "×", 2.0, True,
           lambda r, p: ratio(p.e2e.latency.p50_ms, p.floor.latency.p50_ms), _at_target_rate),
    Target("throughput, one worker process", "events/s", 6000.0, False, lambda r, p: p.e2e.throughput_eps,
           lambda r, p: _flat_out(r, p) and r.workers == 1),
    Target("throughput / reference loop's", "×", 0.70, False,
           lambda r, p: ratio(p.e2e.throughput_eps, p.reference.throughput_eps), _flat_out),
    Target("peer p50 / e2e p50", "×", 5.0, False,
           lambda r, p: ratio(p.peer.latency.p50_ms, p.e2e.latency.p50_ms) if p.peer else None,
           lambda r, p: p.peer is not None and p.rate is not None),
    Target("throughput / peer's", "×", 10.0, False,
           lambda r, p: ratio(p.e2e.throughput_eps, p.peer.throughput_eps) if p.peer else None,
           lambda r, p: p.peer is not None and p.rate is None),
)


def judge(report: BenchReport) -> list[TargetResult]:
    """Every target the run measured, load by load, in the order above."""
    return [TargetResult(target, load_label(point.rate), target.value(report, point))
            for point in report.points for target in TARGETS if target.applies(report, point)]


_DECIMALS = {"events/s": 0, "×": 2, "ms": 2}  # as the table shows each unit


def _shown(value: float, unit: str, decimals: int) -> str:
    if unit == "events/s":
        return f"{value:,.{decimals}f} events/s"
    if unit == "×":
        return f"{value:.{decimals}f}×"
    return f"{value:.{decimals}f} ms"


def shown_value(result: TargetResult) -> str:
    value, unit = result.measured, result.target.unit
    return "unknown" if value is None else _shown(value, unit, result.decimals(_DECIMALS[unit]))


def render_targets(results: list[TargetResult]) -> Table:
    """One row per target judged: what it asks, what this run measured, whether that meets it."""
    table = Table(title="targets (README, \"Performance\"), judged within this run")
    for name in ("target", "load", "wanted", "this run", "met"):
        table.add_column(name, justify="right" if name in ("wanted", "this run") else "left", overflow="fold")
    verdicts = {True: Text("yes", style="green"), False: Text("no", style="red"), None: Text("unknown", style="yellow")}
    for result in results:
        table.add_row(result.target.name, result.load, result.target.wanted, shown_value(result),
                      verdicts[result.met])
    return table
