"""The hot path's records are values: equal and hashed by their fields, as frozen dataclasses are (they are frozen
to the type checker only; see `per_event_record`)."""

from __future__ import annotations

import numpy as np

from tests.unit.test_aggregator import CONFIG, make_event
from worker.aggregator import aggregate
from worker.positions import PositionBook
from worker.records import AgentVote


def votes(long: float) -> list[AgentVote]:
    return [AgentVote(agent, (0.05, 0.95 - long, long), long) for agent in ("fvg", "momentum", "entry")]


def test_decisions_of_the_same_inputs_are_one_value() -> None:
    first = aggregate(make_event(), votes(0.9), CONFIG, "v1")
    second = aggregate(make_event(), votes(0.9), CONFIG, "v1")
    other = aggregate(make_event(), votes(0.2), CONFIG, "v1")
    assert first is not second and first == second and hash(first) == hash(second)
    assert first != other
    assert len({first, second, other}) == 2


def test_an_events_identity_leaves_its_matrix_out() -> None:
    event = make_event()
    same_but_matrix = make_event()
    object.__setattr__(same_but_matrix, "matrix", np.zeros_like(event.matrix))  # as a different read would hold
    assert event == same_but_matrix and hash(event) == hash(same_but_matrix)
    assert event != make_event(price=4501.0)


def test_positions_and_commands_hash() -> None:
    decision = aggregate(make_event(), votes(0.9), CONFIG, "v1")
    assert decision.command is not None
    position = PositionBook().open(decision.command, "2024-03-01T14:30:00Z")
    assert {position, position} == {position} and {decision.command} == {decision.command}
