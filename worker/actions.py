"""The one mapping between an agent's output index and a trading action."""

from __future__ import annotations

from enum import IntEnum


class Action(IntEnum):
    """A trading action; the value is the direction it trades in."""

    SHORT = -1
    HOLD = 0
    LONG = 1

    @property
    def index(self) -> int:
        """Position of this action in every agent's probability vector."""
        return self.value + 1

    @classmethod
    def from_index(cls, index: int) -> Action:
        # A tuple lookup, not cls(index - 1): the accuracy tracker calls this for every agent of every event, and
        # an Enum call costs ten times as much.
        if 0 <= index < len(_BY_INDEX):
            return _BY_INDEX[index]
        raise ValueError(f"{index!r} is not an action index (0 short, 1 hold, 2 long)")


_BY_INDEX: tuple[Action, ...] = (Action.SHORT, Action.HOLD, Action.LONG)


# Index 0 short, 1 hold, 2 long: the order of every agent's output and of the manifest's `action_order`.
ACTION_ORDER: tuple[str, ...] = ("short", "hold", "long")
AGENT_NAMES: tuple[str, ...] = ("fvg", "momentum", "entry")
