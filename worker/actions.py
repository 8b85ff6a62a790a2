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
        # int arithmetic on the member itself: Enum's `.value` is a descriptor call, ~0.6 µs here, and the hot path
        # asks for an index several times an event.
        return self + 1

    @property
    def label(self) -> str:
        """The lowercase name decisions carry ("short", "hold", "long")."""
        return _LABELS[self + 1]

    @classmethod
    def from_index(cls, index: int) -> Action:
        # A tuple lookup, not cls(index - 1): the accuracy tracker calls this for every agent of every event, and
        # an Enum call costs ten times as much.
        if 0 <= index < len(ACTIONS_BY_INDEX):
            return ACTIONS_BY_INDEX[index]
        raise ValueError(f"{index!r} is not an action index (0 short, 1 hold, 2 long)")


# Index 0 short, 1 hold, 2 long, as `from_index` gives them; indexed directly where a call would cost too much.
ACTIONS_BY_INDEX: tuple[Action, ...] = (Action.SHORT, Action.HOLD, Action.LONG)
_LABELS: tuple[str, ...] = tuple(action.name.lower() for action in ACTIONS_BY_INDEX)


# Index 0 short, 1 hold, 2 long: the order of every agent's output and of the manifest's `action_order`.
ACTION_ORDER: tuple[str, ...] = ("short", "hold", "long")
AGENT_NAMES: tuple[str, ...] = ("fvg", "momentum", "entry")
