"""Which commit a process says it runs: its checkout's, else what its image recorded, else none."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from worker.version import BUILD_COMMIT_ENV, checkout_commit, find_build_commit


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "checkout"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    git(repo, "add", "code.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "one")
    return repo


def test_a_checkout_names_its_commit_and_says_when_tracked_files_changed(repo: Path) -> None:
    head = git(repo, "rev-parse", "--short=12", "HEAD")
    assert len(head) == 12 and checkout_commit(repo) == head
    (repo / "notes.txt").write_text("untracked\n")  # not part of the code that runs
    assert checkout_commit(repo) == head
    (repo / "code.py").write_text("x = 2\n")
    assert checkout_commit(repo) == f"{head}-dirty"


def test_a_tag_does_not_replace_the_commit(repo: Path) -> None:
    git(repo, "tag", "v1")
    assert checkout_commit(repo) == git(repo, "rev-parse", "--short=12", "HEAD")


def test_code_inside_another_repositorys_tree_does_not_take_its_commit(repo: Path) -> None:
    installed = repo / "site-packages"
    installed.mkdir()
    assert checkout_commit(installed) is None
    assert find_build_commit(installed, {}) is None


def test_an_installed_copy_names_the_commit_its_image_recorded(tmp_path: Path, repo: Path) -> None:
    assert find_build_commit(tmp_path, {BUILD_COMMIT_ENV: "0123456789ab\n"}) == "0123456789ab"
    assert find_build_commit(tmp_path, {BUILD_COMMIT_ENV: ""}) is None
    # A checkout knows better than a variable left in the environment.
    assert find_build_commit(repo, {BUILD_COMMIT_ENV: "0123456789ab"}) == git(repo, "rev-parse", "--short=12", "HEAD")


def test_a_git_dir_in_the_environment_does_not_name_another_repositorys_commit(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    git(other, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "other")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))  # as a git hook, or a shell that exported it, would have
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    assert checkout_commit(repo) == git(repo, "--git-dir", str(repo / ".git"), "rev-parse", "--short=12", "HEAD")


def test_asking_leaves_the_checkouts_index_alone(repo: Path) -> None:
    # A plain `git status` refreshes a stale index (and takes index.lock to do it): an operator's git command in the
    # same checkout, at that moment, would fail on the lock.
    index = repo / ".git" / "index"
    before = index.stat().st_mtime_ns
    code = repo / "code.py"
    code.write_text(code.read_text())  # same content, newer time: the index's stat data is stale
    assert checkout_commit(repo) == git(repo, "rev-parse", "--short=12", "HEAD")
    assert index.stat().st_mtime_ns == before


def test_a_checkout_git_cannot_read_is_unknown_not_the_images_commit(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ".git").write_text("gitdir: /nonexistent\n")
    assert find_build_commit(broken, {BUILD_COMMIT_ENV: "0123456789ab"}) is None
