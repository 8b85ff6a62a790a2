"""Consumer lag of the input stream: how much waits (count) and for how long (seconds), and where it is heading.

`count` is the number of entries not yet delivered to the group, counted in Redis by a script that reads at most
`EXACT_COUNT_LIMIT` entries from each side of the group's last-delivered id (so a check never holds Redis up for long,
however large the backlog): fewer than that after it, they are the count; fewer than that up to it, the stream's
length less those is. Only when both sides are that long is the count not known exactly, and then it is a bound —
at least `EXACT_COUNT_LIMIT`, at most the length less `EXACT_COUNT_LIMIT` — beside XINFO GROUPS `lag`, Redis's own
figure, which alone is not enough: after a restart, Redis 7.0 reloads a group's entries-read as of the last AOF
rewrite, and reports a lag (growing with each restart) for entries long delivered, or none at all. Redis cannot
always compute it either (after an XDEL of entries the group has not read yet, or XGROUP CREATE/SETID to an
arbitrary id without ENTRIESREAD) and then reports nil. `count` takes Redis's figure only where the bound allows it;
otherwise it is None — "unknown", never 0 — and the bound says what is known. `seconds` is the age of the oldest
entry still waiting — undelivered or delivered but not acknowledged — from the millisecond part of its stream id,
measured on the Redis server's clock, which is the clock that made the id.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise
from typing import Any

import redis

from worker.names import CONSUMER_GROUP, INPUT_STREAM
from worker.redis_text import as_text
from worker.stream_entries import StreamRemovals, parse_stream_id, time_reply_ms

# Entries read on each side of the group's last-delivered id to count the undelivered ones; a real backlog past this,
# with as much delivered before it, is large whatever its size.
EXACT_COUNT_LIMIT = 256

# The undelivered entries up to a limit, the first one's id, and from XINFO STREAM the stream's entries-added, the
# entries removed from it (entries-added less its length), its first entry's id, last generated id and greatest
# deleted id (all false before Redis 7, or where the ACL refuses XINFO STREAM: a worker user from before it was
# granted still reads the lag); when there are that many undelivered, the delivered ones still in the stream, up to
# the limit too, the stream's length and the limit-th entry's id (a mark: given back with the next reading, it spares
# reading them again while nothing was removed — 256 entries of ~1.7 KB copied into Lua on every reading). Counted in
# Redis, so their fields never travel; XINFO in the same step, so `ConsumerLag.delivered` adds up and says when it
# cannot.
_COUNT_UNDELIVERED_LUA = """
local limit = tonumber(ARGV[2])
local function id_le(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as <= bs)
end
local after = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', limit)
local first = false
if #after > 0 then first = after[1][1] end
local info, added, length, head, last, deleted = redis.pcall('XINFO', 'STREAM', KEYS[1]), false, 0, false, false, false
if not info.err then
  for i = 1, #info, 2 do
    local key, value = info[i], info[i + 1]
    if key == 'entries-added' then added = value
    elseif key == 'length' then length = value
    elseif key == 'first-entry' then if value then head = value[1] end
    elseif key == 'last-generated-id' then last = value
    elseif key == 'max-deleted-entry-id' then deleted = value end
  end
end
local removed = added and added - length
if #after < limit then return {#after, first, added, removed, head, last, deleted} end
-- The limit-th entry from the head, as found last time: with nothing removed since and the same head, at least
-- `limit` entries still lie up to it, so up to the group's position too when that is at or past it.
if ARGV[3] ~= '' and removed and tostring(removed) == ARGV[4] and head == ARGV[5] and id_le(ARGV[3], ARGV[1]) then
  return {#after, first, added, removed, head, last, deleted, limit, redis.call('XLEN', KEYS[1]), ARGV[3]}
end
local upto = redis.call('XRANGE', KEYS[1], '-', ARGV[1], 'COUNT', limit)
local mark = false
if #upto == limit then mark = upto[limit][1] end
return {#after, first, added, removed, head, last, deleted, #upto, redis.call('XLEN', KEYS[1]), mark}
"""


# What Redis answers for a stream or group that is not there (or a key of another type): the lag is unavailable.
_ABSENT = ("no such key", "WRONGTYPE", "NOGROUP")


class LagUnavailable(RuntimeError):
    """The lag cannot be measured (no stream, no group); the message says what to check."""


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    count: int | None  # undelivered entries: counted, or else Redis's figure where the bound allows it; None: unknown
    pending: int  # delivered, not yet acknowledged
    seconds: float  # age of the oldest undelivered or pending entry; 0 when nothing waits
    oldest_id: str | None
    last_delivered_id: str
    entries_read: int | None
    stream_length: int
    count_exact: bool = True  # counted; False: only the bound below is known, `count` is at best Redis's estimate
    count_min: int | None = None  # what is known of the count when it is not exact: at least, at most
    count_max: int | None = None
    redis_lag: int | None = None  # XINFO GROUPS lag as Redis reports it (None: nil, Redis cannot tell)
    entries_added: int | None = None  # the stream's, read with the count (None before Redis 7)
    removed: int | None = None  # entries removed from the stream since it began (trimmed or deleted, delivered or not)
    first_entry_id: str | None = None  # the stream's first entry (None: empty, or not known)
    last_generated_id: str | None = None  # the stream's last id ever added (None: not known)
    max_deleted_id: str | None = None  # the greatest id XDEL removed, "0-0" for none (None: not known)
    head_mark: str | None = None  # the EXACT_COUNT_LIMIT-th entry from the stream's head, where one was read

    @property
    def undelivered_removed(self) -> bool:
        """Entries the group had not been delivered were (or, when the stream holds only undelivered ones, may have
        been) removed from the stream: XDEL past its last-delivered id, or a producer's `MAXLEN ~` trim past it
        (`StreamRemovals.removed_after`)."""
        if self.last_generated_id is None:
            return False
        return StreamRemovals(
            self.removed, None if self.first_entry_id is None else parse_stream_id(self.first_entry_id),
            parse_stream_id(self.last_generated_id),
            None if self.max_deleted_id is None else parse_stream_id(self.max_deleted_id),
        ).removed_after(parse_stream_id(self.last_delivered_id))

    @property
    def delivered(self) -> int | None:
        """Entries delivered to the group since the stream began, as counted: entries added less those undelivered.
        None when the count is only a bound, or when undelivered entries were removed from the stream (they would
        count as delivered: a dead worker behind a trimming producer would look as fast as the producer). Unlike the
        group's entries-read it holds across a Redis restart (7.0 reloads entries-read stale)."""
        if not self.count_exact or self.count is None or self.entries_added is None or self.undelivered_removed:
            return None
        return self.entries_added - self.count

    @property
    def count_at_least(self) -> int | None:
        """The undelivered entries there are at least: the count, or the bound's low end (Redis's figure, even within
        the bound, can overstate)."""
        return self.count if self.count_exact else self.count_min

    @property
    def backlog_at_least(self) -> int | None:
        """Undelivered and pending entries there are at least: what the event-rate check needs to know a backlog is
        there, also when the count is only a bound."""
        at_least = self.count_at_least
        return None if at_least is None else at_least + self.pending

    @property
    def redis_figure_agrees(self) -> bool:
        """Redis's lag (entries-added − the group's entries-read) is what was counted, or lies within the bound: its
        entries-read is not known to be stale."""
        if self.redis_lag is None:
            return False
        return self.count == self.redis_lag if self.count_exact else self.count is not None

    @property
    def count_text(self) -> str:
        """`500`, or when only a bound is known `256–744` — with Redis's figure beside it when it can be right."""
        if self.count_exact:
            return "unknown" if self.count is None else str(self.count)
        if self.count_min is None or self.count_max is None:
            return "unknown"
        bound = f"{self.count_min}–{self.count_max}"
        return bound if self.count is None else f"{bound} (Redis: {self.count})"

    @property
    def count_note(self) -> str | None:
        """Why the count is a bound, and what to make of Redis's figure; None when it is exact."""
        if self.count_exact:
            return None
        if self.redis_lag is None:
            redis_says = ("Redis cannot tell either (XINFO GROUPS lag is nil: entries deleted, or the group's id set "
                          "by hand)")
        elif self.count is None:
            redis_says = (f"Redis's own figure, {self.redis_lag}, is outside it: stale (Redis 7.0 after a restart "
                          "reports entries long delivered)")
        else:
            redis_says = "Redis's own figure can overstate it many times over after a Redis restart"
        return (f"undelivered {self.count_text}: a bound, not a count — {EXACT_COUNT_LIMIT} entries are read on each "
                f"side of the group's last-delivered id and no more, to keep the check light on Redis; {redis_says}. "
                "Judge the backlog by its age (seconds, always exact)")

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "count_exact": self.count_exact,
            "count_min": self.count if self.count_exact else self.count_min,
            "count_max": self.count if self.count_exact else self.count_max,
            "redis_lag": self.redis_lag,
            "pending": self.pending,
            "seconds": self.seconds,
            "oldest_id": self.oldest_id,
            "last_delivered_id": self.last_delivered_id,
            "entries_read": self.entries_read,
            "stream_length": self.stream_length,
            "delivered": self.delivered,
            "undelivered_removed": self.undelivered_removed,
        }


def no_stream_message(client: redis.Redis, stream: str, error: redis.ResponseError) -> str:
    """Why XINFO on `stream` failed, for an operator: the key is missing, or it holds another type."""
    if "WRONGTYPE" in str(error):
        kind = as_text(client.type(stream))
        return (f"{stream!r} is a {kind}, not a stream: something other than a producer wrote that key, or this is "
                "the wrong database (the runbook's is db 2)")
    return (f"stream {stream!r} does not exist: nothing has been produced yet, or this is the wrong database "
            "(the runbook's is db 2)")


def read_consumer_lag(
    client: redis.Redis,
    stream: str = INPUT_STREAM,
    group: str = CONSUMER_GROUP,
    now_ms: int | None = None,
    previous: ConsumerLag | None = None,
) -> ConsumerLag:
    """The lag now. `previous`, the last reading of the same stream and group, lets the script skip re-reading the
    delivered entries before the group's position when it can tell there are still at least the limit."""
    mark = ("", "", "")
    if previous is not None and previous.head_mark is not None and previous.removed is not None:
        mark = (previous.head_mark, str(previous.removed), previous.first_entry_id or "")
    # Pipelined, not MULTI: Redis refuses every command queued in a transaction once it is at maxmemory, and the
    # lag is what an operator reads then (the script below reads only, so it runs under OOM too).
    with client.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.xinfo_groups(stream)
        pipe.xpending(stream, group)
        pipe.xlen(stream)
        server_time, groups, pending_summary, length = pipe.execute(raise_on_error=False)
    for reply in (server_time, groups, pending_summary, length):
        if isinstance(reply, redis.ResponseError) and not any(text in str(reply) for text in _ABSENT):
            raise reply  # refused (an ACL without XINFO, say): no stream or group missing, and not to be read as one
    if isinstance(groups, redis.ResponseError):
        raise LagUnavailable(no_stream_message(client, stream, groups))
    info = next((g for g in groups if as_text(g["name"]) == group), None)
    if info is None or isinstance(pending_summary, redis.ResponseError):
        raise LagUnavailable(
            f"consumer group {group!r} does not exist on {stream!r}: start the worker (it creates the group) "
            f"or run XGROUP CREATE {stream} {group} 0"
        )

    last_delivered_id = as_text(info["last-delivered-id"])
    after, first, added, removed, head, last, deleted, *before = client.eval(
        _COUNT_UNDELIVERED_LUA, 1, stream, last_delivered_id, EXACT_COUNT_LIMIT, *mark)
    waiting = [as_text(first)] if first else []
    if pending_summary["min"] is not None:
        waiting.append(as_text(pending_summary["min"]))
    oldest_id = min(waiting, key=parse_stream_id) if waiting else None

    if now_ms is None:
        now_ms = time_reply_ms(server_time)
    seconds = 0.0
    if oldest_id is not None:
        seconds = max(0.0, (now_ms - parse_stream_id(oldest_id)[0]) / 1000.0)

    redis_lag = None if info.get("lag") is None else int(info["lag"])
    count_min = count_max = None
    if after < EXACT_COUNT_LIMIT:
        count: int | None = int(after)
    elif before[0] < EXACT_COUNT_LIMIT:  # few delivered entries left in the stream: the rest wait
        count = int(before[1]) - int(before[0])
    else:  # a bound, and Redis's figure where it can be right
        count_min, count_max = EXACT_COUNT_LIMIT, int(before[1]) - EXACT_COUNT_LIMIT
        count = redis_lag if redis_lag is not None and count_min <= redis_lag <= count_max else None
    entries_read = info.get("entries-read")
    return ConsumerLag(
        count=count,
        pending=int(pending_summary["pending"]),
        seconds=seconds,
        oldest_id=oldest_id,
        last_delivered_id=last_delivered_id,
        entries_read=None if entries_read is None else int(entries_read),
        stream_length=int(length),
        count_exact=count_min is None,
        count_min=count_min,
        count_max=count_max,
        redis_lag=redis_lag,
        entries_added=None if added is None else int(added),
        removed=None if removed is None else int(removed),
        first_entry_id=as_text(head) if head else None,
        last_generated_id=as_text(last) if last else None,
        max_deleted_id=as_text(deleted) if deleted else None,
        head_mark=as_text(before[2]) if len(before) > 2 and before[2] else None,
    )


# ---- trend (Burrow-style) --------------------------------------------------------------------------------------


class TrendStatus(StrEnum):
    OK = "ok"
    WARN = "warn"  # falling behind: the consumer works, but the backlog only grows
    STALL = "stall"  # nothing acknowledged for a whole window while entries wait
    STOP = "stop"  # nothing acknowledged for longer than the stop limit while entries wait: treat it as dead
    UNKNOWN = "unknown"  # no sample says how much waits or whether anything moved (Redis could not tell)
    TOO_SHORT = "too_short"  # entries wait, but the samples span too little time to call a trend (one sample, say)


@dataclass(frozen=True, slots=True)
class LagSample:
    """One observation. `committed` is a counter of entries finished (acknowledged); None if not known. `position`
    (the group's last-delivered id) with `pending` says whether anything moved where `committed` cannot: both
    unchanged, nothing was delivered or acknowledged in between. `count` is the undelivered count when counted;
    `count_min` what is known of it at least (the count, or a bound's low end)."""

    at: float
    count: int | None
    pending: int
    committed: int | None
    position: str | None = None
    count_min: int | None = None

    @classmethod
    def from_consumer_lag(cls, lag: ConsumerLag, at: float | None = None) -> LagSample:
        """From outside the worker, finished = delivered − still pending, as counted. Not the group's entries-read:
        Redis 7.0 reloads it stale after a restart, and a trend across the jump would read as progress (a stopped
        consumer not called stopped) or a drop. A count that is only a bound, or undelivered entries removed from
        the stream, give no committed figure (Redis's figure within the bound can overstate): the group's position
        and pending count then say whether it moved, so a dead worker in a large backlog is still called stopped."""
        delivered = lag.delivered
        committed = None if delivered is None else delivered - lag.pending
        count = lag.count if lag.count_exact else None
        return cls(time.time() if at is None else at, count, lag.pending, committed, lag.last_delivered_id,
                   lag.count_at_least)

    @property
    def backlog(self) -> int | None:
        return None if self.count is None else self.count + self.pending

    @property
    def has_backlog(self) -> bool:
        return self.pending > 0 or (self.count or 0) > 0 or (self.count_min or 0) > 0

    @property
    def caught_up(self) -> bool:
        return self.count == 0 and self.pending == 0

    @property
    def progress_known(self) -> bool:
        return self.committed is not None or self.position is not None


def moved(earlier: LagSample, later: LagSample) -> bool | None:
    """Whether anything was acknowledged between two samples; None when they cannot tell. The same last-delivered id
    and pending count: nothing delivered (it would move the id) and nothing acknowledged (it would lower pending).
    Else the committed counter, where both have one (a consumer that reads but never acknowledges has not moved);
    else a moved position is taken for progress — it may be only reading, but it is not proof of a stop."""
    if earlier.position is not None and (earlier.position, earlier.pending) == (later.position, later.pending):
        return False
    if earlier.committed is not None and later.committed is not None:
        return earlier.committed != later.committed
    if earlier.position is not None and later.position is not None:
        return True
    return None


@dataclass(frozen=True, slots=True)
class LagTrendPolicy:
    window_s: float = 60.0
    min_span_s: float = 30.0  # a trend needs time: WARN and STALL need the window's samples to span this much
    stop_after_s: float = 120.0

    @property
    def retention_s(self) -> float:
        return max(self.window_s, self.stop_after_s) + self.window_s


DEFAULT_TREND_POLICY = LagTrendPolicy()


def evaluate_lag_trend(
    samples: Iterable[LagSample], now: float, policy: LagTrendPolicy = DEFAULT_TREND_POLICY
) -> TrendStatus:
    """The lag's trend over the window [now − window_s, now]. The first rule that matches decides:

    1. UNKNOWN — no sample in the window counted the undelivered entries or says whether anything moved.
    2. OK — some sample in the window was caught up (nothing undelivered, nothing pending).
    3. STOP — the latest sample has entries waiting (counted, at least a bound's low end, or pending) and nothing has
       moved (see `moved`) for more than `stop_after_s` (from the first sample of the current still run, over all
       samples given, to now).
    4. STALL — the window spans at least `min_span_s`, entries waited in every sample and nothing moved between any
       two of them: pending entries are not moving while there is lag.
    5. TOO_SHORT — the window spans less than `min_span_s`: entries wait, and no trend can be called yet.
    6. WARN — the backlog (undelivered + pending), over the samples that counted it, never falls between
       consecutive ones and ends higher than it started: the consumer is falling behind.
    7. OK.
    """
    history = sorted((s for s in samples if s.at <= now), key=lambda s: s.at)
    window = [s for s in history if s.at >= now - policy.window_s]
    if not any(s.count is not None or s.position is not None for s in window):
        return TrendStatus.UNKNOWN
    if any(s.caught_up for s in window):
        return TrendStatus.OK

    latest = history[-1]
    if latest.has_backlog and latest.progress_known:
        since = len(history) - 1
        while since > 0 and moved(history[since - 1], history[since]) is False:
            since -= 1
        if now - history[since].at > policy.stop_after_s:
            return TrendStatus.STOP

    if window[-1].at - window[0].at < policy.min_span_s:
        return TrendStatus.TOO_SHORT
    if all(s.has_backlog for s in window) and all(moved(a, b) is False for a, b in pairwise(window)):
        return TrendStatus.STALL
    backlogs = [s.backlog for s in window if s.backlog is not None]
    never_falls = all(later >= earlier for earlier, later in pairwise(backlogs))
    if len(backlogs) >= 2 and never_falls and backlogs[-1] > backlogs[0]:
        return TrendStatus.WARN
    return TrendStatus.OK


class LagTrend:
    """A sliding window of samples (kept for `policy.retention_s`) and its current trend."""

    def __init__(self, policy: LagTrendPolicy = DEFAULT_TREND_POLICY) -> None:
        self.policy = policy
        self._samples: deque[LagSample] = deque()

    @property
    def samples(self) -> list[LagSample]:
        return list(self._samples)

    def add(self, sample: LagSample) -> None:
        self._samples.append(sample)
        horizon = sample.at - self.policy.retention_s
        while self._samples and self._samples[0].at < horizon:
            self._samples.popleft()

    def status(self, now: float) -> TrendStatus:
        return evaluate_lag_trend(self._samples, now, self.policy)
