"""The hot path's records are values: equal and hashed by their fields, as frozen dataclasses are (they are frozen
to the type checker only; see `per_event_record`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from tests.unit.test_aggregator import CONFIG, make_event
from worker.aggregator import aggregate
from worker.positions import PositionBook
from worker.records import AgentVote, decision_fields


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
        agent_votes = [AgentVote(agent, tuple(float(p) for p in outputs[i]), float(outputs[i].max()))
                       for i, agent in enumerate(("fvg", "momentum", "entry"))]
        decision = aggregate(make_event(), agent_votes, CONFIG, "v1")
        fields = decision_fields(decision, b"1-1")
        for i, agent in enumerate(("fvg", "momentum", "entry")):
            written = np.array([float(text) for text in fields[f"vote_{agent}"].split(",")], dtype=np.float32)
            assert written.tolist() == outputs[i].tolist()
            assert np.float32(float(fields[f"confidence_{agent}"])) == outputs[i].max()
        assert tuple(float(fields[f"score_{action}"]) for action in ("short", "hold", "long")) == decision.scores
        assert float(fields["score"]) == decision.score


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
