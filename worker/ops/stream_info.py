"""One stream as XINFO STREAM / GROUPS / CONSUMERS show it, with each consumer's heartbeat liveness.

A consumer listed by XINFO CONSUMERS with no live heartbeat is a name left behind by a worker that died (or one
that never beat: another tool reading the group); its pending entries are what `tacticalctl pending claim` moves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from worker.heartbeat import live_consumers
from worker.lag import no_stream_message
from worker.names import ALL_STREAMS, INPUT_STREAM
from worker.redis_text import as_optional_text, as_text


class StreamMissing(RuntimeError):
    """The stream does not exist; the message says what to check."""


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int  # since its last attempted read
    alive: bool  # a live heartbeat
    heartbeat: Mapping[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pending": self.pending,
            "idle_ms": self.idle_ms,
            "alive": self.alive,
            "last_beat": None if self.heartbeat is None else self.heartbeat.get("last_beat"),
        }


@dataclass(frozen=True, slots=True)
class GroupInfo:
    name: str
    pending: int
    last_delivered_id: str
    entries_read: int | None
    lag: int | None  # None: Redis cannot tell ("unknown", never 0)
    consumers: tuple[ConsumerInfo, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pending": self.pending,
            "last_delivered_id": self.last_delivered_id,
            "entries_read": self.entries_read,
            "lag": self.lag,
            "consumers": [c.as_dict() for c in self.consumers],
        }


@dataclass(frozen=True, slots=True)
class StreamOverview:
    stream: str
    length: int
    first_id: str | None
    last_id: str | None
    last_generated_id: str
    entries_added: int | None
    max_deleted_entry_id: str | None
    groups: tuple[GroupInfo, ...]
    live_without_group: tuple[str, ...]  # heartbeats of consumers no group knows yet (started, not yet read)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "length": self.length,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "last_generated_id": self.last_generated_id,
            "entries_added": self.entries_added,
            "max_deleted_entry_id": self.max_deleted_entry_id,
            "groups": [g.as_dict() for g in self.groups],
            "live_without_group": list(self.live_without_group),
        }


# XINFO STREAM, GROUPS and each group's CONSUMERS in one script: one instant, however groups come and go meanwhile.
_SNAPSHOT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'stream' then return kind end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
local out = {redis.call('XINFO', 'STREAM', KEYS[1]), groups}
for _, group in ipairs(groups) do
  local name
  for i = 1, #group, 2 do if group[i] == 'name' then name = group[i + 1] end end
  out[#out + 1] = redis.call('XINFO', 'CONSUMERS', KEYS[1], name)
end
return out
"""


def _snapshot(client: redis.Redis, stream: str) -> tuple[dict, list[dict], dict[str, list[dict]]]:
    """XINFO STREAM, GROUPS and each group's CONSUMERS at one instant (one script): read one after the other while
    the worker runs, a group could show more entries read than the stream had added, or a pending count its
    consumers do not sum to; read in a MULTI/EXEC, the groups to ask about had to be known before it, and a group
    created meanwhile showed pending entries and no consumers."""
    reply = client.eval(_SNAPSHOT_LUA, 1, stream)
    if not isinstance(reply, list):  # no key, or another type: as XINFO says it
        try:
            client.xinfo_stream(stream)
        except redis.ResponseError as exc:
            raise StreamMissing(no_stream_message(client, stream, exc)) from None
        raise StreamMissing(f"stream {stream!r} changed while it was read: run the command again")
    info = _pairs(reply[0])
    for end in ("first-entry", "last-entry"):
        entry = info.get(end)
        info[end] = (entry[0], _pairs(entry[1])) if entry else None
    groups = [_pairs(group) for group in reply[1]]
    consumers = {as_optional_text(group["name"]) or "": [_pairs(c) for c in listed]
                 for group, listed in zip(groups, reply[2:], strict=True)}
    return info, groups, consumers


def _pairs(flat: list[Any]) -> dict[str, Any]:
    """A flat [name, value, …] reply (as a script gets XINFO's maps) as a dict keyed by text."""
    return {as_optional_text(name) or "": value for name, value in zip(flat[::2], flat[1::2], strict=True)}


def streams_of_another_type(client: redis.Redis) -> dict[str, str]:
    """The system's streams whose name holds a key of another type (someone else wrote it), with that type: where
    a WRONGTYPE refusal comes from (Redis's error does not name the key)."""
    with client.pipeline(transaction=False) as pipe:
        for name in ALL_STREAMS:
            pipe.type(name)
        kinds = [as_text(kind) for kind in pipe.execute()]
    return {name: kind for name, kind in zip(ALL_STREAMS, kinds, strict=True) if kind not in ("stream", "none")}


def read_stream_overview(client: redis.Redis, stream: str = INPUT_STREAM) -> StreamOverview:
    info, raw_groups, consumers_of = _snapshot(client, stream)
    live = live_consumers(client)
    groups: list[GroupInfo] = []
    for raw in raw_groups:
        name = as_optional_text(raw["name"]) or ""
        consumers = tuple(
            ConsumerInfo(
                name=consumer_name,
                pending=int(c["pending"]),
                idle_ms=int(c["idle"]),
                alive=consumer_name in live,
                heartbeat=live.get(consumer_name),
            )
            for c in consumers_of.get(name, [])
            for consumer_name in [as_optional_text(c["name"]) or ""]
        )
        groups.append(
            GroupInfo(
                name=name,
                pending=int(raw["pending"]),
                last_delivered_id=as_optional_text(raw["last-delivered-id"]) or "0-0",
                entries_read=_optional_int(raw.get("entries-read")),
                lag=_optional_int(raw.get("lag")),
                consumers=consumers,
            )
        )
    known = {c.name for g in groups for c in g.consumers}
    first, last = info.get("first-entry"), info.get("last-entry")
    return StreamOverview(
        stream=stream,
        length=int(info["length"]),
        first_id=as_optional_text(first[0]) if first else None,
        last_id=as_optional_text(last[0]) if last else None,
        last_generated_id=as_optional_text(info["last-generated-id"]) or "0-0",
        entries_added=_optional_int(info.get("entries-added")),
        max_deleted_entry_id=as_optional_text(info.get("max-deleted-entry-id")),
        groups=tuple(groups),
        live_without_group=tuple(name for name in live if name not in known),
    )
