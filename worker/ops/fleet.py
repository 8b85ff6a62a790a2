"""The other live workers of a scaled stack, and where to read them: each heartbeat names the HTTP address its worker
bound, so a command pointed at one worker (`--worker-url`) can read the others at theirs."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from worker.heartbeat import live_consumers


@dataclass(frozen=True, slots=True)
class OtherWorker:
    name: str
    url: str | None  # None: its heartbeat names no endpoint (yet): a starting worker's first beats come before it


def worker_url_of(beat: Mapping[str, Any], here: str) -> str | None:
    """The URL of a worker's endpoint from its heartbeat's `http` (the address it bound): a wildcard address is the
    worker's host (this machine's loopback when it runs here)."""
    address = beat.get("http")
    if not isinstance(address, str) or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        beat_host = beat.get("host")
        host = "127.0.0.1" if beat_host in (None, here) else str(beat_host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def other_live_workers(client: redis.Redis, *, measured: str | None, worker_url: str) -> list[OtherWorker]:
    """Every live worker but the one at `worker_url`, by name. That one is left out by the consumer name it answered
    with (`measured`), else by the URL its heartbeat names: it was read, or found unreachable, there already, and is
    neither counted nor waited for twice."""
    here = socket.gethostname()
    others = []
    for name, beat in sorted(live_consumers(client).items()):
        if name == measured:
            continue
        url = worker_url_of(beat, here)
        if url is not None and url == worker_url.rstrip("/"):
            continue
        others.append(OtherWorker(name, url))
    return others


__all__ = ["OtherWorker", "other_live_workers", "worker_url_of"]
