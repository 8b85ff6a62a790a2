"""The three compiled agents served as one lean TorchScript graph, built from their verified files' own weights.

Run one after another, the agents cost ~75 tensor ops per call, and at the batch sizes a worker sees between bursts
(1 to a few events) each op's fixed cost is the bill, not the arithmetic. Everything before each agent's first
nonlinearity is affine in the raw matrix, so it folds into one matrix product: the per-column normalisation, the
look-back window, the window average (a mean is a weighted sum), and for the momentum agent its last bar's features.
The momentum agent's average of its convolution outputs folds into its head the same way. The two convolutions run
as matrix products over windows of the batch's own memory (`unfold`/`as_strided` views, one copy each): torch's
native convolution, the one kernel whose rows do not depend on the batch, costs ~80 µs a call at batch 4 on a slow
CPU, the products ~25. What remains: one product for all three first layers, the FVG and entry heads, two
convolution products, one softmax for the three agents, ~25 ops. Same functions, summed in another order: outputs
agree with the agents' to ~1e-6 (1.5e-6 for the shipped bundle), checked against `FUSION_TOLERANCE` on every load
(`try_fusion`), as compilation checks TorchScript against eager.

The weights are read from the frozen graphs in `architectures.py`'s shapes. A bundle whose graphs look different (a
new architecture) raises `FusionError`; one whose ops match but whose wiring differs (another window, other columns)
fails the load-time comparison. Either way the caller serves the agents one by one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.architectures import FVG_END, FVG_FIRST, MOMENTUM_END, MOMENTUM_FIRST, N_ACTIONS
from models.compile import max_output_difference, reference_inputs, torchscript_deprecation_silenced
from worker.actions import AGENT_NAMES
from worker.records import MATRIX_COLS, MATRIX_ROWS

FUSION_TOLERANCE = 1e-5  # largest |probability or confidence difference| from the agents run one by one
FUSION_CHECK_SEED = 29  # of the reference matrices the check runs on
_WEIGHT_OPS = ("aten::sub", "aten::mul", "aten::matmul", "aten::add", "aten::conv1d")


class FusionError(ValueError):
    """The agents' graphs are not the shapes this fusion knows, or the fused graph disagrees with them."""


@dataclass(frozen=True)
class _Step:
    """One op of a frozen agent graph that takes weights: its kind, its constant tensors, its constant ints."""

    kind: str
    tensors: tuple[torch.Tensor, ...]
    ints: tuple[object, ...]


def _weight_steps(agent: torch.jit.ScriptModule) -> list[_Step]:
    steps = []
    for node in agent.graph.nodes():
        if node.kind() not in _WEIGHT_OPS:
            continue
        inputs = list(node.inputs())
        tensors = tuple(_constant_tensor(v).detach().double() for v in inputs
                        if v.node().kind() == "prim::Constant" and isinstance(v.type(), torch.TensorType))
        if tensors:
            # conv1d(input, weight, bias, stride, padding, dilation, groups): the ints after the tensors.
            conv = node.kind() == "aten::conv1d"
            ints = tuple(_constant_value(v) for v in inputs[len(tensors) + 1 :]) if conv else ()
            steps.append(_Step(node.kind(), tensors, ints))
    return steps


def _constant_tensor(value: torch.Value) -> torch.Tensor:
    tensor = _constant_value(value)
    if not isinstance(tensor, torch.Tensor):
        raise FusionError(f"a {type(tensor).__name__} constant where a tensor was expected")
    return tensor


def _constant_value(value: torch.Value) -> object:
    """A graph input's constant value: a prim::Constant, or a list built of them."""
    node = value.node()
    if node.kind() == "prim::Constant":
        return value.toIValue()
    if node.kind() == "prim::ListConstruct":
        return [_constant_value(item) for item in node.inputs()]
    raise FusionError(f"{node.kind()} where a constant was expected")


def _expect(name: str, steps: Sequence[_Step], kinds: Sequence[str]) -> None:
    found = [step.kind for step in steps]
    if found != list(kinds):
        raise FusionError(f"agent {name!r}: weight ops {found}, expected {list(kinds)}")


def _window_weights(mean: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor, first: int, end: int,
                    lookback: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(420, out) weights and (out,) offset on the raw flattened matrix for a layer fed [the last `lookback` bars of
    columns first:end, then those columns' window average], all normalised (x − mean) · scale."""
    width = end - first
    if weight.shape[0] != lookback * width + width:
        raise FusionError(f"a first layer of {weight.shape[0]} inputs does not match {lookback} bars × {width} columns")
    out = weight.shape[1]
    per_bar = torch.zeros(MATRIX_ROWS, MATRIX_COLS, out, dtype=torch.float64)
    per_bar[MATRIX_ROWS - lookback :, first:end] = weight[: lookback * width].reshape(lookback, width, out)
    per_bar[:, first:end] += weight[lookback * width :] / MATRIX_ROWS
    per_bar *= scale.reshape(1, MATRIX_COLS, 1)
    offset = -(per_bar * mean.reshape(1, MATRIX_COLS, 1)).sum(dim=(0, 1))
    return per_bar.reshape(MATRIX_ROWS * MATRIX_COLS, out), offset


class FusedAgents(nn.Module):
    """(B, 60, 7) → probabilities (B, agent, action) and confidence (B, agent), agents in AGENT_NAMES order, as
    `StackedAgents` gives them."""

    def __init__(self, agents: Mapping[str, torch.jit.ScriptModule]) -> None:
        super().__init__()
        fvg, momentum, entry = (_weight_steps(agents[name]) for name in AGENT_NAMES)
        _expect("fvg", fvg, ["aten::sub", "aten::mul", "aten::matmul", "aten::add", "aten::matmul", "aten::add"])
        _expect("momentum", momentum, ["aten::sub", "aten::mul", "aten::conv1d", "aten::conv1d", "aten::matmul",
                                       "aten::add"])
        _expect("entry", entry, ["aten::sub", "aten::mul", "aten::matmul", "aten::add", "aten::matmul", "aten::add",
                                 "aten::matmul", "aten::add"])
        fvg_first, fvg_first_offset = _window_weights(
            fvg[0].tensors[0], fvg[1].tensors[0], fvg[2].tensors[0], FVG_FIRST, FVG_END,
            lookback=(fvg[2].tensors[0].shape[0] - (FVG_END - FVG_FIRST)) // (FVG_END - FVG_FIRST))
        entry_first, entry_first_offset = _window_weights(
            entry[0].tensors[0], entry[1].tensors[0], entry[2].tensors[0], 0, MATRIX_COLS,
            lookback=(entry[2].tensors[0].shape[0] - MATRIX_COLS) // MATRIX_COLS)
        momentum_first, momentum_first_offset, conv, head = self._momentum(momentum)

        self.n_fvg, self.n_entry = fvg_first.shape[1], entry_first.shape[1]
        self.first = _constant(torch.cat([fvg_first, entry_first, momentum_first], dim=1))
        self.first_bias = _constant(torch.cat([fvg[3].tensors[0] + fvg_first_offset,
                                               entry[3].tensors[0] + entry_first_offset,
                                               momentum_first_offset]))
        self.fvg_head, self.fvg_head_bias = _constant(fvg[4].tensors[0]), _constant(fvg[5].tensors[0])
        self.entry_hidden, self.entry_hidden_bias = _constant(entry[4].tensors[0]), _constant(entry[5].tensors[0])
        self.entry_head, self.entry_head_bias = _constant(entry[6].tensors[0]), _constant(entry[7].tensors[0])
        (conv1, self.conv1_bias), (conv2, self.conv2_bias) = ((_constant(w), _constant(b)) for w, b in conv)
        self.conv1, self.conv1_span, self.conv2, self.conv2_span = conv1, conv1.shape[0], conv2, conv2.shape[0]
        self.conv2_stride, self.conv2_length = self._conv2_layout
        self.momentum_first, self.matrix_rows, self.matrix_cols = MOMENTUM_FIRST, MATRIX_ROWS, MATRIX_COLS
        self.momentum_head = _constant(head)

    def _momentum(self, steps: list[_Step]) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, ...]],
                                                     torch.Tensor]:
        mean, scale = steps[0].tensors[0], steps[1].tensors[0]
        (w1, b1), (w2, b2) = steps[2].tensors, steps[3].tensors
        (stride1, *rest1), (stride2, *rest2) = _conv_args(steps[2]), _conv_args(steps[3])
        if stride1 != [1] or rest1 != [[0], [1], 1] or rest2 != [[0], [1], 1] or len(stride2) != 1:
            raise FusionError(f"momentum convolutions with (stride, padding, dilation, groups) {_conv_args(steps[2])}"
                              f" and {_conv_args(steps[3])}: only unpadded, undilated, ungrouped ones fold")
        stride = int(stride2[0])
        columns = slice(MOMENTUM_FIRST, MOMENTUM_END)
        width = MOMENTUM_END - MOMENTUM_FIRST
        if w1.shape[1] != width:
            raise FusionError(f"momentum's first convolution reads {w1.shape[1]} columns, expected {width}")
        channels, kernel1 = w1.shape[0], w1.shape[2]
        if w2.shape[1] != channels:
            raise FusionError(f"momentum's second convolution reads {w2.shape[1]} channels, the first gives {channels}")
        # The normalisation folds into the first convolution: w·(x − m)·s + b = (w·s)·x + (b − Σ w·m·s).
        m, s = mean[columns].reshape(1, width, 1), scale[columns].reshape(1, width, 1)
        w1, b1 = w1 * s, b1 - (w1 * m * s).sum(dim=(1, 2))
        # Each output of the first convolution reads one window of the flattened matrix: from its first bar's
        # first momentum column to its last bar's last, the other columns in between weighted 0.
        conv1 = torch.zeros(kernel1, MATRIX_COLS, channels, dtype=torch.float64)
        conv1[:, :width] = w1.permute(2, 1, 0)
        conv1 = conv1.reshape(kernel1 * MATRIX_COLS, channels)[: (kernel1 - 1) * MATRIX_COLS + width]
        # The second reads `kernel2` consecutive rows of the first's (time, channel) output: rows k·channels + c.
        out_channels, kernel2 = w2.shape[0], w2.shape[2]
        conv2 = w2.permute(2, 1, 0).reshape(kernel2 * channels, out_channels)
        length = ((MATRIX_ROWS - kernel1 + 1) - kernel2) // stride + 1
        self._conv2_layout = (stride, length)
        head, head_bias = steps[4].tensors[0], steps[5].tensors[0]
        if head.shape != (2 * out_channels + width, N_ACTIONS):
            raise FusionError(f"momentum head of shape {tuple(head.shape)} for {out_channels} channels")
        # Head input [latest (hidden[:, :, -1]), average over time, last bar]: the first two are one product with the
        # hidden outputs flattened time-major (B, length × channels), the last bar's part joins the shared first
        # product.
        over_hidden = (head[out_channels : 2 * out_channels] / length).reshape(1, out_channels, N_ACTIONS)
        over_hidden = over_hidden.repeat(length, 1, 1)
        over_hidden[length - 1] += head[:out_channels]
        last_bar = torch.zeros(MATRIX_ROWS, MATRIX_COLS, N_ACTIONS, dtype=torch.float64)
        last_bar[MATRIX_ROWS - 1, columns] = head[2 * out_channels :] * scale[columns].reshape(width, 1)
        offset = head_bias - (head[2 * out_channels :] * (mean[columns] * scale[columns]).reshape(width, 1)).sum(dim=0)
        return (last_bar.reshape(MATRIX_ROWS * MATRIX_COLS, N_ACTIONS), offset, [(conv1, b1), (conv2, b2)],
                over_hidden.reshape(length * out_channels, N_ACTIONS))

    def forward(self, matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # narrow and select rather than [:, a:b] indexing: one view op each instead of one per dimension.
        hidden_width = self.n_fvg + self.n_entry
        flat = matrices.flatten(1)
        first = torch.addmm(self.first_bias, flat, self.first)
        hidden = torch.relu(first.narrow(1, 0, hidden_width))
        fvg = torch.addmm(self.fvg_head_bias, hidden.narrow(1, 0, self.n_fvg), self.fvg_head)
        entry = torch.relu(torch.addmm(self.entry_hidden_bias, hidden.narrow(1, self.n_fvg, self.n_entry),
                                       self.entry_hidden))
        entry = torch.addmm(self.entry_head_bias, entry, self.entry_head)
        momentum = torch.addmm(first.narrow(1, hidden_width, first.size(1) - hidden_width),
                               self._convolutions(flat), self.momentum_head)
        probabilities = torch.softmax(torch.stack([fvg, momentum, entry], dim=1), dim=-1)
        short, long = probabilities.select(2, 0), probabilities.select(2, 2)
        return probabilities, torch.maximum(short, long) / (short + long)

    def _convolutions(self, flat: torch.Tensor) -> torch.Tensor:
        """The momentum agent's two convolutions (ReLU after each) as matrix products, (B, 420) → (B, length ×
        channels), time-major. Windows are taken across the whole batch as if it were one series; the few that
        straddle two matrices are computed and never read."""
        batch = flat.size(0)
        if batch == 0:  # no windows to take (and after the executor specialises, no check that says so)
            return flat.new_empty([0, self.momentum_head.size(0)])
        series = flat.reshape(-1).narrow(0, self.momentum_first, flat.numel() - self.momentum_first)
        # (B·60 − kernel + 1 windows, span): window t starts at bar t's first momentum column.
        windows = series.unfold(0, self.conv1_span, self.matrix_cols).contiguous()
        conv1 = torch.relu(torch.addmm(self.conv1_bias, windows, self.conv1))  # fresh: storage offset 0
        channels = conv1.size(1)
        # (B, length, kernel × channels): output step t of matrix b reads first-convolution rows b·60 + stride·t on.
        windows = conv1.as_strided([batch, self.conv2_length, self.conv2_span],
                                   [self.matrix_rows * channels, self.conv2_stride * channels, 1])
        conv2 = torch.relu(torch.addmm(self.conv2_bias, windows.reshape(-1, self.conv2_span), self.conv2))
        return conv2.view(batch, -1)


def _constant(tensor: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor.float().contiguous(), requires_grad=False)


def _conv_args(step: _Step) -> list[Any]:
    """conv1d's [stride, padding, dilation, groups], as the frozen graph holds them (lists of ints and an int; the
    callers compare them with the only values that fold)."""
    if len(step.ints) != 4:
        raise FusionError(f"conv1d with constant arguments {step.ints}")
    return list(step.ints)


def fuse_agents(agents: Mapping[str, torch.jit.ScriptModule]) -> torch.jit.ScriptModule:
    """The agents as one frozen TorchScript graph. FusionError if their graphs are not in the known shapes."""
    with torchscript_deprecation_silenced():
        return torch.jit.freeze(torch.jit.script(FusedAgents(agents).eval()))


def max_fused_difference(fused: nn.Module, stacked: nn.Module, inputs: Sequence[torch.Tensor]) -> float:
    """Largest |difference| between the fused graph's outputs and the agents' own, over `inputs`."""
    return max_output_difference(stacked, fused, inputs, reference_name="agents'", error=FusionError)


@dataclass(frozen=True)
class Fusion:
    """Whether a bundle's agents can be served fused: the graph, or why not."""

    graph: torch.jit.ScriptModule | None
    difference: float | None  # largest |difference| from the agents one by one, when it was measured
    reason: str = ""  # why the agents are served one by one; empty when fused


def try_fusion(agents: Mapping[str, torch.jit.ScriptModule], stacked: nn.Module) -> Fusion:
    """Fuse the agents and check the graph against `stacked` (the agents one by one) on the reference matrices."""
    try:
        graph = fuse_agents(agents)
        difference = max_fused_difference(graph, stacked, reference_inputs(seed=FUSION_CHECK_SEED))
    except FusionError as exc:
        return Fusion(None, None, str(exc))
    if not difference <= FUSION_TOLERANCE:
        return Fusion(None, difference, f"the fused graph differs from the agents by {difference:.2g} "
                                        f"(limit {FUSION_TOLERANCE:.0e})")
    return Fusion(graph, difference)


__all__ = [
    "FUSION_TOLERANCE",
    "FusedAgents",
    "Fusion",
    "FusionError",
    "fuse_agents",
    "max_fused_difference",
    "try_fusion",
]
