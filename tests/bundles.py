"""Bundles whose files verify by hash but whose agents cannot decide: what a broken model pipeline could ship."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch
from torch import nn

from models.bundle import CURRENT_FILE, bundle_version, read_manifest, sha256_bytes, write_manifest
from models.compile import serialize, torchscript_deprecation_silenced


class RaisingAgent(nn.Module):
    def forward(self, matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise RuntimeError("agent exploded")


class NanAgent(nn.Module):
    def forward(self, matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = matrices.shape[0]
        return torch.full((rows, 3), float("nan")), torch.ones(rows)


class TwoActionAgent(nn.Module):
    def forward(self, matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = matrices.shape[0]
        return torch.full((rows, 2), 0.5), torch.ones(rows)


BROKEN_AGENTS = {"raises": RaisingAgent, "nan": NanAgent, "two_actions": TwoActionAgent}


def with_broken_agent(source: Path, models_dir: Path, broken: str, agent: str = "fvg") -> Path:
    """A copy of bundle `source` in `models_dir` with one agent broken (`break_agent`)."""
    target = Path(models_dir) / source.name
    shutil.copytree(source, target)
    return break_agent(target, broken, agent)


def break_agent(bundle_dir: Path, broken: str, agent: str = "fvg") -> Path:
    """Replace `agent` of the bundle by a scripted BROKEN_AGENTS module, under the version its files now name (as
    `models compile` names one; CURRENT follows it if it named the bundle): the bundle passes every hash check.
    Returns its new directory."""
    manifest = read_manifest(bundle_dir)
    with torchscript_deprecation_silenced():
        data = serialize(torch.jit.script(BROKEN_AGENTS[broken]()))
    (bundle_dir / manifest.agent(agent).file).write_bytes(data)
    agents = tuple(dataclasses.replace(a, sha256=sha256_bytes(data)) if a.name == agent else a
                   for a in manifest.agents)
    version = bundle_version(manifest.created_at, [a.sha256 for a in agents])
    renamed = bundle_dir.rename(bundle_dir.with_name(version))
    write_manifest(renamed, dataclasses.replace(manifest, version=version, agents=agents, bundle_dir=renamed))
    current = renamed.parent / CURRENT_FILE
    if current.is_file() and current.read_text().strip() == bundle_dir.name:
        current.write_text(version + "\n")
    return renamed
