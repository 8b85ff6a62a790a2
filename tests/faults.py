"""A stand-in for a broken or slow model host: the real agents behind switches a test can flip."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from worker.inference import AgentEnsemble


class FaultyModel:
    """The real ensemble: `fail` makes every `infer` raise, `fail_next` only the next one, `fail_calls` the next that
    many, `delay_s` slows each; `poison` makes every `infer` raise whose matrices include one with that value as its
    first feature (a poison event: one the agents cannot decide, whatever batch it comes in)."""

    def __init__(self, ensemble: AgentEnsemble) -> None:
        self.ensemble = ensemble
        self.fail = False
        self.fail_next = False
        self.fail_calls = 0
        self.delay_s = 0.0
        self.poison: float | None = None

    def infer(self, matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.fail or self.fail_next or self.fail_calls > 0:
            self.fail_next = False
            self.fail_calls = max(0, self.fail_calls - 1)
            raise RuntimeError("injected model failure")
        if self.poison is not None and bool((matrices[:, 0, 0] == self.poison).any()):
            raise RuntimeError("injected poison event")
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.ensemble.infer(matrices)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ensemble, name)
