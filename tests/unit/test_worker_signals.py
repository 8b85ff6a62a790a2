"""SIGTERM / SIGINT: the first asks the worker to finish the batch in hand and exit 0; a second exits at once with 1,
the entries in hand left pending. A second signal while the worker is already giving back what it took (threads, the
heartbeat, the consumer name, connections) lets that finish: cut off halfway, it left a traceback and a heartbeat."""

from __future__ import annotations

import signal

import pytest

from worker.service import ForcedExit, Worker
from worker.settings import WorkerSettings


def worker() -> Worker:
    return Worker(WorkerSettings.from_env({}, redis_url="redis://127.0.0.1:1/0", consumer="w"))


def scripted_run(w: Worker, monkeypatch: pytest.MonkeyPatch, *, signals_in_loop: int,
                 signals_in_shutdown: int) -> tuple[int, list[str]]:
    """`run()` with its stages replaced by ones that receive signals where a real stop would."""
    done: list[str] = []
    monkeypatch.setattr(w, "install_signal_handlers", lambda: None)
    monkeypatch.setattr(w, "startup", lambda: None)

    def loop() -> None:
        for _ in range(signals_in_loop):
            w.handle_signal(signal.SIGTERM)
        done.append("loop")

    def shutdown() -> None:
        for _ in range(signals_in_shutdown):
            w.handle_signal(signal.SIGTERM)
        done.append("shutdown")

    monkeypatch.setattr(w, "main_loop", loop)
    monkeypatch.setattr(w, "shutdown", shutdown)
    return w.run(), done


def test_one_signal_finishes_and_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    assert scripted_run(worker(), monkeypatch, signals_in_loop=1, signals_in_shutdown=0) == (0, ["loop", "shutdown"])


def test_a_second_signal_in_the_loop_exits_1_at_once_and_still_shuts_down(monkeypatch: pytest.MonkeyPatch) -> None:
    assert scripted_run(worker(), monkeypatch, signals_in_loop=2, signals_in_shutdown=0) == (1, ["shutdown"])


def test_a_second_signal_during_shutdown_lets_it_finish_then_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    assert scripted_run(worker(), monkeypatch, signals_in_loop=1, signals_in_shutdown=2) == (1, ["loop", "shutdown"])


def test_the_signal_handler_alone() -> None:
    w = worker()
    w.handle_signal(signal.SIGINT)
    assert w.state.should_exit
    with pytest.raises(ForcedExit):
        w.handle_signal(signal.SIGINT)
