"""At least once in, exactly once out: the Redis side of the worker's delivery contract.

Two Lua scripts carry the contract (DESIGN.md, "Delivery"):
- `claim_events`: per event, a completed key → duplicate; `SET processing NX PX lease` → ours; held by *another*
  stream entry → duplicate in flight; held by *this same* entry → a dead or stalled owner's work, taken over.
- `commit_batch`: per decided event, if the completed key exists, or another entry with the same correlation id holds
  the lease, only XACK (another consumer won the race, or is deciding it); else XADD decision, XADD command (if
  executed), SET completed EX ttl, DEL processing, XACK. The commit re-checks what the claim found, atomically and
  later, so the worker never waits for the claim's reply before committing: the claim sets the lease (other
  consumers see the event in flight), the commit decides. Both go out on one connection, so Redis runs each claim
  before its commit (`ScriptConnection`). Duplicates are acked
  and dead letters are acked and written in the same call; a dead letter is written only if its XACK found the entry
  still pending, so a stalled owner that resumes after another consumer (or an operator) already dead-lettered the
  entry writes no second copy. Being one script makes each event's check-and-write atomic: two consumers racing on
  one correlation id produce one command.
A crash before the commit leaves entries pending in the group; they are reclaimed with XAUTOCLAIM.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

import hiredis
import redis
from redis.commands.core import Script
from redis.connection import Connection
from redis.exceptions import NoScriptError

from worker.connection import HeldConnection
from worker.events import OPTIONAL_FIELDS, REQUIRED_FIELDS
from worker.names import (
    COMMANDS_STREAM,
    CONSUMER_GROUP,
    DEAD_LETTER_STREAM,
    DECISIONS_STREAM,
    INPUT_STREAM,
    completed_key,
    processing_key,
)
from worker.records import per_event_record
from worker.redis_text import as_text

log = logging.getLogger(__name__)

# Both scripts run once per batch and loop over its events: globals (ARGV, redis.call, string.*) are looked up once,
# into locals, not on every use.
_CLAIM_LUA = """
local ARGV, KEYS, call, pcall, sub, len = ARGV, KEYS, redis.call, redis.pcall, string.sub, string.len
local owner = ARGV[1]
local lease = ARGV[2]
local out = {}
for i = 1, #KEYS / 2 do
  local entry = ARGV[2 + i]
  local value = owner .. '|' .. entry
  if call('EXISTS', KEYS[2 * i - 1]) == 1 then
    out[i] = 'done'
  elseif call('SET', KEYS[2 * i], value, 'NX', 'PX', lease) then
    out[i] = 'claimed'
  else
    local held = pcall('GET', KEYS[2 * i])
    local suffix = '|' .. entry
    if type(held) ~= 'string' then
      -- Gone meanwhile, or not a string (not a lease: someone else's key under our name): ours now.
      call('SET', KEYS[2 * i], value, 'PX', lease)
      out[i] = 'claimed'
    elseif sub(held, -len(suffix)) == suffix then
      call('SET', KEYS[2 * i], value, 'PX', lease)
      out[i] = 'takeover'
    else
      out[i] = 'inflight'
    end
  end
end
return out
"""

# Lua, for the scripts that dead-letter an entry: DEL the lease at `key` if it names `entry` (a claim writes
# owner|entry). Another entry's lease, or a key that is not a lease, stays.
RELEASE_LEASE_LUA = """
local function release_lease(key, entry)
  local held = redis.pcall('GET', key)
  local suffix = '|' .. entry
  if type(held) == 'string' and string.sub(held, -string.len(suffix)) == suffix then redis.call('DEL', key) end
end
"""

# KEYS: input stream, decisions stream, commands stream, dead-letter stream, then completed/processing per decision,
# then the processing key of each dead letter that has a correlation id.
# ARGV: group, ttl_s, n_decided, n_dead; the field names of every decision of the batch, then of every command; the
# fields every decision shares, then every command (names and values); then per dead letter its entry id, where its
# processing key is in KEYS (0: none) and its fields (names and values); then per decided event its entry id, 1 if
# a command follows (else 0), its decision's values in the names' order, its command's values. Each list
# count-prefixed. Names go once per batch, not once per event: half the arguments Redis parses and hands to Lua.
_COMMIT_LUA = RELEASE_LEASE_LUA + """
local ARGV, KEYS, call, pcall, unpack = ARGV, KEYS, redis.call, redis.pcall, unpack
local sub, len, match = string.sub, string.len, string.match
local group = ARGV[1]
local ttl = ARGV[2]
local n_decided, n_dead = tonumber(ARGV[3]), tonumber(ARGV[4])
local pos = 5
-- Where each list starts in ARGV and how long it is; read in place, never copied into tables of their own.
local function take_list()
  local n = tonumber(ARGV[pos])
  local at = pos + 1
  pos = at + n
  return at, n
end
local decision_names_at, n_decision_names = take_list()
local command_names_at, n_command_names = take_list()
local shared_decision_at, n_shared_decision = take_list()
local shared_command_at, n_shared_command = take_list()
-- An output key that is not a stream (someone else's key under our name) would fail an XADD after its entry was
-- acked, and that event would be lost: refuse the whole batch first, with nothing written. Only the streams this
-- batch writes are looked at (a TYPE is ~1 µs; command names come only with a command).
local writes = {[2] = n_decided > 0, [3] = n_command_names > 0, [4] = n_dead > 0}
for k = 2, 4 do
  if writes[k] then
    local kind = call('TYPE', KEYS[k])['ok']
    if kind ~= 'stream' and kind ~= 'none' then
      return redis.error_reply('WRONGTYPE ' .. KEYS[k] .. ' is a ' .. kind .. ', not a stream: nothing was committed')
    end
  end
end
-- The XADD fields of a record: its names and values (from ARGV[values_at]) interleaved, then the shared fields.
-- One table per kind of record, its names and shared fields written once; each event overwrites only its values
-- (every record of a kind has the same names, so the same length).
local records = {}
local function record(names_at, n, values_at, shared_at, n_shared)
  local fields = records[names_at]
  if not fields then
    fields = {}
    for j = 0, n - 1 do fields[2 * j + 1] = ARGV[names_at + j] end
    for j = 0, n_shared - 1 do fields[2 * n + j + 1] = ARGV[shared_at + j] end
    records[names_at] = fields
  end
  for j = 0, n - 1 do fields[2 * j + 2] = ARGV[values_at + j] end
  return fields
end
-- Dead letters first: a copy of a dead-lettered entry in this same batch then finds its lease released.
local dead_out = {}
for i = 1, n_dead do
  local entry, lease_key = ARGV[pos], tonumber(ARGV[pos + 1]); pos = pos + 2
  local fields_at, n_fields = take_list()
  if call('XACK', KEYS[1], group, entry) == 1 then
    call('XADD', KEYS[4], '*', unpack(ARGV, fields_at, fields_at + n_fields - 1))
    -- Its failed tries left a lease: released, or a replay of this dead letter would be taken for a copy in flight.
    if lease_key > 0 then release_lease(KEYS[lease_key], entry) end
    dead_out[i] = 'dead_lettered'
  else
    dead_out[i] = 'duplicate'
  end
end
local out = {}
for i = 1, n_decided do
  local entry = ARGV[pos]
  local decision_at = pos + 2
  local command_at = nil
  if ARGV[pos + 1] == '1' then command_at = decision_at + n_decision_names end
  pos = decision_at + n_decision_names + (command_at and n_command_names or 0)
  local ck, pk = KEYS[4 + 2 * i - 1], KEYS[4 + 2 * i]
  local held = pcall('GET', pk)
  if type(held) ~= 'string' then held = false end  -- none, or not a lease (someone else's key): deleted below
  local suffix = '|' .. entry
  local copy = false
  if held and sub(held, -len(suffix)) ~= suffix then
    -- Another entry with this correlation id holds the lease: this is a copy, unless that entry is no longer
    -- pending (dead-lettered or acked while its worker stalled, before its claim landed) or was trimmed from the
    -- stream (no worker can decide it): a stale lease.
    local holder = match(held, '|([^|]*)$')
    local still = holder and pcall('XPENDING', KEYS[1], group, holder, holder, 1)
    copy = type(still) == 'table' and #still > 0 and #call('XRANGE', KEYS[1], holder, holder) > 0
  end
  if call('EXISTS', ck) == 1 then
    call('XACK', KEYS[1], group, entry)
    out[#out + 1] = 'duplicate'
  elseif copy then
    -- The entry holding the lease is the one being decided. Ack this copy.
    call('XACK', KEYS[1], group, entry)
    out[#out + 1] = 'duplicate'
  elseif call('XACK', KEYS[1], group, entry) == 0 then
    -- No longer pending and not decided: settled elsewhere (an operator dead-lettered it while this worker was
    -- stalled), or Redis lost the delivery and will deliver it again. Either way it is not ours to decide now;
    -- release our lease so a replay of it is not mistaken for a duplicate in flight.
    if held then call('DEL', pk) end
    out[#out + 1] = 'settled'
  else
    local decision = record(decision_names_at, n_decision_names, decision_at, shared_decision_at, n_shared_decision)
    local decision_id = call('XADD', KEYS[2], '*', unpack(decision))
    if command_at then
      local command = record(command_names_at, n_command_names, command_at, shared_command_at, n_shared_command)
      call('XADD', KEYS[3], '*', unpack(command))
    end
    call('SET', ck, decision_id, 'EX', ttl)
    call('DEL', pk)
    out[#out + 1] = 'committed'
  end
end
for _, outcome in ipairs(dead_out) do out[#out + 1] = outcome end
return out
"""


OutcomeT = TypeVar("OutcomeT")


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"  # ours to decide
    TAKEOVER = "takeover"  # this same entry was in flight under a dead or stalled owner: ours now
    DONE = "done"  # already decided: a duplicate (the commit acks it)
    INFLIGHT = "inflight"  # another entry with this id is being decided: a duplicate (the commit acks it)


@per_event_record
class DecidedEvent:
    entry_id: bytes
    correlation_id: str
    decision_fields: Mapping[str, str | bytes]
    command_fields: Mapping[str, str] | None


@dataclass(frozen=True, slots=True)
class SharedFields:
    """Fields every decision (and every command) of a batch carries: sent once, added to each entry by the commit."""

    decision: Mapping[str, str | bytes] = field(default_factory=dict)
    command: Mapping[str, str | bytes] = field(default_factory=dict)


NO_SHARED_FIELDS = SharedFields()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: bytes
    fields: Mapping[bytes | str, bytes | str]  # the original fields, then reason, delivery_count, ...
    correlation_id: str | None = None  # its lease, if this entry holds one, is released with it

    @property
    def reason(self) -> str:
        """Why (`dead_reason`, as `dead_letter_fields` writes it)."""
        reason = self.fields.get("dead_reason", self.fields.get(b"dead_reason", ""))
        return reason.decode(errors="replace") if isinstance(reason, bytes) else reason


@dataclass(frozen=True, slots=True)
class StreamNames:
    """The streams one worker talks to; tests and benchmarks may use their own."""

    input: str = INPUT_STREAM
    group: str = CONSUMER_GROUP
    decisions: str = DECISIONS_STREAM
    commands: str = COMMANDS_STREAM
    dead_letters: str = DEAD_LETTER_STREAM


DEFAULT_STREAMS = StreamNames()


class ScriptConnection:
    """One connection (`HeldConnection`) the claim and the commit scripts are both sent on, their replies read in the
    order sent. One connection is what makes Redis run them in that order: a batch's claim before its commit, and
    the commit in flight before the next batch's claim. On two, Redis could run a commit before the claim sent
    ahead of it, and that claim would leave a lease behind for an entry the commit had found settled."""

    def __init__(self, client: redis.Redis) -> None:
        self.held = HeldConnection(client)
        self._waiting: deque[PendingScript] = deque()  # sent, reply not read yet, oldest first
        self._socket: object = None  # the socket they were sent on

    def send(self, pending: PendingScript, packed: bytes) -> None:
        connection = self.held.connection()
        self._lose_if_reopened(connection)
        try:
            # No health check while a reply is owed: redis-py's PING would read that reply as its PONG.
            connection.send_packed_command([packed], check_health=not self._waiting)
        except BaseException:
            self.discard()
            raise
        self._socket = getattr(connection, "_sock", None)
        self._waiting.append(pending)

    def _lose_if_reopened(self, connection: Connection) -> None:
        """Replies awaited on a socket closed since (the pool's connections closed by a reconnect, which redis-py
        then reopens on the next send) are gone with it: never read another's reply in their place."""
        if self._waiting and getattr(connection, "_sock", None) is not self._socket:
            self._lose_waiting()

    def read_through(self, pending: PendingScript, *, block: bool = True) -> None:
        """Read replies, oldest first, until `pending`'s is in (each earlier one kept for its own reader, or dropped
        if nobody wants it any more). Without `block`, only while a reply is there to read."""
        if self._waiting:
            self._lose_if_reopened(self.held.connection())
        while pending in self._waiting:
            if not block and not self.held.reply_waiting():
                return
            try:
                try:
                    reply: Any = self.held.connection().read_response()
                except redis.ResponseError as refusal:  # that script's own error reply: the connection stays in step
                    # Kept without its traceback: that holds this frame, whose `reply` holds it — a cycle per refused
                    # batch, each keeping the batch's data until a full collection (~100 ms pauses at 1,000/s).
                    reply = refusal.with_traceback(None)
                self._waiting[0].receive(reply)
                self._waiting.popleft()
            except BaseException:
                # A broken connection, or a signal's exception (ForcedExit) anywhere in here: whether the reply was
                # read and handed over is not known, so none waiting is trusted to be in step.
                self.discard()
                raise

    def forget(self, pending: PendingScript) -> None:
        """Its reply is not wanted. When no other is either, the connection is closed at once (the caller may be
        giving up on a Redis that does not answer); else the reply is dropped when it is read in turn."""
        if not any(other.wanted for other in self._waiting):
            self.discard()

    def discard(self) -> None:
        """Close the connection: every reply not read yet is lost with it."""
        self.held.discard()
        self._lose_waiting()

    def _lose_waiting(self) -> None:
        lost, self._waiting = self._waiting, deque()
        for pending in lost:
            pending.receive(redis.ConnectionError("the connection was closed before this reply was read"))

    def close(self) -> None:
        """Hand the connection back to the pool, or close it if a reply is still to come on it."""
        if self._waiting:
            self.discard()
        self.held.close()


class PendingScript:
    """One EVALSHA sent on the scripts' connection, its reply read later (`reply`): the hot path works while Redis
    runs the script. Packed by hiredis in one call (redis-py's per-argument conversions cost ~0.1 µs an argument, and a
    commit has ~60 per event). Use it as a context manager: a reply never read is dropped
    (`ScriptConnection.forget`)."""

    def __init__(self, connection: ScriptConnection, script: Script, keys: list[str],
                 args: list[str | bytes | int]) -> None:
        self._connection = connection
        self._script = script
        self._keys = keys
        self._args = args
        self._reply: Any = _NOT_READ
        self.wanted = True  # until its reply is asked for, or it is closed unread
        # hiredis's stub types its argument as a 1-tuple; any length is packed
        connection.send(self, hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args)))  # type: ignore[arg-type]

    def receive(self, reply: Any) -> None:
        self._reply = reply

    def reply(self, *, run_again: bool = True) -> Any:
        """The script's reply. Redis had lost the script (restart, SCRIPT FLUSH: NOSCRIPT): it is loaded and run again
        on a pool connection, after whatever was sent after it on this one; without `run_again`, only loaded (for the
        next call), and None."""
        assert self.wanted, "reply() is read once"
        self._connection.read_through(self)
        self.wanted = False
        reply, self._reply = self._reply, None
        if isinstance(reply, NoScriptError):
            if run_again:
                return self._script(keys=self._keys, args=self._args)
            # Loaded for the next call all the same: else every later EVALSHA of it is refused too, and never runs.
            self._script.registered_client.script_load(self._script.script)
            return None
        if isinstance(reply, BaseException):
            try:
                raise reply
            finally:
                reply = None  # this frame, in the traceback raised, must not hold the exception: no cycle
        return reply

    @property
    def arrived(self) -> bool:
        """Its reply is there to read without waiting (those sent before it are read, without waiting, to see)."""
        if not self.wanted:
            return False
        try:
            self._connection.read_through(self, block=False)
        except (redis.RedisError, OSError):  # the connection broke (and was closed): this reply is lost
            return False
        return self._reply is not _NOT_READ and not isinstance(self._reply, redis.ConnectionError)

    def close(self) -> None:
        if self.wanted:
            self.wanted = False
            if self._reply is _NOT_READ:
                self._connection.forget(self)

    def __enter__(self) -> PendingScript:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_NOT_READ = object()


class PendingOutcomes(Generic[OutcomeT]):
    """A script in flight whose reply is one outcome per item (see `PendingScript`); `outcomes()` waits for it.
    Nothing sent (an empty batch) has no outcomes."""

    def __init__(self, pending: PendingScript | None, outcome: Callable[[str], OutcomeT]) -> None:
        self._pending = pending
        self._outcome = outcome
        self._outcomes: list[OutcomeT] | None = None if pending is not None else []

    def outcomes(self) -> list[OutcomeT]:
        if self._outcomes is None:
            assert self._pending is not None
            raw = self._pending.reply()
            self._outcomes = [self._outcome(r.decode() if isinstance(r, bytes) else r) for r in raw]
        return self._outcomes

    def settle(self) -> None:
        """Read the reply in its turn, its outcomes unused (a claim whose commit has gone out). A script Redis had lost
        (NOSCRIPT) is not run again: run after what was sent after it (its commit), a claim would leave a lease for
        an entry that commit found settled. Other refusals are raised, as by `outcomes()`."""
        if self._outcomes is None and self._pending is not None:
            self._pending.reply(run_again=False)

    @property
    def arrived(self) -> bool:
        """`outcomes()` would not wait."""
        return self._outcomes is not None or (self._pending is not None and self._pending.arrived)

    def close(self) -> None:
        if self._pending is not None:
            self._pending.close()

    def __enter__(self) -> PendingOutcomes[OutcomeT]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


PendingClaim = PendingOutcomes[ClaimOutcome]
PendingCommit = PendingOutcomes[str]


class DeliveryScripts:
    """The claim and commit scripts, registered once per client (EVALSHA, reloaded by redis-py if flushed)."""

    def __init__(self, client: redis.Redis, streams: StreamNames = StreamNames()) -> None:
        self.client = client
        self.streams = streams
        self._connection = ScriptConnection(client)
        self._claim = client.register_script(_CLAIM_LUA)
        self._commit = client.register_script(_COMMIT_LUA)
        self.load()

    def load(self) -> None:
        """Load both scripts into Redis now. A claim Redis does not know (NOSCRIPT) is only loaded, not run again
        (`PendingClaim.settle`): without this, the first batch after a start set no lease. Best effort: a Redis that
        fails here fails the first batch's EVALSHA the same way, and that path loads them."""
        try:
            for script in (self._claim, self._commit):
                self.client.script_load(script.script)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            log.warning("could not load the delivery scripts now (%s): they are loaded on first use", exc)

    def close(self) -> None:
        """Hand the scripts' connection back to the client's pool."""
        self._connection.close()

    def claim(
        self, owner: str, lease_ms: int, items: Sequence[tuple[str, bytes]]
    ) -> list[ClaimOutcome]:
        """Claim (correlation_id, entry_id) pairs; one round trip for the batch."""
        with self.send_claim(owner, lease_ms, items) as pending:
            return pending.outcomes()

    def send_claim(self, owner: str, lease_ms: int, items: Sequence[tuple[str, bytes]]) -> PendingClaim:
        """Send the claim and return at once: the caller computes while Redis works, then asks for the outcomes."""
        keys: list[str] = []
        args: list[str | bytes | int] = [owner, lease_ms]
        for correlation_id, entry_id in items:
            keys += [completed_key(correlation_id), processing_key(correlation_id)]
            args.append(entry_id)
        return PendingOutcomes(PendingScript(self._connection, self._claim, keys, args) if keys else None, ClaimOutcome)

    def send_commit(
        self,
        decided: Sequence[DecidedEvent],
        dead: Sequence[DeadLetter],
        completed_ttl_s: int,
        shared: SharedFields = NO_SHARED_FIELDS,
    ) -> PendingCommit:
        """Send a batch's atomic commit and return at once; read its outcomes before the next commit. One outcome per
        decided event ('committed'; 'duplicate' when another consumer committed it first, or another entry with its
        correlation id holds the lease; 'settled' when it was no longer pending — dead-lettered by an operator while
        this worker stalled — so nothing was written), then one per dead letter ('dead_lettered', or 'duplicate'
        when the entry was no longer pending: someone else already dead-lettered or acked it). `shared` fields are
        added to every decision (and command) entry."""
        if not decided and not dead:
            return PendingOutcomes(None, str)
        s = self.streams
        decision_names = tuple(decided[0].decision_fields) if decided else ()
        command_names = next((tuple(event.command_fields) for event in decided if event.command_fields), ())
        keys: list[str] = [s.input, s.decisions, s.commands, s.dead_letters]
        args: list[str | bytes | int] = [s.group, completed_ttl_s, len(decided), len(dead)]
        args += [len(decision_names), *decision_names, len(command_names), *command_names]
        args += _flat(shared.decision)
        args += _flat(shared.command)
        lease_keys: list[str] = []  # the dead letters' processing keys, in KEYS after the decided events' pairs
        for letter in dead:
            lease_key = 0  # where its processing key is in KEYS (1-based, as Lua counts), 0: no correlation id
            if letter.correlation_id is not None:
                lease_keys.append(processing_key(letter.correlation_id))
                lease_key = len(keys) + 2 * len(decided) + len(lease_keys)
            args += (letter.entry_id, lease_key)
            args += _flat(letter.fields)
        for event in decided:
            keys += [completed_key(event.correlation_id), processing_key(event.correlation_id)]
            _check_names(event.decision_fields, decision_names, event)
            args += (event.entry_id, 1 if event.command_fields else 0)
            args += event.decision_fields.values()
            if event.command_fields:
                _check_names(event.command_fields, command_names, event)
                args += event.command_fields.values()
        keys += lease_keys
        return PendingOutcomes(PendingScript(self._connection, self._commit, keys, args), str)


def _check_names(fields: Mapping[str, object], names: tuple[str, ...], event: DecidedEvent) -> None:
    """The commit sends field names once per batch: every record of a kind must have the same names, in order."""
    if tuple(fields) != names:
        raise ValueError(f"event {event.correlation_id!r} has fields {tuple(fields)}, not the batch's {names}")


def _flat(fields: Mapping[str, str | bytes] | Mapping[bytes | str, bytes | str]) -> list[bytes | str | int]:
    return [len(fields) * 2, *itertools.chain.from_iterable(fields.items())]


def ensure_group(client: redis.Redis, streams: StreamNames = StreamNames()) -> bool:
    """Create the consumer group (and the stream) if missing; True when created. Starts at 0: nothing queued
    before the first worker started is skipped. An existing group is found by a read first: a Redis that refuses
    writes for now (out of memory, a replica during a failover) refuses XGROUP CREATE even for a group it has."""
    try:
        if any(group["name"].decode() == streams.group for group in client.xinfo_groups(streams.input)):
            return False
    except redis.ResponseError as exc:
        if "no such key" not in str(exc):
            raise
    try:
        client.xgroup_create(streams.input, streams.group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise
    return True


# XGROUP DELCONSUMER drops the consumer's pending entries with it, and they would never be delivered again. So a
# consumer is checked and deleted in one script: one that has an entry at that instant (claimed to it a moment
# before, `tacticalctl pending claim`) stays.
# KEYS: the input stream. ARGV: the group, then the consumers to delete; each only if nothing is pending on it.
_DELETE_CONSUMERS_WITHOUT_PENDING_LUA = """
local deleted = {}
for i = 2, #ARGV do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[i]) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[i])
    deleted[#deleted + 1] = ARGV[i]
  end
end
return deleted
"""


def delete_consumers_without_pending(client: redis.Redis, consumers: Sequence[str],
                                     streams: StreamNames = StreamNames()) -> tuple[str, ...]:
    """Delete these consumers from the group, each only if nothing is pending on it; returns those deleted."""
    if not consumers:
        return ()
    deleted = client.register_script(_DELETE_CONSUMERS_WITHOUT_PENDING_LUA)(
        keys=[streams.input], args=[streams.group, *consumers])
    return tuple(as_text(name) for name in deleted)


# A dead letter is written by one XADD from a script, and Lua hands a command at most ~8,000 arguments: past that the
# script fails after its XACK, and the entry is acked but never written. An event has a dozen fields; one with
# thousands (all within max_event_bytes) keeps its known fields and the first others up to this count.
MAX_DEAD_LETTER_ORIGINAL_FIELDS = 1000
# An oversized event (payload_too_large) was copied whole into its dead letter: a 20 MB event made a second 20 MB
# write that held Redis up, and every tool reading the dead letters read it again. A dead letter keeps at most this
# much of the original's names and values together, a value at most MAX_DEAD_LETTER_VALUE_BYTES (cut; its length is
# kept in `dead_fields_truncated`), a name at most MAX_DEAD_LETTER_NAME_BYTES (a longer one is left out with its
# value); the event's own fields have the first claim on it. What an operator needs of such an event — which producer,
# the start of the offending field — fits.
MAX_DEAD_LETTER_BYTES = 262_144
MAX_DEAD_LETTER_VALUE_BYTES = 65_536
MAX_DEAD_LETTER_NAME_BYTES = 1_024
_EVENT_FIELD_NAMES = frozenset(
    form for name in (*REQUIRED_FIELDS, *OPTIONAL_FIELDS) for form in (name, name.encode())
)


def _size(text: bytes | str) -> int:
    return len(text.encode()) if isinstance(text, str) else len(text)


def _cut(value: bytes | str, size: int) -> bytes | str:
    if isinstance(value, str):
        return value.encode()[:size].decode(errors="ignore")  # a character cut in two is dropped
    return value[:size]


def dead_letter_fields(
    original: Mapping[bytes, bytes], *, reason: str, delivery_count: int, entry_id: bytes, consumer: str
) -> dict[bytes | str, bytes | str]:
    """The original fields, then why, how often it was delivered, where it came from and who gave up on it.

    Of an event with more than MAX_DEAD_LETTER_ORIGINAL_FIELDS fields, or more than MAX_DEAD_LETTER_BYTES of them,
    the event's own fields are kept first, then the others in order while they fit (a name longer than
    MAX_DEAD_LETTER_NAME_BYTES never does); `dead_fields_left_out` says how many were not kept. A value longer than
    MAX_DEAD_LETTER_VALUE_BYTES, or than the room left, is cut, and `dead_fields_truncated` names each one cut with
    its length (`debug_blob=2000000`)."""
    names = list(original)
    room = MAX_DEAD_LETTER_BYTES
    kept: dict[bytes | str, bytes | str] = {}
    truncated: list[str] = []
    # The event's own fields first, the smallest first (its id and type are never crowded out by a huge matrix),
    # then the others in their order.
    own = sorted((n for n in names if n in _EVENT_FIELD_NAMES), key=lambda n: _size(n) + _size(original[n]))
    for name in own + [n for n in names if n not in _EVENT_FIELD_NAMES]:
        name_size = _size(name)
        if len(kept) == MAX_DEAD_LETTER_ORIGINAL_FIELDS or name_size > MAX_DEAD_LETTER_NAME_BYTES or name_size > room:
            continue
        value: bytes | str = original[name]
        fits = min(MAX_DEAD_LETTER_VALUE_BYTES, room - name_size)
        if _size(value) > fits:
            truncated.append(f"{as_text(name)}={_size(value)}")
            value = _cut(value, fits)
        kept[name] = value
        room -= name_size + _size(value)
    fields: dict[bytes | str, bytes | str] = {name: kept[name] for name in names if name in kept}  # as they came
    if len(kept) < len(names):
        fields["dead_fields_left_out"] = str(len(names) - len(kept))
    if truncated:
        fields["dead_fields_truncated"] = ",".join(truncated)
    fields.update(
        {
            "dead_reason": reason,
            "dead_delivery_count": str(delivery_count),
            "dead_entry_id": entry_id,
            "dead_consumer": consumer,
        }
    )
    return fields


# A worker's own retry is not a delivery: after Redis refused or went away, it reads what it holds again (XREADGROUP
# from 0), and Redis counts that read. The count is set back in Redis itself (XCLAIM to the same consumer, RETRYCOUNT
# one less, JUSTID), so that whoever reads it later — another worker taking the entry over, this worker restarted
# under a new consumer name, `tacticalctl pending` — sees only the deliveries that counted. Only entries still pending
# on this consumer are touched: one another consumer took over meanwhile is its business.
# KEYS[1] the input stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] the entry ids it has just read again.
_FORGIVE_REREADS_LUA = """
for i = 3, #ARGV do
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])[1]
  if row and row[4] > 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'RETRYCOUNT', row[4] - 1, 'JUSTID')
  end
end
return 0
"""


def forgive_rereads(client: redis.Redis, entry_ids: Sequence[bytes], streams: StreamNames, consumer: str) -> None:
    """Take back, in Redis, the delivery each of `entry_ids` was counted when `consumer` read it again as its own
    retry (one round trip). Refused (NOPERM) under an ACL user without XCLAIM: an ACL file from before this."""
    if entry_ids:
        client.eval(_FORGIVE_REREADS_LUA, 1, streams.input, streams.group, consumer, *entry_ids)


def pending_delivery_counts(
    client: redis.Redis, entry_ids: Sequence[bytes], streams: StreamNames, consumer: str
) -> dict[bytes, int]:
    """Times delivered, per entry id, for those of `entry_ids` pending on `consumer` (absent: not pending there). One
    XPENDING per id, in one round trip: exact however many other entries lie between them."""
    if not entry_ids:
        return {}
    pipe = client.pipeline(transaction=False)
    for entry_id in entry_ids:
        pipe.xpending_range(streams.input, streams.group, min=entry_id, max=entry_id, count=1, consumername=consumer)
    return {entry_id: int(rows[0]["times_delivered"])
            for entry_id, rows in zip(entry_ids, pipe.execute(), strict=True) if rows}

