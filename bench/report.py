"""Benchmark figures: percentiles, ratios, the `--json` document, the Rich table and the latency-vs-rate plot."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True, slots=True)
class LatencySummary:
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> LatencySummary:
        """Percentiles by linear interpolation between the closest ranks; NaN for no samples (never a made-up 0)."""
        if len(samples) == 0:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        ms = np.asarray(samples, dtype=np.float64) * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99]).tolist()
        return cls(len(ms), p50, p90, p99, float(ms.max()))

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "p50_ms": _round(self.p50_ms),
            "p90_ms": _round(self.p90_ms),
            "p99_ms": _round(self.p99_ms),
            "max_ms": _round(self.max_ms),
        }


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """One target measured under one load: latency from the client side, throughput, CPU."""

    name: str
    rate: float | None  # offered events/s; None: as fast as taken
    latency: LatencySummary
    sent: int
    completed: int
    elapsed_s: float
    process_cpu_s: float | None = None  # the target's own processes (worker, floor, reference, Celery)
    redis_cpu_s: float | None = None
    # This process, which sends the events and reads the answers: its share of the cores is the target's cost too
    # (a bigger answer costs the client more to read).
    client_cpu_s: float | None = None
    latencies_s: tuple[float, ...] = field(default=(), repr=False)  # the samples behind `latency`, for pooling

    @classmethod
    def pooled(cls, rounds: Sequence[PhaseResult]) -> PhaseResult:
        """One target's rounds as one phase: latency samples pooled (percentiles of all of them, not an average of
        percentiles); events, time and CPU added up."""
        if not rounds or len({(r.name, r.rate) for r in rounds}) != 1:
            raise ValueError(f"pool the rounds of one target at one load, got {[(r.name, r.rate) for r in rounds]}")
        if any(len(r.latencies_s) != r.completed for r in rounds):
            raise ValueError("every round must carry its latency samples to be pooled")
        samples = tuple(sample for r in rounds for sample in r.latencies_s)
        return cls(
            name=rounds[0].name,
            rate=rounds[0].rate,
            latency=LatencySummary.from_seconds(samples),
            sent=sum(r.sent for r in rounds),
            completed=sum(r.completed for r in rounds),
            elapsed_s=sum(r.elapsed_s for r in rounds),
            process_cpu_s=_total(r.process_cpu_s for r in rounds),
            redis_cpu_s=_total(r.redis_cpu_s for r in rounds),
            client_cpu_s=_total(r.client_cpu_s for r in rounds),
            latencies_s=samples,
        )

    @property
    def throughput_eps(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def cpu_us_per_event(self) -> float | None:
        return _per_event_us(self.process_cpu_s, self.completed)

    @property
    def redis_cpu_us_per_event(self) -> float | None:
        return _per_event_us(self.redis_cpu_s, self.completed)

    @property
    def client_cpu_us_per_event(self) -> float | None:
        return _per_event_us(self.client_cpu_s, self.completed)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.latency.to_json(),
            "rate": self.rate,
            "sent": self.sent,
            "completed": self.completed,
            "throughput_eps": _round(self.throughput_eps, 1),
            "cpu_us_per_event": _round(self.cpu_us_per_event, 1),
            "redis_cpu_us_per_event": _round(self.redis_cpu_us_per_event, 1),
            "client_cpu_us_per_event": _round(self.client_cpu_us_per_event, 1),
        }


@dataclass(frozen=True, slots=True)
class LoadPoint:
    """Every target under one offered load (a rate, or --max), measured back to back."""

    rate: float | None
    e2e: PhaseResult
    floor: PhaseResult
    reference: PhaseResult
    peer: PhaseResult | None = None

    def ratios(self) -> dict[str, float | None]:
        ratios = {
            "e2e_p50_over_floor_p50": ratio(self.e2e.latency.p50_ms, self.floor.latency.p50_ms),
            "e2e_p99_over_floor_p99": ratio(self.e2e.latency.p99_ms, self.floor.latency.p99_ms),
            "e2e_p50_over_reference_p50": ratio(self.e2e.latency.p50_ms, self.reference.latency.p50_ms),
        }
        if self.rate is None:  # throughput means something only when every target ran flat out
            ratios["e2e_throughput_over_reference"] = ratio(self.e2e.throughput_eps, self.reference.throughput_eps)
        if self.peer is not None:
            ratios["peer_p50_over_e2e_p50"] = ratio(self.peer.latency.p50_ms, self.e2e.latency.p50_ms)
            ratios["peer_p99_over_e2e_p99"] = ratio(self.peer.latency.p99_ms, self.e2e.latency.p99_ms)
            if self.rate is None:
                ratios["e2e_throughput_over_peer"] = ratio(self.e2e.throughput_eps, self.peer.throughput_eps)
        return {name: _round(value, 3) for name, value in ratios.items()}

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "rate": self.rate,
            "e2e": self.e2e.to_json(),
            "floor": self.floor.to_json(),
            "reference": self.reference.to_json(),
            "throughput_eps": _round(self.e2e.throughput_eps, 1),
            "ratios": self.ratios(),
        }
        if self.peer is not None:
            doc["peer"] = self.peer.to_json()
        return doc


@dataclass(frozen=True)
class BenchReport:
    duration_s: float
    workers: int
    model: LatencySummary  # batch 1
    model_batch_us_per_event: float  # at the worker's read batch size
    model_batch_size: int
    points: tuple[LoadPoint, ...]
    machine: dict[str, Any] = field(default_factory=dict)
    rounds: int = 1  # turns each target took per load; `duration_s` is over all of them

    def to_json(self) -> dict[str, Any]:
        """The documented keys, from the first load point; `sweep` holds every point when there are several."""
        head = self.points[0]
        doc = {
            **head.to_json(),
            "mode": "max" if head.rate is None else "rate",
            "duration_s": self.duration_s,
            "rounds": self.rounds,
            "workers": self.workers,
            "model": {
                **self.model.to_json(),
                "batch": 1,
                f"batch_{self.model_batch_size}_us_per_event": _round(self.model_batch_us_per_event, 2),
            },
            "machine": self.machine,
        }
        if len(self.points) > 1:
            doc["sweep"] = [point.to_json() for point in self.points]
        return doc


def _total(values: Iterable[float | None]) -> float | None:
    """The sum, or None when any part was not measured."""
    parts = list(values)
    return None if any(v is None for v in parts) else sum(v for v in parts if v is not None)


def _per_event_us(seconds: float | None, events: int) -> float | None:
    return None if seconds is None or events == 0 else seconds / events * 1e6


def load_label(rate: float | None) -> str:
    """An offered load as the reports name it: "1000/s", or "max" for as fast as taken."""
    return "max" if rate is None else f"{rate:g}/s"


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when either figure is unknown (NaN) or the denominator is not positive."""
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator <= 0:
        return None
    return numerator / denominator


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def _ms(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _number(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def render_table(report: BenchReport) -> Group:
    """Latency percentiles per target and load, then throughput and CPU per event, then the ratios. Two tables,
    so that each fits 80 columns (a log file's width) without a figure folded or cut."""
    latency = Table(title=f"tactical-marl bench — {report.workers} worker(s), {report.duration_s:g}s per target and "
                          f"load in {report.rounds} alternating round(s)")
    cost = Table(title="throughput and CPU per event")
    for table, names in ((latency, ("target", "load", "p50 ms", "p90 ms", "p99 ms", "max ms", "done/sent")),
                         (cost, ("target", "load", "events/s", "CPU µs/event", "Redis µs/event", "client µs/event"))):
        for name in names:
            # Folded, never cut, where a terminal is narrower still.
            table.add_column(name, justify="left" if name in ("target", "load") else "right", overflow="fold")
    model = report.model
    latency.add_row("model alone", "batch 1", _ms(model.p50_ms), _ms(model.p90_ms), _ms(model.p99_ms),
                    _ms(model.max_ms), f"{model.count}")
    for point in report.points:
        for phase in (point.floor, point.reference, point.e2e, point.peer):
            if phase is None:
                continue
            shown_load = load_label(phase.rate)  # the peer's may differ from the point's
            lat = phase.latency
            style = "bold" if phase.name == "e2e" else None
            latency.add_row(phase.name, shown_load, _ms(lat.p50_ms), _ms(lat.p90_ms), _ms(lat.p99_ms),
                            _ms(lat.max_ms), f"{phase.completed}/{phase.sent}", style=style)
            cost.add_row(phase.name, shown_load, _number(phase.throughput_eps), _number(phase.cpu_us_per_event),
                         _number(phase.redis_cpu_us_per_event), _number(phase.client_cpu_us_per_event), style=style)
    captions = []
    for point in report.points:
        r = point.ratios()
        parts = [f"e2e/floor p50 {_x(r['e2e_p50_over_floor_p50'])}", f"p99 {_x(r['e2e_p99_over_floor_p99'])}"]
        if "e2e_throughput_over_reference" in r:
            parts.append(f"e2e/reference throughput {_x(r['e2e_throughput_over_reference'])}")
        if "peer_p50_over_e2e_p50" in r:
            parts.append(f"peer/e2e p50 {_x(r['peer_p50_over_e2e_p50'])}")
        if "e2e_throughput_over_peer" in r:
            parts.append(f"e2e/peer throughput {_x(r['e2e_throughput_over_peer'])}")
        captions.append(f"{load_label(point.rate)}: " + ", ".join(parts))
    # Below the tables, not a caption: a caption wraps at its table's width.
    ratios = Text("\n".join(captions) + f"\nmodel at batch {report.model_batch_size}: "
                  f"{report.model_batch_us_per_event:.1f} µs/event")
    return Group(latency, cost, ratios)


def plot_latency(report: BenchReport, path: Path) -> Path:
    """p50 and p99 against offered rate for each target, on log axes, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    points = [point for point in report.points if point.rate is not None]
    if not points:
        raise ValueError("a latency-vs-rate plot needs at least one --rate (not only --max)")
    figure, axis = plt.subplots(figsize=(8, 5), dpi=120)
    colours = {"e2e": "tab:blue", "floor": "tab:gray", "reference": "tab:green", "peer": "tab:red"}
    for name, colour in colours.items():
        phases = [getattr(point, name) for point in points]
        shown = [(phase.rate, phase.latency) for phase in phases if phase is not None and phase.rate is not None]
        if not shown:
            continue
        rates = [rate for rate, _ in shown]
        axis.plot(rates, [lat.p50_ms for _, lat in shown], "o-", color=colour, label=f"{name} p50")
        axis.plot(rates, [lat.p99_ms for _, lat in shown], "s--", color=colour, label=f"{name} p99", alpha=0.7)
    axis.set_xscale("log")
    axis.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axis.xaxis.set_major_formatter(plain)
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xticks([point.rate for point in points if point.rate is not None])
    axis.yaxis.set_major_formatter(plain)
    axis.yaxis.set_minor_formatter(plain)
    axis.set_xlabel("offered load (events/s)")
    axis.set_ylabel("latency, XADD → reply readable (ms)")
    axis.set_title(f"tactical-marl: latency against rate ({report.workers} worker(s))")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
