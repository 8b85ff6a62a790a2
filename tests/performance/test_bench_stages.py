"""`python -m bench.stages --json`: a short real run reports every step at batch 1 and at a full batch, and the
forward pass of one event back to back and after a Redis round trip."""

from __future__ import annotations

import json

import pytest

from bench.stages import STEPS, main


def test_stages_report_every_step_per_event_and_the_parts_add_up(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--events", "20", "--batches", "10", "--batch-size", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    assert set(report) == {"batch_1", "batch_5", "forward_pass_batch_1"}
    forward_pass = report.pop("forward_pass_batch_1")
    assert set(forward_pass) == {"back_to_back", "after_round_trip"}
    assert all(microseconds > 0 for microseconds in forward_pass.values())
    for name, steps in report.items():
        assert set(steps) == set(STEPS), name
        assert all(steps[step] > 0 for step in STEPS if step != "claim"), f"{name}: every step took time"
        parts = sum(steps[step] for step in STEPS if step != "total")
        # Medians of parts need not sum to the median total, but they measure the same batches.
        assert 0.5 * steps["total"] < parts < 2 * steps["total"], f"{name}: {steps}"


def test_stages_refuse_too_few_samples() -> None:
    with pytest.raises(SystemExit):
        main(["--events", "1"])
