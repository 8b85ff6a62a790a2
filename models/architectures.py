"""The three tactical agents: (B, 60, 7) float32 matrix → (probabilities (B, 3) in ACTION_ORDER, confidence (B,)).

Each agent's confidence is its directional conviction: how strongly it prefers one direction over the other,
max(p_long, p_short) / (p_long + p_short), in [0.5, 1], with no extra head to train or calibrate. It answers the
runbook's question ("can the models still tell long from short?"): about 0.7 on held-out simulated markets, near
0.5 when the inputs carry no signal (a flat or dead feed), so the runbook's 0.6 alert means something. The largest
action probability would not do: a calibrated 3-class forecast of a noisy market sits near 0.55 all the time.

All three are small enough to run at batch 1 in tens of
microseconds and compile with `torch.jit.script`.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from worker.actions import ACTION_ORDER, AGENT_NAMES
from worker.records import MATRIX_COLS

N_ACTIONS = len(ACTION_ORDER)
FVG_FIRST, FVG_END = 0, 5  # fvg_bullish_active … fvg_mitigation_signal
MOMENTUM_FIRST, MOMENTUM_END = 5, 7  # price_momentum_5, volume_ratio


def probabilities_and_confidence(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    probabilities = torch.softmax(logits, dim=-1)
    short, long = probabilities[:, 0], probabilities[:, 2]
    confidence = torch.maximum(short, long) / (short + long)
    return probabilities, confidence


class InputNormalization(nn.Module):
    """Per-column (x − mean) / std with statistics of the training data, carried inside the compiled file so
    inference normalises exactly as training did. Identity until `fit` is called."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(MATRIX_COLS))
        self.register_buffer("inverse_std", torch.ones(MATRIX_COLS))
        # Declared for mypy (which types a buffer `Tensor | Module`), here rather than in the class body: TorchScript
        # cannot resolve a class annotation under postponed annotations.
        self.mean: torch.Tensor
        self.inverse_std: torch.Tensor

    def fit(self, features: torch.Tensor) -> None:
        """`features` (rows, 7): every feature row of the training data."""
        self.mean.copy_(features.mean(dim=0))
        self.inverse_std.copy_(1.0 / features.std(dim=0).clamp_min(1e-3))

    def forward(self, matrix: torch.Tensor) -> torch.Tensor:
        return (matrix - self.mean) * self.inverse_std


class FVGAgent(nn.Module):
    """Fair-value-gap agent: an MLP over the FVG columns of the most recent bars, where gaps form and fill."""

    def __init__(self, lookback: int = 12, hidden: int = 32) -> None:
        super().__init__()
        self.normalize = InputNormalization()
        self.lookback = lookback
        self.first, self.end = FVG_FIRST, FVG_END
        width = FVG_END - FVG_FIRST
        self.net = nn.Sequential(
            nn.Linear(lookback * width + width, hidden),
            nn.ReLU(),
            nn.Linear(hidden, N_ACTIONS),
        )

    def forward(self, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fvg = self.normalize(matrix)[:, :, self.first : self.end]
        recent = torch.flatten(fvg[:, -self.lookback :, :], 1)
        # The whole-window average tells a fresh gap from one that has been open (or refilled) for hours.
        context = fvg.mean(dim=1)
        return probabilities_and_confidence(self.net(torch.cat([recent, context], dim=1)))


class MomentumAgent(nn.Module):
    """Momentum agent: a temporal 1D convolution over price momentum and volume ratio, read at the latest bar
    and averaged over the window."""

    def __init__(self, channels: int = 8, kernel: int = 5) -> None:
        super().__init__()
        self.normalize = InputNormalization()
        self.first, self.end = MOMENTUM_FIRST, MOMENTUM_END
        width = MOMENTUM_END - MOMENTUM_FIRST
        self.conv = nn.Sequential(
            nn.Conv1d(width, channels, kernel_size=kernel),
            nn.ReLU(),
            # Stride rather than dilation widens the view: dilated conv1d takes a slow path on CPU (3x at batch 1).
            nn.Conv1d(channels, channels, kernel_size=kernel, stride=2),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * channels + width, N_ACTIONS)

    def forward(self, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        series = self.normalize(matrix)[:, :, self.first : self.end]
        hidden = self.conv(series.transpose(1, 2))
        latest = hidden[:, :, -1]
        average = hidden.mean(dim=2)
        last_bar = series[:, -1, :]
        return probabilities_and_confidence(self.head(torch.cat([latest, average, last_bar], dim=1)))


class EntryAgent(nn.Module):
    """Entry-timing agent: an MLP over every column of the most recent bars plus the window's averages."""

    def __init__(self, lookback: int = 16, hidden: int = 48) -> None:
        super().__init__()
        self.normalize = InputNormalization()
        self.lookback = lookback
        self.net = nn.Sequential(
            nn.Linear(lookback * MATRIX_COLS + MATRIX_COLS, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Linear(hidden // 2, N_ACTIONS),
        )

    def forward(self, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        matrix = self.normalize(matrix)
        recent = torch.flatten(matrix[:, -self.lookback :, :], 1)
        context = matrix.mean(dim=1)
        return probabilities_and_confidence(self.net(torch.cat([recent, context], dim=1)))


AGENT_CLASSES: dict[str, type[nn.Module]] = {
    "fvg": FVGAgent,
    "momentum": MomentumAgent,
    "entry": EntryAgent,
}
assert tuple(AGENT_CLASSES) == AGENT_NAMES


def build_agents(seed: int) -> dict[str, nn.Module]:
    """Freshly initialised agents in AGENT_NAMES order; the same seed gives the same weights."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return {name: cls() for name, cls in AGENT_CLASSES.items()}
    finally:
        torch.random.set_rng_state(generator_state)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def weights_sha256(module: nn.Module) -> str:
    """Fingerprint of a module's parameters and buffers (names, shapes, values): equal iff the weights are."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()
