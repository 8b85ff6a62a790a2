"""One symbol's bar clock, as the books see it: the newest bar so far, and whether its time has gone back for good.

The books (positions, agent accuracy) are driven by the bar-close times of events, never the wall clock. Time can go
back two ways, and the books must tell them apart:
- a **late bar**: one old event among current ones (a dead letter put back, an entry reclaimed late). It says
  nothing about what came after it, and the current timeline goes on;
- a **rewound timeline**: a replay of older bars, a simulation or feed restarted from an earlier time. What the books
  hold from the later timeline (positions to close, calls to resolve) will never be reached by a later price.
A mark is *old* when it is more than `tolerance` older than the newest bar. The timeline counts as rewound once the
old marks have themselves advanced by `tolerance` with no current mark in between: a late bar or a burst of late
bars amid live ones never gets there; a replay does within a holding period of its own time.
"""

from __future__ import annotations

from datetime import datetime, timedelta


class Timeline:
    __slots__ = ("newest", "old_since", "tolerance")

    def __init__(self, tolerance: timedelta) -> None:
        self.tolerance = tolerance
        self.newest: datetime | None = None
        self.old_since: datetime | None = None  # the earliest mark of the current run of old marks

    def restart(self) -> None:
        """No bar seen, as a new timeline."""
        self.newest = self.old_since = None

    @property
    def behind(self) -> bool:
        """The latest mark was old: a late bar, or a replay not yet known as one. Its price is nobody's latest."""
        return self.old_since is not None

    def saw(self, moment: datetime) -> None:
        """A bar of this symbol that is not a price check (a position opened, a call recorded)."""
        if self.newest is None or moment > self.newest:
            self.newest = moment

    def rewound_by(self, now: datetime) -> bool:
        """A price at bar close `now`. True when it shows the time went back for good: the caller drops what the
        later timeline left, and the clock restarts from `now`."""
        # `now >= newest` first: marks come in order, and the subtraction is then never made.
        if self.newest is None or now >= self.newest or now >= self.newest - self.tolerance:
            self.old_since = None
            self.saw(now)
            return False
        if self.old_since is None or now < self.old_since:
            self.old_since = now
        if now - self.old_since < self.tolerance:
            return False
        self.newest, self.old_since = now, None
        return True


__all__ = ["Timeline"]
