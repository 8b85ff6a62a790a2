"""The dead-letter stream: what was given up on, why, and putting it back — or giving up on it for good.

A dead letter is the original event's fields plus the `dead_*` fields `worker.delivery.dead_letter_fields` adds
(reason, delivery count, original entry id, consumer). Replaying re-adds the original fields — the `dead_*` ones
stripped — to the input stream as a new entry and removes the dead letter, in one atomic step per entry, so two
operators replaying at once cannot replay an entry twice. Purging removes dead letters an operator has settled
otherwise (the producer sent a corrected event, say), audited with their ids and correlation ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis

from worker.alerts import audit, audit_done, require_audit_trail
from worker.delivery import StreamNames
from worker.events import DEFAULT_MAX_EVENT_BYTES, InvalidEvent, decode_event, wire_correlation_id
from worker.names import REPLAYED_FROM_FIELD, completed_key
from worker.redis_text import as_optional_text, as_text
from worker.stream_entries import StreamRemovals, entries, entry_time_ms, paged, parse_stream_id

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
    # replay as a duplicate (dead letter id → the decision's entry id, from its completed key or the decisions stream)
    decided: Mapping[str, str] = field(default_factory=dict)
    # Replayed (`include_unconfirmed`), although not known to be undecided: no completed key, and the decisions
    # stream no longer holds every decision made since the dead-lettered entry (trimmed, one deleted, or not there:
    # `decisions_gap`) (dead letter id → the id it holds every decision from; None when there is no decisions stream)
    decisions_trimmed: Mapping[str, str | None] = field(default_factory=dict)
    # Left where they are, for the same reason, without `include_unconfirmed`: a resend of the event may have been
    # decided, and traded, and a replay would decide it again (dead letter id → the id it holds decisions from)
    unconfirmed: Mapping[str, str | None] = field(default_factory=dict)
    decisions_read: int = 0  # entries of the decisions stream read looking for the correlation ids
    decisions_gap: DecisionsGap | None = None  # why the decisions stream does not reach back to them

    @property
    def skipped(self) -> tuple[str, ...]:
        """Planned entries that another replay removed first (nothing done for them here)."""
        if not self.applied:
            return ()
        done = set(self.replayed) | set(self.left_out())
        return tuple(e.id for e in self.planned if e.id not in done)

    @property
    def replayable(self) -> int:
        """How many of the planned a replay re-adds (or re-added)."""
        return len(self.planned) - len(self.left_out())

    def left_out(self) -> dict[str, str]:
        """The planned dead letters a replay leaves where they are, each with why (dead letter id → why)."""
        why = {entry_id: "no original fields left" for entry_id in self.unreplayable}
        why.update({entry_id: f"still invalid: {reason}" for entry_id, reason in self.invalid.items()})
        why.update({entry_id: f"decided since: decision {decision}" for entry_id, decision in self.decided.items()})
        why.update({entry_id: f"not known to be undecided: no completed key, and {self._no_decisions_since(kept)}"
                    for entry_id, kept in self.unconfirmed.items()})
        return {e.id: why[e.id] for e in self.planned if e.id in why}

    def _no_decisions_since(self, kept: str | None) -> str:
        if self.decisions_gap is DecisionsGap.MISSING or kept is None:
            return ("there is no decisions stream (deleted, not restored, or nothing decided yet): a resend's "
                    "decision may be gone with it")
        if self.decisions_gap is DecisionsGap.DELETED:
            return (f"a decision made after it was deleted from the decisions stream (XDEL; it holds every decision "
                    f"only from {kept} on): it may be a resend's")
        if self.decisions_gap is DecisionsGap.UNKNOWN:
            return "Redis does not say what was removed from the decisions stream (before 7.0): a resend's may be gone"
        return f"decisions are kept only from {kept} on (trimmed): a resend's may be gone"

    def to_replay(self) -> tuple[DeadLetterEntry, ...]:
        """The planned dead letters a replay re-adds (or re-added, or found gone meanwhile: `skipped`)."""
        left_out = self.left_out()
        return tuple(e for e in self.planned if e.id not in left_out)

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "planned": [e.as_dict() for e in self.planned],
            "replayed": dict(self.replayed),
            "unreplayable": list(self.unreplayable),
            "invalid": dict(self.invalid),
            "decided": dict(self.decided),
            "decisions_trimmed": dict(self.decisions_trimmed),
            "unconfirmed": dict(self.unconfirmed),
            "decisions_read": self.decisions_read,
            "decisions_gap": None if self.decisions_gap is None else self.decisions_gap.value,
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


# KEYS[1] the decisions stream. ARGV[1] the XRANGE start (an id, `(` before it to exclude it), ARGV[2] how many.
# Returns {entry id, correlation id or false} per entry: the decisions' other ~20 fields never leave Redis.
_DECISION_IDS_LUA = """
local out = {}
for i, entry in ipairs(redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])) do
  local fields, cid = entry[2], false
  for j = 1, #fields, 2 do
    if fields[j] == 'correlation_id' then cid = fields[j + 1]; break end
  end
  out[i] = {entry[1], cid}
end
return out
"""
# Decisions per script call: ~1.3 ms of Redis's time here (1000 took ~6.5 ms, the reply's fields turned into Lua
# tables; a plain XRANGE of 1000 ~3.3 ms, and all ~25 fields sent back): the workers' commits wait no longer.
DECISION_SCAN_PAGE = 200


class DecisionsGap(StrEnum):
    """Why the decisions stream cannot tell whether a dead letter's event was decided since."""

    TRIMMED = "trimmed"  # its first entry is past the dead-lettered one (`stream trim`, MAXLEN)
    DELETED = "deleted"  # an entry after the dead-lettered one was deleted (XDEL): Redis 7's max-deleted-entry-id
    UNKNOWN = "unknown"  # the server does not say what was removed (XINFO STREAM before Redis 7.0)
    # There is none: deleted (DEL, a Redis restored without it), or nothing decided yet — the two look alike, and the
    # first is the one a replay must not guess wrong
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class DecisionScan:
    """How far `decided_since` has read the decisions stream: told after each page, so a long scan can be shown."""

    read: int  # decisions read so far
    start_ms: int  # the scan's first id's milliseconds (the earliest dead-lettered entry's)
    at_ms: int  # the last id read's
    end_ms: int  # the stream's last id's when the scan began: where it stops at the latest (later ones too if added)


ScanProgress = Callable[[DecisionScan], None]


@dataclass(frozen=True, slots=True)
class DecisionLookup:
    """What `decided_since` found of a set of dead letters' correlation ids."""

    decided: dict[str, str]  # dead letter id → the decision's entry id
    # Not found, but the decisions stream has lost entries from after the dead-lettered one (trimmed, deleted, or
    # not there): dead letter id → the id the stream holds every decision from (None: there is no decisions stream)
    decisions_trimmed: dict[str, str | None]
    decisions_read: int = 0  # the scan's length: it reads until every correlation id is found, or to the end
    gap: DecisionsGap | None = None  # why `decisions_trimmed` are not known to be undecided


def decided_since(client: redis.Redis, entries: Sequence[DeadLetterEntry],
                  streams: StreamNames = DEFAULT_STREAMS, progress: ScanProgress | None = None) -> DecisionLookup:
    """The dead letters whose correlation id has been decided since from another copy (the producer sent the event
    again): its completed key, and once that is gone (TACTICAL_COMPLETED_TTL_S, `keys clean`) a decision with that
    correlation id in the decisions stream after the dead-lettered entry. The stream is read in pages of
    `DECISION_SCAN_PAGE`, only the entry ids and correlation ids coming back, and only as far as needed; `progress`
    is told after each page, and the lookup says how many decisions it read. Where the stream no longer holds every
    decision made since the dead-lettered entry, a resend's may have gone: that is said (`decisions_trimmed`, with
    `gap` saying why), not taken for "not decided" — trimmed past it, a decision after it deleted (XDEL), a server
    that does not say what was removed (before Redis 7.0), or no decisions stream at all (deleted, or restored
    without it: it says nothing of what was decided)."""
    with_id = [(e, cid) for e in entries if (cid := wire_correlation_id(e.original)) is not None]
    if not with_id:
        return DecisionLookup({}, {})
    with client.pipeline(transaction=False) as pipe:
        for _, cid in with_id:
            pipe.get(completed_key(cid))
        values = pipe.execute(raise_on_error=False)  # a key of another type is no decision
    decided = {e.id: as_optional_text(value) or "" for (e, _), value in zip(with_id, values, strict=True)
               if isinstance(value, bytes | str)}
    # The dead-lettered entry's id bounds where a decision of a resend can be; a dead letter without it (written by
    # hand) is looked for in the whole stream.
    wanted: dict[str, list[tuple[DeadLetterEntry, tuple[int, int]]]] = {}
    for entry, cid in with_id:
        if entry.id not in decided:
            wanted.setdefault(cid, []).append((entry, _id_or_start(entry.original_id)))
    if not wanted:
        return DecisionLookup(decided, {})
    extent = _decisions_extent(client, streams.decisions)
    if extent is None:  # deleted, or never written: only the producer can tell a resend was not decided
        missing: dict[str, str | None] = {entry.id: None for letters in wanted.values() for entry, _ in letters}
        return DecisionLookup(decided, missing, gap=DecisionsGap.MISSING)
    kept_from, last, gap = extent
    start = min(since for letters in wanted.values() for _, since in letters)
    read, first_ms = 0, None
    for page in _decision_id_pages(client, streams.decisions, start):
        read += len(page)
        for decision_id, cid in page:
            if cid is not None:
                for entry, _ in wanted.pop(cid, ()):
                    decided[entry.id] = decision_id
        if not wanted or not page:
            break
        first_ms = entry_time_ms(page[0][0]) if first_ms is None else first_ms
        if progress is not None:
            at_ms = entry_time_ms(page[-1][0])
            progress(DecisionScan(read, first_ms, at_ms, max(last[0], at_ms)))
    trimmed: dict[str, str | None] = {entry.id: f"{kept_from[0]}-{kept_from[1]}" for letters in wanted.values()
                                      for entry, since in letters if kept_from > since}
    return DecisionLookup(decided, trimmed, read, gap if trimmed else None)


def _id_or_start(entry_id: str | None) -> tuple[int, int]:
    try:
        return parse_stream_id(entry_id) if entry_id else (0, 0)
    except ValueError:
        return (0, 0)


def _decisions_extent(
    client: redis.Redis, stream: str
) -> tuple[tuple[int, int], tuple[int, int], DecisionsGap | None] | None:
    """The id from which `stream` still holds every entry added, its last id, and what removed those before it
    (`StreamRemovals.whole_from`). None when there is no such stream (or a key of another type in its place)."""
    try:
        info = client.xinfo_stream(stream)
    except redis.ResponseError:  # no such key (deleted since the look, too), or WRONGTYPE
        return None
    added, max_deleted, first = info.get("entries-added"), info.get("max-deleted-entry-id"), info.get("first-entry")
    last = parse_stream_id(info["last-generated-id"])
    whole_from, removal = StreamRemovals(
        None if added is None else int(added) - int(info["length"]),
        None if first is None else parse_stream_id(first[0]),
        last,
        None if max_deleted is None else parse_stream_id(max_deleted),
    ).whole_from()
    return whole_from, last, None if removal is None else DecisionsGap(removal.value)


def _decision_id_pages(client: redis.Redis, stream: str,
                       start: tuple[int, int]) -> Iterator[list[tuple[str, str | None]]]:
    """(entry id, correlation id or None) of each decision from `start` on, `DECISION_SCAN_PAGE` per round trip."""
    script = client.register_script(_DECISION_IDS_LUA)
    lower = f"{start[0]}-{start[1]}"
    while True:
        page = script(keys=[stream], args=[lower, DECISION_SCAN_PAGE])
        yield [(as_text(entry_id), as_optional_text(cid)) for entry_id, cid in page]
        if len(page) < DECISION_SCAN_PAGE:
            return
        lower = "(" + as_text(page[-1][0])


def replay_dead_letters(
    client: redis.Redis,
    entries: Sequence[DeadLetterEntry],
    *,
    actor: str,
    apply: bool,
    include_invalid: bool = False,
    include_unconfirmed: bool = False,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    streams: StreamNames = DEFAULT_STREAMS,
    progress: ScanProgress | None = None,
) -> ReplayResult:
    """Re-add each entry's original fields to the input stream and remove it from the dead-letter stream.

    A dead letter with no original fields left (its event was lost before it was dead-lettered) stays where it
    is, listed as unreplayable. So does one whose event is still invalid — the worker would dead-letter it again,
    and count it in the error rate — unless `include_invalid` (the worker's limits were raised, say); one whose
    correlation id has been decided since (`decided_since`): a replay would be acked as a duplicate or, once its
    completed key is gone, decided a second time; and one not known to be undecided (the decisions stream trimmed
    past it, or not there at all), unless `include_unconfirmed` (the producer says it did not send it again).
    Nothing changes unless `apply`; an audit entry records what was replayed. `max_event_bytes` is the workers'
    limit; `progress` is told how far the look for decisions has read."""
    planned = tuple(entries)
    unreplayable = tuple(e.id for e in planned if not e.original)
    invalid = {} if include_invalid else {e.id: why for e in planned
                                          if e.original and (why := still_invalid(e, max_event_bytes))}
    lookup = decided_since(client, [e for e in planned if e.original and e.id not in invalid], streams, progress)
    decided, read, gap = lookup.decided, lookup.decisions_read, lookup.gap
    # A replay that may decide (and trade) an event a second time is the operator's call, never a default.
    trimmed, unconfirmed = ((lookup.decisions_trimmed, {}) if include_unconfirmed
                            else ({}, lookup.decisions_trimmed))
    plan = ReplayResult(planned, {}, unreplayable, applied=False, invalid=invalid, decided=dict(decided),
                        decisions_trimmed=trimmed, unconfirmed=unconfirmed, decisions_read=read, decisions_gap=gap)
    if not apply:
        return plan
    to_replay = plan.to_replay()
    if to_replay:  # something will change
        require_audit_trail(client)
    script = client.register_script(_REPLAY_LUA)
    replayed: dict[str, str] = {}
    for entry in to_replay:
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
    trimmed = {k: v for k, v in trimmed.items() if k in replayed}
    if replayed:
        ids = list(replayed)
        shown = ",".join(ids[:_AUDITED_IDS]) + (f",…(+{len(ids) - _AUDITED_IDS})" if len(ids) > _AUDITED_IDS else "")
        # Who chose to replay events that may have been decided already is part of the trail.
        unknown = f", {len(trimmed)} of them not known to be undecided (--include-unconfirmed)" if trimmed else ""
        audit_id = as_optional_text(
            audit(
                client,
                actor=actor,
                action="dead_letter_replay",
                detail=f"replayed {len(replayed)} dead letters from {streams.dead_letters} to {streams.input}{unknown}",
                stream=streams.input,
                dead_letter_stream=streams.dead_letters,
                count=str(len(replayed)),
                entry_ids=shown,
                **({"unconfirmed_count": str(len(trimmed))} if trimmed else {}),
            )
        )
    return ReplayResult(planned, replayed, unreplayable, applied=True, audit_id=audit_id, invalid=invalid,
                        decided=decided, decisions_trimmed=trimmed, unconfirmed=unconfirmed, decisions_read=read,
                        decisions_gap=gap if trimmed or unconfirmed else None)


@dataclass(frozen=True, slots=True)
class PurgeResult:
    planned: tuple[DeadLetterEntry, ...]
    removed: tuple[str, ...]  # dead letter ids this purge deleted
    applied: bool
    audit_id: str | None = None
    audit_error: str | None = None  # the letters removed, their audit entry refused (Redis at maxmemory)

    @property
    def skipped(self) -> tuple[str, ...]:
        """Planned entries already gone when the purge ran (replayed or purged by someone else meanwhile)."""
        removed = set(self.removed)
        return tuple(e.id for e in self.planned if e.id not in removed) if self.applied else ()

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "planned": [e.as_dict() for e in self.planned],
                "removed": list(self.removed), "skipped": list(self.skipped), "audit_id": self.audit_id,
                "audit_error": self.audit_error}


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
    audit_id = audit_error = None
    if removed:
        removed_ids = set(removed)
        gone = [entry for entry in planned if entry.id in removed_ids]
        described = [f"{e.id} {e.correlation_id or '-'} ({e.reason.split(':')[0]})" for e in gone[:_AUDITED_IDS]]
        audit_id, audit_error = audit_done(
            client, actor=actor, action="dead_letter_purge",
            detail=f"purged {len(removed)} dead letters from {streams.dead_letters}",
            dead_letter_stream=streams.dead_letters, count=str(len(removed)),
            entries="; ".join(described) + (f"; …(+{len(gone) - _AUDITED_IDS})" if len(gone) > _AUDITED_IDS else ""),
        )
    return PurgeResult(planned, removed, applied=True, audit_id=audit_id, audit_error=audit_error)


def still_invalid(entry: DeadLetterEntry, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> str | None:
    """Why a worker with this size limit would dead-letter this event again; None when it would decide it."""
    try:
        decode_event(entry.original, max_event_bytes=max_event_bytes)
    except InvalidEvent as exc:
        return str(exc)
    return None
