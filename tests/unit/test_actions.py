"""The one mapping between an agent's output index and a trading action."""

from __future__ import annotations

import numpy as np
import pytest

from worker.actions import ACTION_ORDER, Action


def test_each_output_index_maps_to_its_action_and_back() -> None:
    assert [Action.from_index(i) for i in range(3)] == [Action.SHORT, Action.HOLD, Action.LONG]
    assert [action.name.lower() for action in map(Action.from_index, range(3))] == list(ACTION_ORDER)
    assert all(Action.from_index(action.index) is action for action in Action)
    # Beyond the declared `int`, on purpose: the worker passes int(np.argmax(...)), but a numpy index works as well.
    from_numpy = Action.from_index(np.int64(2))  # type: ignore[arg-type]
    assert from_numpy is Action.LONG, "numpy's argmax result is accepted as it is"


@pytest.mark.parametrize("index", [-1, 3])
def test_an_index_outside_the_three_outputs_is_refused(index: int) -> None:
    with pytest.raises(ValueError, match="not an action index"):
        Action.from_index(index)
