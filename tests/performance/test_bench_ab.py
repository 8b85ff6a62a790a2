"""`python -m bench.ab`: paired windows of two trees, compared pair by pair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.ab import METRICS, SourceTreeError, Window, check_runs_tree, compare, main, source_tree
from worker.process import WorkerProcess

REPO = Path(__file__).resolve().parents[2]


def window(p50_ms: float, throughput_eps: float) -> Window:
    return Window(p50_ms=p50_ms, p99_ms=p50_ms * 2, throughput_eps=throughput_eps, cpu_us_per_event=100.0,
                  redis_cpu_us_per_event=50.0)


def test_pairs_are_compared_one_by_one_and_better_means_lower_latency_or_higher_throughput() -> None:
    # A drifts from quiet to busy; B is a little faster in every pair.
    windows = {"a": [window(1.0, 900), window(2.0, 800), window(3.0, 700)],
               "b": [window(0.9, 950), window(1.9, 850), window(2.8, 720)]}
    rows = {row.metric: row for row in compare(windows)}

    assert set(rows) == set(METRICS)
    assert (rows["p50_ms"].a_median, rows["p50_ms"].b_median) == (2.0, 1.9)
    assert rows["p50_ms"].paired_difference_median == pytest.approx(-0.1)
    assert (rows["p50_ms"].b_better, rows["p50_ms"].pairs) == (3, 3)
    assert rows["throughput_eps"].paired_difference_median == pytest.approx(50)
    assert rows["throughput_eps"].b_better == 3, "more events/s is better"
    assert rows["cpu_us_per_event"].b_better == 0, "a tie is not better"


def test_a_tree_must_be_a_checkout_of_the_project(tmp_path: Path) -> None:
    assert source_tree(REPO) == REPO
    with pytest.raises(SourceTreeError, match="not a checkout of tactical-marl"):
        source_tree(tmp_path)


def linked_checkout(directory: Path) -> Path:
    """A tree of its own whose packages are links into this checkout: code at another path, same build."""
    directory.mkdir()
    for package in ("worker", "models", "bench"):
        (directory / package).symlink_to(REPO / package)
    return directory


def test_a_sides_worker_imports_its_code_from_its_tree_not_from_where_the_benchmark_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `python -m` puts the working directory ahead of PYTHONPATH: started from this checkout, a worker given only
    # PYTHONPATH=<tree> ran this checkout's code, and an A/B of two builds compared one with itself. The worker is
    # now started with -P (the working directory is not on its path at all), and a side's tree is its PYTHONPATH.
    tree = linked_checkout(tmp_path / "tree")
    monkeypatch.chdir(REPO)
    process = WorkerProcess(redis_url="redis://127.0.0.1:1/2", consumer="ab-side", log_path=tmp_path / "w.log",
                            source_tree=tree)
    assert process.code_dir() == tree
    check_runs_tree("b", process, tree)
    with pytest.raises(SourceTreeError, match=f"side a's worker runs the code in {tree}, not the tree {REPO}"):
        check_runs_tree("a", process, REPO)
    monkeypatch.setenv("PYTHONPATH", str(tree))
    installed = WorkerProcess(redis_url="redis://127.0.0.1:1/2", consumer="plain", log_path=tmp_path / "p.log")
    assert installed.code_dir() == tree, "with -P the working directory (this checkout) does not win over PYTHONPATH"


def test_a_short_real_run_compares_every_metric(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--a", str(REPO), "--b", str(REPO), "--rate", "200", "--window", "0.3", "--pairs", "2",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    assert report["load"] == 200.0 and report["trees"] == {"a": str(REPO), "b": str(REPO)}
    assert [row["metric"] for row in report["comparisons"]] == list(METRICS)
    for row in report["comparisons"]:
        assert row["pairs"] == 2 and 0 <= row["b_better"] <= 2
        assert row["a_median"] > 0 and row["b_median"] > 0
