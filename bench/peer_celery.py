"""The peer a team would otherwise reach for: the same agents behind a Celery task, with the same Redis as broker
and result backend (solo pool: one task at a time, as the worker decides one batch at a time).

The task does what the worker does per event minus exactly-once: validate, one forward pass, the weighted vote.
A result is "readable" when the Redis backend stores it, which it announces by PUBLISHing it on the channel named
after its key; the bench's reader subscribes to that pattern, so no per-task polling skews the figures.

The Celery worker runs as `python -m celery -A bench.peer_celery worker --pool solo` with the broker URL in
TACTICAL_BENCH_PEER_URL.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_init

from bench.child import ChildProcess
from bench.names import CELERY_RESULT_PREFIX
from worker.aggregator import AggregatorConfig, aggregate_batch
from worker.events import decode_event
from worker.inference import AgentEnsemble, row_invariant_kernels

PEER_URL_ENV = "TACTICAL_BENCH_PEER_URL"
TASK_NAME = "tactical_peer.decide"
RESULT_CHANNELS = CELERY_RESULT_PREFIX + "*"


def make_app(redis_url: str, *, with_backend: bool = True) -> Celery:
    app = Celery("tactical_peer", broker=redis_url, backend=redis_url if with_backend else None)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        result_expires=3600,
    )
    return app


app = make_app(os.environ.get(PEER_URL_ENV, "redis://127.0.0.1:6379/2"))
_loaded: dict[str, Any] = {}


@worker_init.connect
def _load_agents(**_: object) -> None:
    from bench.model import load_ensemble

    row_invariant_kernels.hold()  # as the worker holds them while it serves
    _loaded["ensemble"] = load_ensemble()
    _loaded["aggregator"] = AggregatorConfig()


@app.task(name=TASK_NAME)
def decide(fields: dict[str, str]) -> dict[str, Any]:
    ensemble: AgentEnsemble = _loaded["ensemble"]
    event = decode_event(wire_fields(fields))
    probabilities, confidence = ensemble.infer(event.matrix[None])
    decision = aggregate_batch([event], probabilities, confidence, _loaded["aggregator"], ensemble.version)[0]
    return {
        "correlation_id": decision.correlation_id,
        "action": decision.action.name.lower(),
        "score": decision.score,
        "execute": decision.execute,
        "reason": decision.reason,
    }


def task_fields(fields: Mapping[bytes, bytes]) -> dict[str, str]:
    """JSON-safe task arguments: text fields as text, the f32le matrix as base64."""
    return {
        key.decode(): base64.b64encode(value).decode() if key == b"matrix" else value.decode()
        for key, value in fields.items()
    }


def wire_fields(fields: Mapping[str, str]) -> dict[bytes, bytes]:
    return {
        key.encode(): base64.b64decode(value) if key == "matrix" else value.encode() for key, value in fields.items()
    }


class CeleryTarget:
    """Send = `send_task` (task id = correlation id); a reply = the backend's PUBLISH of the stored result."""

    name = "peer"

    def __init__(self, redis_url: str) -> None:
        self.app = make_app(redis_url, with_backend=False)  # the client only sends; no per-task subscriptions
        self._client = redis.Redis.from_url(redis_url)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(RESULT_CHANNELS)
        self._prefix_length = len(CELERY_RESULT_PREFIX)

    def send(self, items: Sequence[tuple[str, Mapping[bytes, bytes]]]) -> None:
        for correlation_id, fields in items:
            self.app.send_task(TASK_NAME, args=[task_fields(fields)], task_id=correlation_id)

    def receive(self, block_ms: int) -> list[str]:
        ids: list[str] = []
        message = self._pubsub.get_message(timeout=block_ms / 1e3)
        while message is not None:
            if message["type"] == "pmessage":
                ids.append(message["channel"][self._prefix_length :].decode())
            if len(ids) >= 1000:
                break
            message = self._pubsub.get_message(timeout=0)
        return ids

    def close(self) -> None:
        self._pubsub.close()
        self._client.close()
        self.app.close()


def start_celery_worker(redis_url: str, log_path: Path) -> ChildProcess:
    env = dict(os.environ, **{PEER_URL_ENV: redis_url})
    args = ["-A", "bench.peer_celery", "worker", "--pool", "solo", "--concurrency", "1", "--without-gossip",
            "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING", "--hostname", "tactical-peer@%h"]
    return ChildProcess.module("celery peer", "celery", args, log_path, env).start()
