"""Supervised training data for the agents: simulated bars → (60, 7) feature windows and forward-return labels.

Label of bar i (known only `horizon` bars later, so never a model input):
    move = close[i + horizon] − close[i]
    long  (index 2) if move >  atr_multiple · ATR14[i]
    short (index 0) if move < −atr_multiple · ATR14[i]
    hold  (index 1) otherwise
i.e. "is a trade entered at this bar's close clearly in profit (or loss) `horizon` bars later, measured in the
volatility of the moment". The defaults, 24 bars (2 hours) and 1.5 ATR, sit between the worker's stop-loss (2 ATR)
and the time such a move takes; hold stays the most frequent label, so "always hold" is the baseline to beat.
Shorter horizons (6-12 bars) were tried: the next 30-60 minutes are mostly noise in the simulated market (even an
oracle knowing the regime is right < 57% of the time), so no agent reaches the vote's 0.65 bar and nothing trades.

Every bar with a full 60-bar window and a known label is a sample; synergy bars (where the worker is actually
asked) are marked with their type and direction for evaluation.

Windows are not copied per sample: each sample is the index of its window's last row in one feature array,
and `windows()` gathers a batch on demand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from models.features import average_true_range, build_features
from models.simulator import SimulatorConfig, simulate_bars
from models.synergy import ATR_PERIOD, detect_synergies
from worker.actions import Action
from worker.records import MATRIX_ROWS, SynergyType

NO_SYNERGY = -1
SYNERGY_TYPES: tuple[SynergyType, ...] = tuple(SynergyType)
_WINDOW_OFFSETS = np.arange(-(MATRIX_ROWS - 1), 1)


@dataclass(frozen=True)
class LabelConfig:
    horizon: int = 24
    atr_multiple: float = 1.5

    def __post_init__(self) -> None:
        if self.horizon < 1 or not self.atr_multiple > 0:
            raise ValueError(f"label horizon must be >= 1 and atr_multiple > 0, got {self}")

    def describe(self) -> str:
        return (
            f"long if close[i+{self.horizon}] - close[i] > {self.atr_multiple} x ATR{ATR_PERIOD}[i], "
            f"short if < -{self.atr_multiple} x ATR{ATR_PERIOD}[i], else hold"
        )


def forward_labels(close: np.ndarray, atr: np.ndarray, config: LabelConfig) -> np.ndarray:
    """Action index per bar (0 short, 1 hold, 2 long); -1 for the last `horizon` bars, whose future is unknown."""
    labels = np.full(close.shape[0], -1, dtype=np.int64)
    h = config.horizon
    if close.shape[0] <= h:
        return labels
    move = close[h:] - close[:-h]
    threshold = config.atr_multiple * atr[:-h]
    known = np.full(move.shape[0], Action.HOLD.index, dtype=np.int64)
    known[move > threshold] = Action.LONG.index
    known[move < -threshold] = Action.SHORT.index
    labels[:-h] = known
    return labels


@dataclass(frozen=True, eq=False)
class WindowDataset:
    """Samples over one concatenated feature array; all per-sample arrays have the same length."""

    features: np.ndarray  # (rows, 7) float32, every seed's bars one after another
    ends: np.ndarray  # (samples,) int64: row of each window's last (current) bar in `features`
    labels: np.ndarray  # (samples,) int64 action index
    synergy_type: np.ndarray  # (samples,) int8 index into SYNERGY_TYPES, NO_SYNERGY if not a synergy bar
    direction: np.ndarray  # (samples,) int8 synergy direction (+1/-1), 0 if not a synergy bar
    seed: np.ndarray  # (samples,) int64 simulator seed the sample came from
    price: np.ndarray  # (samples,) float64 close of the sample's bar (what an event carries as `price`)
    atr: np.ndarray  # (samples,) float64 ATR14 at the sample's bar (an event's `atr`)

    def __len__(self) -> int:
        return int(self.ends.shape[0])

    def windows(self, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """(k, 60, 7) float32 matrices of the selected samples, oldest bar first (as events carry them)."""
        ends = self.ends if rows is None else self.ends[rows]
        return self.features[ends[:, None] + _WINDOW_OFFSETS]

    def subset(self, mask: np.ndarray) -> WindowDataset:
        return WindowDataset(
            features=self.features,
            ends=self.ends[mask],
            labels=self.labels[mask],
            synergy_type=self.synergy_type[mask],
            direction=self.direction[mask],
            seed=self.seed[mask],
            price=self.price[mask],
            atr=self.atr[mask],
        )

    @property
    def is_synergy(self) -> np.ndarray:
        return self.synergy_type != NO_SYNERGY

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=3)

    def sha256(self) -> str:
        """Content hash of exactly what the agents see and are scored against."""
        digest = hashlib.sha256()
        arrays = (self.features, self.ends, self.labels, self.synergy_type, self.direction, self.seed, self.price)
        for array in arrays:
            digest.update(str(array.dtype).encode() + str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def build_dataset(seeds: Sequence[int], *, n_bars: int, labels: LabelConfig) -> WindowDataset:
    """Every labelled full-window bar of `SimulatorConfig(seed=s, n_bars=n_bars)` for each seed."""
    feature_blocks, ends, label_blocks, type_blocks, direction_blocks, seed_blocks = [], [], [], [], [], []
    price_blocks, atr_blocks = [], []
    offset = 0
    for seed in seeds:
        bars = simulate_bars(SimulatorConfig(seed=seed, n_bars=n_bars))
        features = build_features(bars)
        atr = average_true_range(bars, ATR_PERIOD)
        bar_labels = forward_labels(bars.close, atr, labels)
        synergy_type = np.full(len(bars), NO_SYNERGY, dtype=np.int8)
        direction = np.zeros(len(bars), dtype=np.int8)
        for synergy in detect_synergies(bars, features):
            synergy_type[synergy.index] = SYNERGY_TYPES.index(synergy.synergy_type)
            direction[synergy.index] = synergy.direction
        usable = np.flatnonzero(bar_labels >= 0)
        usable = usable[usable >= MATRIX_ROWS - 1]
        feature_blocks.append(features)
        ends.append(usable + offset)
        label_blocks.append(bar_labels[usable])
        type_blocks.append(synergy_type[usable])
        direction_blocks.append(direction[usable])
        seed_blocks.append(np.full(usable.shape[0], seed, dtype=np.int64))
        price_blocks.append(bars.close[usable])
        atr_blocks.append(atr[usable])
        offset += len(bars)
    if not feature_blocks:
        raise ValueError("build_dataset needs at least one seed")
    return WindowDataset(
        features=np.concatenate(feature_blocks).astype(np.float32),
        ends=np.concatenate(ends).astype(np.int64),
        labels=np.concatenate(label_blocks),
        synergy_type=np.concatenate(type_blocks),
        direction=np.concatenate(direction_blocks),
        seed=np.concatenate(seed_blocks),
        price=np.concatenate(price_blocks).astype(np.float64),
        atr=np.concatenate(atr_blocks).astype(np.float64),
    )


def describe_dataset(dataset: WindowDataset, seeds: Sequence[int], n_bars: int, labels: LabelConfig) -> dict:
    """What the manifest records about a dataset: where it came from, its label rule, size, balance and hash."""
    counts = dataset.class_counts()
    return {
        "source": "models.simulator.simulate_bars",
        "seeds": list(seeds),
        "n_bars_per_seed": n_bars,
        "samples": len(dataset),
        "synergy_samples": int(dataset.is_synergy.sum()),
        "label": {**asdict(labels), "rule": labels.describe()},
        "class_counts": {"short": int(counts[0]), "hold": int(counts[1]), "long": int(counts[2])},
        "sha256": dataset.sha256(),
    }
