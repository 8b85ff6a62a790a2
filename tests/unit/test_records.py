"""The hot path's records are values: equal and hashed by their fields, as frozen dataclasses are (they are frozen
to the type checker only; see `per_event_record`)."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.test_aggregator import CONFIG, make_event
from worker.actions import Action
from worker.aggregator import aggregate
from worker.decision_entry import (
    decision_confidences,
    decision_fields,
    decision_scores,
    decision_votes,
    entry_timings_ms,
    timing_fields,
)
from worker.positions import PositionBook
from worker.records import AGENT_NAMES, AgentVote


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


def test_a_decision_entry_reads_back_as_the_agents_float32_outputs() -> None:
    """The votes and confidences are written at float32 precision (what the agents output), the scores exactly."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        outputs = rng.dirichlet([0.3, 0.3, 0.3], size=3).astype(np.float32)
        agent_votes = []
        for i, agent in enumerate(AGENT_NAMES):
            short, hold, long = (float(p) for p in outputs[i])
            agent_votes.append(AgentVote(agent, (short, hold, long), float(outputs[i].max())))
        decision = aggregate(make_event(), agent_votes, CONFIG, "v1")
        stored = as_stored(decision_fields(decision, b"1-1"))
        votes, confidences = decision_votes(stored), decision_confidences(stored)
        for i, agent in enumerate(AGENT_NAMES):
            assert list(votes[agent]) == outputs[i].tolist()
            assert confidences[agent] == outputs[i].max()
        assert tuple(decision_scores(stored).values()) == decision.scores
        assert float(stored[b"score"]) == decision.score


def as_stored(fields: dict[str, str | bytes]) -> dict[bytes, bytes]:
    """Fields as a reader gets them back from Redis."""
    return {name.encode(): value if isinstance(value, bytes) else value.encode() for name, value in fields.items()}


def binary(fields: dict[str, str | bytes], name: str) -> bytes:
    """A field written as bytes (the binary ones; the rest are text)."""
    value = fields[name]
    assert isinstance(value, bytes), f"{name} is {value!r}, not bytes"
    return value


def test_a_decisions_numbers_are_binary_fields_that_name_their_encoding() -> None:
    """The scores, votes and confidences as little-endian binary (every byte of an entry costs every hand on the path:
    bench/PERFORMANCE.md), in the layout their names and DESIGN's orders say; the rest is text."""
    decision = aggregate(make_event(), votes(0.9), CONFIG, "v1")
    fields = decision_fields(decision, b"1-1")
    assert set(fields) == {"correlation_id", "synergy_type", "direction", "action", "score", "execute", "reason",
                           "scores_f64le", "votes_f32le", "confidences_f32le", "event_id"}
    assert struct.unpack("<3d", binary(fields, "scores_f64le")) == decision.scores
    as_float32 = np.array([p for v in decision.votes for p in v.probabilities], dtype=np.float32).tolist()
    assert struct.unpack("<9f", binary(fields, "votes_f32le")) == tuple(as_float32)
    confidences = np.array([v.confidence for v in decision.votes], dtype=np.float32).tolist()
    assert struct.unpack("<3f", binary(fields, "confidences_f32le")) == tuple(confidences)
    assert sum(len(value) for value in fields.values()) < 200


def test_votes_out_of_agent_order_are_refused_not_written_under_other_names() -> None:
    decision = aggregate(make_event(), votes(0.9), CONFIG, "v1")
    swapped = replace(decision, votes=(decision.votes[1], decision.votes[0], decision.votes[2]))
    with pytest.raises(ValueError, match="expected one of each"):
        decision_fields(swapped)


def test_votes_scores_and_timings_read_from_entries_old_and_new() -> None:
    """A decisions stream holds entries written before and after the numbers went binary, during an upgrade and for
    as long as it keeps them: the readers take both, and skip what does not read."""
    new = as_stored({"votes_f32le": struct.pack("<9f", 0.5, 0.25, 0.25, 0.75, 0.125, 0.125, 0, 0, 1),
                     "confidences_f32le": struct.pack("<3f", 0.5, 0.75, 1.0),
                     "scores_f64le": struct.pack("<3d", 0.1, 0.2, 0.7),
                     "timings_ms": "validate=0.250 inference=1.500 claim=x"})
    old = {b"vote_fvg": b"0.5,0.25,0.25", b"vote_momentum": b"0.75,0.125,0.125", b"vote_entry": b"0,0,1",
           b"confidence_fvg": b"0.5", b"confidence_momentum": b"0.75", b"confidence_entry": b"1.0",
           b"score_short": b"0.1", b"score_hold": b"0.2", b"score_long": b"0.7",
           b"validate_ms": b"0.25", b"inference_ms": b"1.5", b"claim_ms": b"nan"}
    for fields in (new, old):
        assert decision_votes(fields) == {"fvg": (0.5, 0.25, 0.25), "momentum": (0.75, 0.125, 0.125),
                                          "entry": (0.0, 0.0, 1.0)}
        assert decision_confidences(fields) == {"fvg": 0.5, "momentum": 0.75, "entry": 1.0}
        assert decision_scores(fields) == {"short": 0.1, "hold": 0.2, "long": 0.7}
        assert entry_timings_ms(fields) == {"validate": 0.25, "inference": 1.5}  # what is not a number is left out
    broken = {b"votes_f32le": b"short", b"vote_fvg": b"0.1,x,0.2", b"vote_entry": b"0.5,0.5"}
    assert decision_votes(broken) == {} and decision_scores({}) == {} and entry_timings_ms({}) == {}
    assert timing_fields({"validate": 0.2931069, "inference": 12.0}) == {
        "timings_ms": "validate=0.293 inference=12.000"}


def test_the_type_checker_refuses_to_change_a_record(tmp_path) -> None:
    """Frozen to mypy, though not at run time: an assignment to any per-event record is a type error, and so is a
    record built without a field that has no default (`matrix` is declared with `field()`)."""
    checked = tmp_path / "uses_records.py"
    checked.write_text(textwrap.dedent('''
        from worker.delivery import DecidedEvent
        from worker.pipeline import StreamEntry
        from worker.positions import Position, ClosedPosition
        from worker.accuracy import PendingCall
        from worker.records import AgentVote, Decision, ExecutionCommand, SynergyEvent, SynergyType

        def change(event: SynergyEvent, vote: AgentVote, decision: Decision, command: ExecutionCommand,
                   entry: StreamEntry, decided: DecidedEvent, call: PendingCall, position: Position,
                   closed: ClosedPosition) -> None:
            event.price = 1.0  # line 10
            vote.confidence = 0.5
            decision.execute = True
            command.quantity = 2
            entry.delivery_count = 3
            decided.command_fields = None
            call.price = 1.0
            position.quantity = 3
            closed.pnl = 0.0  # line 18

        SynergyEvent("id", SynergyType.TYPE_1, 1, 0.5, "ES", "2024-03-01T14:30:00Z", 1.0, 1.0)  # line 20: no matrix
    ''').lstrip())
    # The project's modules are read; the third-party ones behind them are not (torch's alone would take ~30 s).
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nfollow_imports = silent\n"
                      "[mypy-torch.*,numpy.*,scipy.*,redis.*,hiredis.*,prometheus_client.*,models.*]\n"
                      "follow_imports = skip\n")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(tmp_path / "cache"),
         str(checked)],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=240,
    )
    flagged = {int(line.split(":")[1]) for line in result.stdout.splitlines() if ": error:" in line}
    assert flagged == {*range(10, 19), 20}, result.stdout


# Few distinct values, so that ties (first of equal maxima wins) and NaNs (a NaN counts as the maximum) come often.
_PROBABILITY = st.sampled_from([0.0, 0.2, 0.5, 0.7, 1.0, float("nan"), float("inf")])


@given(st.tuples(_PROBABILITY, _PROBABILITY, _PROBABILITY))
def test_a_votes_action_is_numpys_argmax_of_its_probabilities(probabilities: tuple[float, float, float]) -> None:
    vote = AgentVote("fvg", probabilities, 0.5)

    assert vote.action is Action.from_index(int(np.argmax(probabilities)))
