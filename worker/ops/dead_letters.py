"""The dead-letter stream: what was given up on, why, and putting it back — or giving up on it for good.

A dead letter is the original event's fields plus the `dead_*` fields `worker.delivery.dead_letter_fields` adds
(reason, delivery count, original entry id, consumer). Replaying re-adds the original fields — the `dead_*` ones
stripped — to the input stream as a new entry and removes the dead letter, in one atomic step per entry, so two
operators replaying at once cannot replay an entry twice. Purging removes dead letters an operator has settled
otherwise (the producer sent a corrected event, say), audited with their ids and correlation ids.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from worker.alerts import audit, require_audit_trail
from worker.delivery import StreamNames
from worker.events import DEFAULT_MAX_EVENT_BYTES, InvalidEvent, decode_event, wire_correlation_id
from worker.names import REPLAYED_FROM_FIELD, completed_key
from worker.redis_text import as_optional_text
from worker.stream_entries import entries, paged

DEAD_FIELD_PREFIX = b"dead_"
DEFAULT_STREAMS = StreamNames()
_PAGE = 500
_AUDITED_IDS = 50


def original_fields(fields: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    """The event as it was produced: every field except the `dead_*` ones the dead-lettering added."""
    return {name: value for name, value in fields.items() if not name.startswith(DEAD_FIELD_PREFIX)}


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    id: str
    reason: str
    delivery_count: int | None
    original_id: str | None
    consumer: str | None
    fields: Mapping[bytes, bytes]  # every field of the dead letter, `dead_*` included

    @classmethod
    def from_stream(cls, entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> DeadLetterEntry:
        count = as_optional_text(fields.get(b"dead_delivery_count"))
        return cls(
            id=as_optional_text(entry_id) or "",
            reason=as_optional_text(fields.get(b"dead_reason")) or "(no reason recorded)",
            delivery_count=int(count) if count and count.isdigit() else None,
            original_id=as_optional_text(fields.get(b"dead_entry_id")),
            consumer=as_optional_text(fields.get(b"dead_consumer")),
            fields=dict(fields),
        )

    @property
    def original(self) -> dict[bytes, bytes]:
        return original_fields(self.fields)

    @property
    def correlation_id(self) -> str | None:
        return as_optional_text(self.fields.get(b"correlation_id"))

    def matches(self, reason_filter: str | None) -> bool:
        """Case-insensitive substring match on the reason; no filter matches everything."""
        return reason_filter is None or reason_filter.lower() in self.reason.lower()

    def readable_fields(self) -> dict[str, str]:
        """Every field (`dead_*` included) as text an operator can read: a value that is not short UTF-8 text (the
        raw float32 matrix) as its size."""
        return {_readable(name): _readable(value) for name, value in self.fields.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reason": self.reason,
            "delivery_count": self.delivery_count,
            "original_id": self.original_id,
            "consumer": self.consumer,
            "correlation_id": self.correlation_id,
            "original_fields": sorted(as_optional_text(name) or "" for name in self.original),
        }


SHOWN_TEXT_LIMIT = 500  # characters of one value shown as text


def _readable(value: bytes | str) -> str:
    try:
        text = value.decode() if isinstance(value, bytes) else value
    except UnicodeDecodeError:
        return f"<{len(value)} bytes, not text>"
    if not text.replace("\n", "").replace("\t", "").replace("\r", "").isprintable():  # NULs: a matrix of zeros
        return f"<{len(value)} bytes, not text>"
    return text if len(text) <= SHOWN_TEXT_LIMIT else f"{text[:SHOWN_TEXT_LIMIT]}… ({len(text)} characters)"


def dead_letter_count(client: redis.Redis, streams: StreamNames = DEFAULT_STREAMS) -> int:
    return int(client.xlen(streams.dead_letters))


def recent_dead_letters(
    client: redis.Redis, *, count: int, reason: str | None = None, streams: StreamNames = DEFAULT_STREAMS
) -> list[DeadLetterEntry]:
    """The latest `count` dead letters matching `reason`, oldest first."""
    found: list[DeadLetterEntry] = []
    for entry in _newest_first(client, streams.dead_letters):
        if entry.matches(reason):
            found.append(entry)
            if len(found) >= count:
                break
    return found[::-1]


def _newest_first(client: redis.Redis, stream: str) -> Iterator[DeadLetterEntry]:
    for entry_id, fields in paged(client, stream, page=_PAGE, newest_first=True):
        yield DeadLetterEntry.from_stream(entry_id, fields)


def _oldest_first(client: redis.Redis, stream: str) -> Iterator[DeadLetterEntry]:
    for entry_id, fields in paged(client, stream, page=_PAGE):
        yield DeadLetterEntry.from_stream(entry_id, fields)


def select_dead_letters(
    client: redis.Redis,
    *,
    ids: Sequence[str] = (),
    reason: str | None = None,
    streams: StreamNames = DEFAULT_STREAMS,
) -> list[DeadLetterEntry]:
    """The dead letters to act on: those with the given ids (all of them when `ids` is empty), matching `reason`.

    Raises `KeyError` naming the ids that are not in the dead-letter stream."""
    if not ids:
        return [e for e in _oldest_first(client, streams.dead_letters) if e.matches(reason)]
    chosen: list[DeadLetterEntry] = []
    missing: list[str] = []
    for entry_id in dict.fromkeys(ids):
        try:
            found = entries(client, streams.dead_letters, lower=entry_id, upper=entry_id, count=1)
        except redis.ResponseError:
            found = []
        if not found:
            missing.append(entry_id)
            continue
        entry = DeadLetterEntry.from_stream(*found[0])
        if entry.matches(reason):
            chosen.append(entry)
    if missing:
        raise KeyError(f"not in {streams.dead_letters}: {', '.join(missing)} (see `tacticalctl dead-letter list`)")
    return chosen


@dataclass(frozen=True, slots=True)
class ReplayResult:
    planned: tuple[DeadLetterEntry, ...]
    replayed: Mapping[str, str]  # dead letter id → new input entry id
    unreplayable: tuple[str, ...]  # dead letters with no original fields left to replay
    applied: bool
    audit_id: str | None = None
    # Left where they are: still invalid, the worker would dead-letter them again (dead letter id → why)
    invalid: Mapping[str, str] = field(default_factory=dict)
    # Left where they are: their correlation id has been decided since (sent again), the worker would only ack a
    # replay as a duplicate (dead letter id → the decision's entry id, as its completed key holds it)
    decided: Mapping[str, str] = field(default_factory=dict)

    @property
    def skipped(self) -> tuple[str, ...]:
        """Planned entries that another replay removed first (nothing done for them here)."""
        if not self.applied:
            return ()
        done = set(self.replayed) | set(self.unreplayable) | set(self.invalid) | set(self.decided)
        return tuple(e.id for e in self.planned if e.id not in done)

    @property
    def replayable(self) -> int:
        """How many of the planned a replay re-adds (or re-added)."""
        return len(self.planned) - len(self.unreplayable) - len(self.invalid) - len(self.decided)

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "planned": [e.as_dict() for e in self.planned],
            "replayed": dict(self.replayed),
            "unreplayable": list(self.unreplayable),
            "invalid": dict(self.invalid),
            "decided": dict(self.decided),
            "skipped": list(self.skipped),
            "audit_id": self.audit_id,
        }


# KEYS: dead-letter stream, input stream, and the completed key of its correlation id if it has one. ARGV: dead
# letter id, then the original flat fields. Returns {'replayed', new entry id}; {'decided', decision id} when the
# correlation id was decided meanwhile (the dead letter stays); nil when the dead letter is gone.
_REPLAYED_FROM = REPLAYED_FROM_FIELD.encode()
_REPLAY_LUA = """
if KEYS[3] then
  local decision = redis.pcall('GET', KEYS[3])
  if type(decision) == 'string' then return {'decided', decision} end
end
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
return {'replayed', redis.call('XADD', KEYS[2], '*', unpack(fields))}
"""


def decided_since(client: redis.Redis, entries: Sequence[DeadLetterEntry]) -> dict[str, str]:
    """The dead letters whose correlation id has a completed key — decided since from another copy (the producer
    sent the event again): dead letter id → the decision's entry id. A completed key lives TACTICAL_COMPLETED_TTL_S
    (or until `keys clean`): past that, nothing here knows the event was decided."""
    with_id = [(e, cid) for e in entries if (cid := wire_correlation_id(e.original)) is not None]
    if not with_id:
        return {}
    with client.pipeline(transaction=False) as pipe:
        for _, cid in with_id:
            pipe.get(completed_key(cid))
        values = pipe.execute(raise_on_error=False)  # a key of another type is no decision
    return {e.id: as_optional_text(value) or "" for (e, _), value in zip(with_id, values, strict=True)
            if isinstance(value, bytes | str)}


def replay_dead_letters(
    client: redis.Redis,
    entries: Sequence[DeadLetterEntry],
    *,
    actor: str,
    apply: bool,
    include_invalid: bool = False,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    streams: StreamNames = DEFAULT_STREAMS,
) -> ReplayResult:
    """Re-add each entry's original fields to the input stream and remove it from the dead-letter stream.

    A dead letter with no original fields left (its event was lost before it was dead-lettered) stays where it
    is, listed as unreplayable. So does one whose event is still invalid — the worker would dead-letter it again,
    and count it in the error rate — unless `include_invalid` (the worker's limits were raised, say); and one whose
    correlation id has been decided since (`decided_since`): the worker would only ack it as a duplicate. Nothing
    changes unless `apply`; an audit entry records what was replayed. `max_event_bytes` is the workers' limit."""
    planned = tuple(entries)
    unreplayable = tuple(e.id for e in planned if not e.original)
    invalid = {} if include_invalid else {e.id: why for e in planned
                                          if e.original and (why := still_invalid(e, max_event_bytes))}
    decided = decided_since(client, [e for e in planned if e.original and e.id not in invalid])
    if not apply:
        return ReplayResult(planned, {}, unreplayable, applied=False, invalid=invalid, decided=decided)
    if len(unreplayable) + len(invalid) + len(decided) < len(planned):  # something will change
        require_audit_trail(client)
    script = client.register_script(_REPLAY_LUA)
    replayed: dict[str, str] = {}
    for entry in planned:
        if not entry.original or entry.id in invalid or entry.id in decided:
            continue
        fields: dict[bytes, bytes | str] = {name: value for name, value in entry.original.items()
                                            if name != _REPLAYED_FROM}
        fields[_REPLAYED_FROM] = entry.original_id or entry.id  # the duplicate checks read it: not a resend
        flat: list[bytes | str] = [item for pair in fields.items() for item in pair]
        keys = [streams.dead_letters, streams.input]
        if (cid := wire_correlation_id(entry.original)) is not None:
            keys.append(completed_key(cid))
        outcome = script(keys=keys, args=[entry.id, *flat])
        if outcome is None:
            continue
        kind, entry_id = (as_optional_text(part) or "" for part in outcome)
        if kind == "decided":  # decided between the look and the replay
            decided[entry.id] = entry_id
        else:
            replayed[entry.id] = entry_id
    audit_id = None
    if replayed:
        ids = list(replayed)
        shown = ",".join(ids[:_AUDITED_IDS]) + (f",…(+{len(ids) - _AUDITED_IDS})" if len(ids) > _AUDITED_IDS else "")
        audit_id = as_optional_text(
            audit(
                client,
                actor=actor,
                action="dead_letter_replay",
                detail=f"replayed {len(replayed)} dead letters from {streams.dead_letters} to {streams.input}",
                stream=streams.input,
                dead_letter_stream=streams.dead_letters,
                count=str(len(replayed)),
                entry_ids=shown,
            )
        )
    return ReplayResult(planned, replayed, unreplayable, applied=True, audit_id=audit_id, invalid=invalid,
                        decided=decided)


@dataclass(frozen=True, slots=True)
class PurgeResult:
    planned: tuple[DeadLetterEntry, ...]
    removed: tuple[str, ...]  # dead letter ids this purge deleted
    applied: bool
    audit_id: str | None = None

    @property
    def skipped(self) -> tuple[str, ...]:
        """Planned entries already gone when the purge ran (replayed or purged by someone else meanwhile)."""
        removed = set(self.removed)
        return tuple(e.id for e in self.planned if e.id not in removed) if self.applied else ()

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "planned": [e.as_dict() for e in self.planned],
                "removed": list(self.removed), "skipped": list(self.skipped), "audit_id": self.audit_id}


def purge_dead_letters(client: redis.Redis, entries: Sequence[DeadLetterEntry], *, actor: str, apply: bool,
                       streams: StreamNames = DEFAULT_STREAMS) -> PurgeResult:
    """Delete these dead letters (XDEL, one per entry: the ones another operator removed first are told apart), and
    audit how many, and which (the first `_AUDITED_IDS`, with their correlation ids and reasons). Nothing changes
    unless `apply`."""
    planned = tuple(entries)
    if not apply or not planned:
        return PurgeResult(planned, (), applied=apply)
    require_audit_trail(client)
    pipe = client.pipeline(transaction=False)
    for entry in planned:
        pipe.xdel(streams.dead_letters, entry.id)
    removed = tuple(entry.id for entry, deleted in zip(planned, pipe.execute(), strict=True) if int(deleted))
    audit_id = None
    if removed:
        removed_ids = set(removed)
        gone = [entry for entry in planned if entry.id in removed_ids]
        described = [f"{e.id} {e.correlation_id or '-'} ({e.reason.split(':')[0]})" for e in gone[:_AUDITED_IDS]]
        audit_id = as_optional_text(audit(
            client, actor=actor, action="dead_letter_purge",
            detail=f"purged {len(removed)} dead letters from {streams.dead_letters}",
            dead_letter_stream=streams.dead_letters, count=str(len(removed)),
            entries="; ".join(described) + (f"; …(+{len(gone) - _AUDITED_IDS})" if len(gone) > _AUDITED_IDS else ""),
        ))
    return PurgeResult(planned, removed, applied=True, audit_id=audit_id)


def still_invalid(entry: DeadLetterEntry, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> str | None:
    """Why a worker with this size limit would dead-letter this event again; None when it would decide it."""
    try:
        decode_event(entry.original, max_event_bytes=max_event_bytes)
    except InvalidEvent as exc:
        return str(exc)
    return None
