"""The reference: the shortest loop that still decides. Read COUNT 100 → raw float32 matrices → one batched forward
pass of the same three agents → weighted vote → XADD decision + XACK in one pipeline. No validation, idempotency or
metrics: what the worker's remaining margin pays for.

Run as `python -m bench.reference --redis-url URL [--models-dir DIR]`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import redis

from bench.consumer import BatchHandler, Entries, consumer_main
from bench.names import REFERENCE_STREAMS
from worker.actions import ACTION_ORDER
from worker.aggregator import AggregatorConfig
from worker.inference import AgentEnsemble, row_invariant_kernels
from worker.records import MATRIX_SHAPE, SynergyType
from worker.settings import default_models_dir

_ACTIONS = tuple(name.encode() for name in ACTION_ORDER)


def reference_handler(ensemble: AgentEnsemble, aggregator: AggregatorConfig) -> BatchHandler:
    output = REFERENCE_STREAMS.output

    def handle(entries: Entries, pipe: redis.client.Pipeline) -> None:
        matrices = np.stack(
            [np.frombuffer(fields[b"matrix"], dtype="<f4").reshape(MATRIX_SHAPE) for _, fields in entries]
        )
        probabilities, _ = ensemble.infer(matrices)
        weights = aggregator.weight_matrix([SynergyType(fields[b"synergy_type"].decode()) for _, fields in entries])
        scores = np.einsum("ba,bak->bk", weights, probabilities)
        best = scores.argmax(axis=1)
        for (_, fields), action, score in zip(entries, best.tolist(), scores.max(axis=1).tolist(), strict=True):
            pipe.xadd(output, {b"correlation_id": fields[b"correlation_id"], b"action": _ACTIONS[action],
                               b"score": repr(score)})

    return handle


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, default=None, help="model bundles (default: the shipped ones)")


def _handler(args: argparse.Namespace) -> BatchHandler:
    from models.bundle import current_bundle_dir

    row_invariant_kernels.hold()  # as the worker holds them while it serves
    ensemble = AgentEnsemble.load(current_bundle_dir(args.models_dir or default_models_dir()), threads=1)
    return reference_handler(ensemble, AggregatorConfig())


def main(argv: Sequence[str] | None = None) -> int:
    return consumer_main(argv, "Bench reference: a bare read → forward → XADD + XACK loop.", REFERENCE_STREAMS,
                         _handler, _arguments)


if __name__ == "__main__":
    raise SystemExit(main())
