"""tactical.Dockerfile: lint-clean, CPU-only torch, non-root, models compiled at build, signals reach the worker."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.deploy_contract import REPO_ROOT, require_tool

DOCKERFILE = REPO_ROOT / "tactical.Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped; `stage` counts FROMs from 0."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, " ".join(args.split()), stage))
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected exactly one {keyword}, found {len(found)}"
    return found[0]


def test_hadolint_passes() -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_stage_is_slim_python_311(instructions: list[Instruction]) -> None:
    build_args = dict(
        i.args.split("=", 1) for i in instructions if i.keyword == "ARG" and i.stage == -1 and "=" in i.args
    )
    bases = [i.args.split()[0] for i in instructions if i.keyword == "FROM"]
    assert bases
    for base in bases:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: build_args[m.group(1)], base)
        assert resolved.startswith("python:3.11-slim"), resolved


def test_torch_is_the_pinned_cpu_build_from_the_cpu_index(instructions: list[Instruction]) -> None:
    torch_installs = [i.args for i in instructions if i.keyword == "RUN" and "torch==" in i.args]
    assert len(torch_installs) == 1
    assert f"--index-url {CPU_INDEX}" in torch_installs[0]
    assert "torch==2.13.0" in torch_installs[0].split()
    text = DOCKERFILE.read_text()
    assert not re.search(r"whl/cu\d+|nvidia|cuda-", text), "no CUDA wheels or images in a CPU-only image"


def test_runs_as_a_non_root_user(instructions: list[Instruction]) -> None:
    users = [i.args for i in final_stage(instructions) if i.keyword == "USER"]
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_entrypoint_is_exec_form_so_sigterm_reaches_the_worker(instructions: list[Instruction]) -> None:
    runtime = final_stage(instructions)
    entrypoint = json.loads(only(runtime, "ENTRYPOINT").args)
    assert isinstance(entrypoint, list)
    assert entrypoint[-1] == "tactical-worker"
    assert entrypoint[0] in {"tini", "tactical-worker"}
    assert only(runtime, "STOPSIGNAL").args == "SIGTERM"
    assert not any(i.keyword == "CMD" for i in runtime), "a CMD would be appended to the worker's arguments"


def test_models_are_verified_and_compiled_at_build_time_not_retrained(instructions: list[Instruction]) -> None:
    runs = [i.args for i in instructions if i.keyword == "RUN"]
    compile_cmd = (
        "python -m models.compile --verify models/tactical --log /tmp/jit_compilation.log --out /app/models/jit"
    )
    assert any(compile_cmd in run for run in runs)
    assert "models.pretrain" not in DOCKERFILE.read_text()
    runtime = final_stage(instructions)
    copied_from_build = [i.args for i in runtime if i.keyword == "COPY" and "--from=" in i.args]
    assert any(args.endswith("/app/models/jit /app/models/jit") for args in copied_from_build)
    assert any(args.endswith("/tmp/jit_compilation.log /tmp/jit_compilation.log") for args in copied_from_build)
    env = " ".join(i.args for i in runtime if i.keyword == "ENV")
    assert "TACTICAL_MODELS_DIR=/app/models/jit" in env
    assert "TACTICAL_HTTP_ADDR=0.0.0.0:8001" in env
    assert "TACTICAL_WORKER_URL=http://127.0.0.1:8001" in env, "where the HEALTHCHECK's tacticalctl looks"


@pytest.mark.parametrize(("health_exit", "docker_status"), [(0, 0), (1, 0), (2, 1), (3, 1)])
def test_healthcheck_maps_tacticalctl_health_exit_codes_to_docker_health(
    instructions: list[Instruction], tmp_path: Path, health_exit: int, docker_status: int
) -> None:
    """ok and warning (degraded, still serving) are healthy; critical, unreachable and unknown are not."""
    healthcheck = only(final_stage(instructions), "HEALTHCHECK").args
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert "tacticalctl health" in " ".join(command)
    fake = tmp_path / "tacticalctl"
    fake.write_text(f'#!/bin/sh\n[ "$1" = health ] || exit 99\nexit {health_exit}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(command, env=env, capture_output=True, timeout=30)
    assert result.returncode == docker_status


def dockerignore_excludes(relative: str, patterns: list[str]) -> bool:
    """Docker's rule, closely enough: the last matching pattern wins; a match on a parent directory counts."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        variants = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(c, v) for c in candidates for v in variants):
            excluded = not negated
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_build_context_has_every_copied_source_and_no_secrets(instructions: list[Instruction]) -> None:
    patterns = dockerignore_patterns()
    context_copies = [i.args.split() for i in instructions if i.keyword == "COPY" and "--from=" not in i.args]
    sources = [src for args in context_copies for src in args[:-1] if not src.startswith("--")]
    assert {"pyproject.toml", "worker/", "tacticalctl/", "models/"} <= set(sources)
    for source in sources:
        if any(ch in source for ch in "*?["):
            continue
        assert (REPO_ROOT / source).exists(), f"COPY {source}: missing from the build context"
        assert not dockerignore_excludes(source, patterns), f"COPY {source}: excluded by .dockerignore"
    assert not dockerignore_excludes("models/tactical", patterns)
    for secret in (".env", ".env.production", ".git/config"):
        assert dockerignore_excludes(secret, patterns), f"{secret} must not enter the build context"
    assert not dockerignore_excludes(".env.example", patterns)


def test_dockerignore_matching_follows_docker_semantics() -> None:
    patterns = ["**/__pycache__", ".env.*", "!.env.example", "tests"]
    assert dockerignore_excludes("worker/__pycache__/x.pyc", patterns)
    assert dockerignore_excludes("__pycache__", patterns)
    assert dockerignore_excludes("tests/unit/test_x.py", patterns)
    assert dockerignore_excludes(".env.local", patterns)
    assert not dockerignore_excludes(".env.example", patterns)
    assert not dockerignore_excludes("worker/service.py", patterns)
