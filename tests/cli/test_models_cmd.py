"""`tacticalctl models list | verify | compile | promote` on the shipped bundle and on copies of it."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import pytest
import redis

from models.bundle import (
    current_bundle_dir,
    list_bundles,
    read_current_version,
    read_manifest,
    sha256_file,
    write_manifest,
)
from models.bundle_history import decided_versions
from tests.bundles import break_agent
from tests.cli.conftest import Ctl
from worker.alerts import recent_alerts
from worker.settings import default_models_dir

SHIPPED = current_bundle_dir(default_models_dir())


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A models directory holding a copy of the shipped bundle, CURRENT pointing at it."""
    directory = tmp_path / "models"
    shutil.copytree(SHIPPED, directory / SHIPPED.name)
    (directory / "CURRENT").write_text(SHIPPED.name + "\n")
    return directory


def add_older_bundle(models_dir: Path) -> str:
    """Copy in the shipped bundle that CURRENT was trained from (older, and worse on held-out data)."""
    older = next(m for m in list_bundles(default_models_dir()) if m.version != SHIPPED.name)
    assert older.bundle_dir is not None and older.created_at < read_manifest(SHIPPED).created_at
    shutil.copytree(older.bundle_dir, models_dir / older.version)
    return older.version


def under_a_signed_current(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """CURRENT signed, an older verified bundle beside it unsigned, and no key in this process: the older's version."""
    from models.bundle import sign_bundle

    monkeypatch.delenv("TACTICAL_MODEL_SIGNING_KEY_FILE", raising=False)
    older = add_older_bundle(models_dir)
    sign_bundle(models_dir / SHIPPED.name, b"k" * 32)
    return older


def revert_finding(ctl: Ctl, models_dir: Path) -> dict:
    """What `triage model-compilation` says a revert could go to."""
    report = json.loads(ctl("triage", "model-compilation", "--models-dir", str(models_dir), "--json").stdout)
    [finding] = [f for f in report["alerts"][0]["findings"] if "revert" in f["summary"]]
    return finding


def promotion_entries(client: redis.Redis) -> list:
    """The audit trail's latest entries, less the compilations that made the bundles a test promotes."""
    return [a for a in recent_alerts(client, count=10) if a.kind != "model_compile"]


def tamper(bundle_dir: Path, file_name: str) -> None:
    path = bundle_dir / file_name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_list_marks_the_current_bundle(ctl: Ctl) -> None:
    result = ctl("models", "list")
    assert result.exit_code == 0
    assert SHIPPED.name in result.stdout and "CURRENT" in result.stdout and "successful" in result.stdout
    assert "held-out PnL" in result.stdout and "Sharpe" in result.stdout
    # At 80 columns the headline figures go under the table, whole, not squeezed into a column of no width.
    from typer.testing import CliRunner

    from tacticalctl.app import app

    narrow = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert narrow.exit_code == 0 and "metrics" not in narrow.stdout
    assert f"{SHIPPED.name}: held-out PnL " in narrow.stdout
    doc = json.loads(ctl("models", "list", "--json").stdout)
    assert set(doc) == {"models_dir", "current", "bundles", "unreadable"}
    assert doc["current"] == SHIPPED.name and doc["unreadable"] == []
    bundle = next(b for b in doc["bundles"] if b["version"] == SHIPPED.name)
    assert set(bundle) == {"version", "created_at", "current", "jit_successful", "jit_log_exists", "metrics",
                           "bundle_dir"}
    assert bundle["current"] and bundle["jit_successful"]


def test_the_shipped_bundle_verifies(ctl: Ctl) -> None:
    # A generous latency budget: this asserts integrity, loading and outputs; the budget has its own test.
    result = ctl("models", "verify", "--budget-ms", "1000", "--json")
    assert result.exit_code == 0, result.stdout
    doc = json.loads(result.stdout)
    assert set(doc) == {"version", "bundle_dir", "status", "steps"}
    assert doc["status"] == "ok"
    steps = {step["step"]: step for step in doc["steps"]}
    assert {"manifest", "sha256 fvg.pt", "sha256 momentum.pt", "sha256 entry.pt", "TorchScript load",
            "forward pass", "fused graph", "latency fvg", "latency momentum", "latency entry", "JIT log"} == set(steps)
    assert all(step["status"] == "ok" for step in doc["steps"])
    assert steps["latency fvg"]["details"]["p99_ms"] > 0
    fused = steps["fused graph"]["details"]
    assert fused["fused"] is True and 0 <= fused["difference"] <= 1e-5


def test_an_agent_over_its_latency_budget_is_a_warning(ctl: Ctl) -> None:
    result = ctl("models", "verify", "--budget-ms", "0", "--calls", "10")
    assert result.exit_code == 1
    assert "latency fvg" in result.stdout and "p99 ≤ 0 ms" in result.stdout


def test_a_tampered_file_is_named_exits_2_and_is_never_loaded(ctl: Ctl, models_dir: Path) -> None:
    tamper(models_dir / SHIPPED.name, "momentum.pt")
    result = ctl("models", "verify", "--models-dir", str(models_dir))
    assert result.exit_code == 2
    assert "momentum.pt" in result.stdout and "SHA-256 mismatch" in result.stdout
    doc = json.loads(ctl("models", "verify", "--models-dir", str(models_dir), "--json").stdout)
    steps = {step["step"]: step["status"] for step in doc["steps"]}
    assert steps["sha256 momentum.pt"] == "critical"
    assert steps["sha256 fvg.pt"] == "ok"
    assert "TorchScript load" not in steps and "forward pass" not in steps


def test_a_damaged_bundle_is_told_apart_as_current_or_not(ctl: Ctl, models_dir: Path) -> None:
    """CURRENT damaged: replace it with a verified one. Any other: just do not promote it."""
    older = add_older_bundle(models_dir)
    tamper(models_dir / older, "fvg.pt")
    steps = json.loads(ctl("models", "verify", older, "--models-dir", str(models_dir), "--json").stdout)["steps"]
    [fvg] = [step for step in steps if step["step"] == "sha256 fvg.pt"]
    assert "it is not CURRENT: do not promote it" in fvg["next_action"] and "rollback" not in fvg["next_action"]
    tamper(models_dir / SHIPPED.name, "fvg.pt")
    steps = json.loads(ctl("models", "verify", "--models-dir", str(models_dir), "--json").stdout)["steps"]
    [fvg] = [step for step in steps if step["step"] == "sha256 fvg.pt"]
    assert "it is CURRENT: make a verified version CURRENT" in fvg["next_action"]


def test_verify_refuses_a_compiled_bundle_changed_in_place(ctl: Ctl, models_dir: Path) -> None:
    """Files swapped and the manifest's hashes rewritten: every hash matches, but the version names other files."""
    older = add_older_bundle(models_dir)
    current = read_manifest(models_dir / SHIPPED.name)
    shutil.copyfile(models_dir / older / "fvg.pt", models_dir / SHIPPED.name / "fvg.pt")
    agents = tuple(dataclasses.replace(a, sha256=sha256_file(models_dir / older / "fvg.pt")) if a.name == "fvg" else a
                   for a in current.agents)
    write_manifest(models_dir / SHIPPED.name, dataclasses.replace(current, agents=agents))
    result = ctl("models", "verify", "--models-dir", str(models_dir), "--json")
    assert result.exit_code == 2
    steps = {step["step"]: step for step in json.loads(result.stdout)["steps"]}
    assert steps["sha256 fvg.pt"]["status"] == "ok"
    assert steps["version content"]["status"] == "critical"
    assert "compiled from other files" in steps["version content"]["value"]
    assert "TorchScript load" not in steps  # nothing of it is loaded


def test_an_unknown_version_is_one_line_on_stderr(ctl: Ctl, models_dir: Path) -> None:
    result = ctl("models", "verify", "no-such-version", "--models-dir", str(models_dir))
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1 and "no bundle 'no-such-version'" in result.stderr


def test_compile_writes_a_new_bundle_with_its_log_and_leaves_current(ctl: Ctl, models_dir: Path) -> None:
    result = ctl("models", "compile", SHIPPED.name, "--models-dir", str(models_dir), "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["source"] == SHIPPED.name and doc["version"] != SHIPPED.name and doc["jit_successful"]
    new_bundle = Path(doc["bundle_dir"])
    assert "JIT compilation successful" in (new_bundle / "jit_compilation.log").read_text()
    manifest = json.loads((new_bundle / "manifest.json").read_text())
    assert manifest["training"]["recompiled_from"] == SHIPPED.name
    assert manifest["agents"]["fvg"]["parameters"] > 0
    source = json.loads((models_dir / SHIPPED.name / "manifest.json").read_text())
    log = (new_bundle / "jit_compilation.log").read_text()
    assert f"({source['agents']['fvg']['parameters']} parameters)" in log, "the log counts what the manifest counts"
    assert read_current_version(models_dir) == SHIPPED.name
    verified = ctl("models", "verify", doc["version"], "--models-dir", str(models_dir), "--budget-ms", "1000")
    assert verified.exit_code == 0
    # The audit trail says who made the bundle, from which, where.
    [entry] = [a for a in recent_alerts(redis.Redis.from_url(ctl.redis_url), count=10) if a.kind == "model_compile"]
    assert entry.id == doc["audit_id"] and doc["audit_error"] is None
    assert (entry.fields["version"], entry.fields["compiled_from"]) == (doc["version"], SHIPPED.name)
    assert entry.fields["models_dir"] == str(models_dir.resolve())


def test_compile_without_redis_still_compiles_and_says_it_was_not_audited(ctl: Ctl, models_dir: Path) -> None:
    """A build machine may have no Redis: the bundle is made, with a warning, as `models sign` does."""
    result = ctl("models", "compile", SHIPPED.name, "--models-dir", str(models_dir), "--json",
                 redis_url="redis://127.0.0.1:1/2")
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["audit_id"] is None and "127.0.0.1:1" in doc["audit_error"]
    assert (models_dir / doc["version"] / "manifest.json").is_file()
    assert result.stderr.startswith("tacticalctl: warning: compiled, but not audited in tactical_alerts: ")


def test_compile_refuses_a_tampered_source(ctl: Ctl, models_dir: Path) -> None:
    tamper(models_dir / SHIPPED.name, "fvg.pt")
    result = ctl("models", "compile", "--models-dir", str(models_dir))
    assert result.exit_code == 2
    assert "fvg.pt" in result.stderr and "SHA-256 mismatch" in result.stderr


def test_promote_is_a_dry_run_without_yes_refuses_a_bundle_that_does_not_beat_current_and_forces_with_audit(
    ctl: Ctl, models_dir: Path, redis_client: redis.Redis
) -> None:
    # The supervised bundle the shipped MAPPO one was trained from: it loses to it on held-out data.
    older = add_older_bundle(models_dir)

    dry = ctl("models", "promote", older, "--models-dir", str(models_dir))
    assert dry.exit_code == 1, "a dry run that would refuse says so in its exit code"
    assert f"would refuse {older}: it does not beat CURRENT" in dry.stdout
    assert "--force promotes anyway, audited" in dry.stdout and "rollback" not in dry.stdout
    assert read_current_version(models_dir) == SHIPPED.name
    assert recent_alerts(redis_client, count=10) == []

    refused = ctl("models", "promote", older, "--models-dir", str(models_dir), "--yes", "--json")
    assert refused.exit_code == 2
    assert "promotion refused" in refused.stderr
    assert json.loads(refused.stdout)["verdict"]["beats"] is False
    assert read_current_version(models_dir) == SHIPPED.name
    [refusal] = recent_alerts(redis_client, count=10)
    assert (refusal.severity, refusal.kind) == ("AUDIT", "model_promote_refused")

    done = ctl("models", "promote", older, "--models-dir", str(models_dir), "--yes", "--force", "--json")
    assert done.exit_code == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert (doc["applied"], doc["previous"], doc["version"], doc["forced"]) == (True, SHIPPED.name, older, True)
    assert read_current_version(models_dir) == older
    entry = recent_alerts(redis_client, count=10)[-1]
    assert (entry.severity, entry.kind, entry.id) == ("AUDIT", "model_promote", doc["audit_id"])
    assert entry.fields["version"] == older and entry.fields["previous"] == SHIPPED.name
    assert entry.fields["forced"] == "true"
    assert entry.actor


def test_a_recompile_of_current_is_promoted_without_force(ctl: Ctl, models_dir: Path,
                                                          redis_client: redis.Redis) -> None:
    # The runbook's JIT fix: compile CURRENT again, promote the result. Same weights, same held-out figures.
    compiled = json.loads(ctl("models", "compile", "--models-dir", str(models_dir), "--json").stdout)["version"]
    assert ctl("models", "promote", compiled, "--models-dir", str(models_dir)).exit_code == 0
    done = ctl("models", "promote", compiled, "--models-dir", str(models_dir), "--yes", "--json")
    assert done.exit_code == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert (doc["applied"], doc["forced"], doc["verdict"]["beats"]) == (True, False, True)
    assert f"is CURRENT {SHIPPED.name} recompiled and decides no worse" in doc["verdict"]["reason"]
    assert read_current_version(models_dir) == compiled
    # Going back to the bundle it was compiled from is the same weights again: not refused by the gate (a refusal
    # would also rule the known-good bundle out of every later rollback).
    back = ctl("models", "promote", SHIPPED.name, "--models-dir", str(models_dir), "--yes", "--json")
    assert back.exit_code == 0, back.stdout + back.stderr
    doc = json.loads(back.stdout)
    assert (doc["applied"], doc["forced"], doc["verdict"]["beats"]) == (True, False, True)
    assert f"has CURRENT {compiled}'s weights (both compiled from {SHIPPED.name})" in doc["verdict"]["reason"]
    assert read_current_version(models_dir) == SHIPPED.name
    assert "model_promote_refused" not in {a.kind for a in recent_alerts(redis_client, count=20)}
    # A recompile of another bundle still has to beat CURRENT.
    older = add_older_bundle(models_dir)
    other = json.loads(ctl("models", "compile", older, "--models-dir", str(models_dir), "--json").stdout)["version"]
    assert ctl("models", "promote", other, "--models-dir", str(models_dir)).exit_code == 1


def test_rollback_reverts_to_an_earlier_bundle_without_comparing_and_audits_it(
    ctl: Ctl, models_dir: Path, redis_client: redis.Redis
) -> None:
    older = add_older_bundle(models_dir)
    dry = ctl("models", "rollback", older, "--models-dir", str(models_dir))
    assert dry.exit_code == 0 and "dry run: would set CURRENT" in dry.stdout
    assert read_current_version(models_dir) == SHIPPED.name and recent_alerts(redis_client, count=10) == []

    done = ctl("models", "rollback", older, "--models-dir", str(models_dir), "--yes", "--json")
    assert done.exit_code == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert (doc["applied"], doc["previous"], doc["version"]) == (True, SHIPPED.name, older)
    assert read_current_version(models_dir) == older
    [entry] = recent_alerts(redis_client, count=10)
    assert (entry.kind, entry.id, entry.fields["previous"], entry.fields["version"]) == (
        "model_rollback", doc["audit_id"], SHIPPED.name, older)

    # Without a version: CURRENT was reached by a rollback, not promoted, so the audit trail does not say which
    # bundle it replaced; it must not send CURRENT back to the bundle just rolled back from.
    again = ctl("models", "rollback", "--models-dir", str(models_dir), "--yes")
    assert again.exit_code == 3 and "name the version" in again.stderr
    assert read_current_version(models_dir) == older


def test_a_default_rollback_goes_to_the_bundle_current_replaced_and_never_back_again(
    ctl: Ctl, models_dir: Path
) -> None:
    compiled = json.loads(ctl("models", "compile", "--models-dir", str(models_dir), "--json").stdout)["version"]
    assert ctl("models", "promote", compiled, "--models-dir", str(models_dir), "--yes").exit_code == 0

    assert ctl("models", "rollback", "--models-dir", str(models_dir), "--yes").exit_code == 0
    assert read_current_version(models_dir) == SHIPPED.name
    # A second one: SHIPPED was never promoted here, so there is nothing further back; not a flip to `compiled`.
    assert ctl("models", "rollback", "--models-dir", str(models_dir), "--yes").exit_code == 3
    assert read_current_version(models_dir) == SHIPPED.name


def test_rollback_mends_a_current_that_cannot_be_read(ctl: Ctl, models_dir: Path, redis_client: redis.Redis) -> None:
    older = add_older_bundle(models_dir)
    (models_dir / "CURRENT").write_text("not a version!\n")

    default = ctl("models", "rollback", "--models-dir", str(models_dir), "--yes")
    assert default.exit_code == 2 and "not a bundle version name" in default.stderr
    assert "name the version" in default.stderr and "Traceback" not in default.output

    done = ctl("models", "rollback", older, "--models-dir", str(models_dir), "--yes", "--json")
    assert done.exit_code == 0, done.output
    assert "not a bundle version name" in done.stderr and "the rollback replaces it" in done.stderr
    assert json.loads(done.stdout)["previous"] is None
    assert read_current_version(models_dir) == older
    [entry] = recent_alerts(redis_client, count=10)
    assert entry.kind == "model_rollback" and "unreadable" in entry.message


def test_promote_replaces_a_current_that_cannot_be_read(ctl: Ctl, models_dir: Path) -> None:
    compiled = json.loads(ctl("models", "compile", "--models-dir", str(models_dir), "--json").stdout)["version"]
    (models_dir / "CURRENT").write_bytes(b"\xff\xfe")
    result = ctl("models", "promote", compiled, "--models-dir", str(models_dir), "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert "CURRENT cannot be read, nothing to beat" in json.loads(result.stdout)["verdict"]["reason"]
    assert read_current_version(models_dir) == compiled


def test_promoting_the_bundle_already_current_changes_and_audits_nothing(
    ctl: Ctl, models_dir: Path, redis_client: redis.Redis
) -> None:
    result = ctl("models", "promote", SHIPPED.name, "--models-dir", str(models_dir), "--yes")
    assert result.exit_code == 0, result.output
    assert f"{SHIPPED.name} is already CURRENT: nothing to promote" in result.stdout
    doc = json.loads(ctl("models", "promote", SHIPPED.name, "--models-dir", str(models_dir), "--yes", "--json").stdout)
    assert (doc["applied"], doc["audit_id"]) == (False, None)
    assert recent_alerts(redis_client, count=10) == []


def test_rollback_without_a_version_or_an_audit_trail_asks_for_one(ctl: Ctl, models_dir: Path) -> None:
    result = ctl("models", "rollback", "--models-dir", str(models_dir), "--yes")
    assert result.exit_code == 3
    assert "does not say which bundle CURRENT" in result.stderr and "name the version" in result.stderr
    assert read_current_version(models_dir) == SHIPPED.name


def test_rollback_refuses_a_bundle_that_fails_verification(ctl: Ctl, models_dir: Path,
                                                           redis_client: redis.Redis) -> None:
    older = add_older_bundle(models_dir)
    tamper(models_dir / older, "momentum.pt")
    result = ctl("models", "rollback", older, "--models-dir", str(models_dir), "--yes")
    assert result.exit_code == 2
    assert "rollback refused" in result.stderr and "momentum.pt" in result.stderr
    assert read_current_version(models_dir) == SHIPPED.name
    [refusal] = recent_alerts(redis_client, count=10)
    assert (refusal.kind, refusal.fields["version"]) == ("model_rollback_refused", older)


def test_a_bundle_that_fails_verification_is_not_promoted(
    ctl: Ctl, models_dir: Path, redis_client: redis.Redis
) -> None:
    compiled = json.loads(ctl("models", "compile", "--models-dir", str(models_dir), "--json").stdout)["version"]
    tamper(models_dir / compiled, "entry.pt")
    result = ctl("models", "promote", compiled, "--models-dir", str(models_dir), "--yes")
    assert result.exit_code == 2
    assert "promotion refused" in result.stderr and "entry.pt" in result.stderr
    assert read_current_version(models_dir) == SHIPPED.name
    # Audited like every refusal (the help and the README say so): who tried which bundle, and why it was refused.
    [refusal] = promotion_entries(redis_client)
    assert (refusal.severity, refusal.kind, refusal.fields["version"]) == ("AUDIT", "model_promote_refused", compiled)
    assert "sha256 entry.pt" in refusal.message


def test_sign_then_a_worker_with_the_key_accepts_it_and_refuses_an_unsigned_one(
    ctl: Ctl, models_dir: Path, tmp_path: Path, redis_url: str
) -> None:
    import os
    import subprocess
    import sys

    key = tmp_path / "signing.key"
    key.write_bytes(os.urandom(32).hex().encode())
    env = {**os.environ, "TACTICAL_MODEL_SIGNING_KEY_FILE": str(key), "TACTICAL_REDIS_URL": redis_url,
           "TACTICAL_MODELS_DIR": str(models_dir), "TACTICAL_HTTP_ADDR": "127.0.0.1:0"}
    unsigned = subprocess.run([sys.executable, "-m", "worker.cli"], env=env, capture_output=True, text=True,
                              timeout=60)
    assert unsigned.returncode == 3
    assert "refusing an unsigned bundle" in unsigned.stderr

    signed = ctl("models", "sign", "--key-file", str(key), "--models-dir", str(models_dir), "--json")
    assert signed.exit_code == 0, signed.stderr
    doc = json.loads(signed.stdout)
    assert doc["version"] == SHIPPED.name
    assert (models_dir / SHIPPED.name / "manifest.sig").is_file()
    [entry] = [a for a in recent_alerts(redis.Redis.from_url(redis_url), count=10) if a.kind == "model_sign"]
    assert (entry.id, entry.fields["version"]) == (doc["audit_id"], SHIPPED.name)
    assert ctl("models", "verify", "--models-dir", str(models_dir), "--budget-ms", "1000").exit_code == 0


def test_a_bundle_the_fusion_does_not_know_verifies_with_a_warning_that_it_is_served_one_by_one(
    ctl: Ctl, tmp_path: Path
) -> None:
    from models.architectures import FVGAgent, build_agents
    from models.compile import compile_bundle

    agents = build_agents(seed=4)
    agents["momentum"] = FVGAgent()  # an MLP where models.fusion expects the convolutional agent
    bundle = compile_bundle(agents, tmp_path / "models", training={"kind": "test"}, metrics={})
    (tmp_path / "models" / "CURRENT").write_text(bundle.name + "\n")

    result = ctl("models", "verify", "--models-dir", str(tmp_path / "models"), "--budget-ms", "1000", "--json")
    assert result.exit_code == 1, result.stdout
    steps = {step["step"]: step for step in json.loads(result.stdout)["steps"]}
    assert steps["fused graph"]["status"] == "warn" and steps["fused graph"]["details"]["fused"] is False
    assert "served one agent after another: agent 'momentum'" in steps["fused graph"]["value"]
    assert steps["forward pass"]["status"] == "ok"


def test_list_says_so_when_current_names_a_bundle_that_is_not_there(ctl: Ctl, models_dir: Path) -> None:
    # The runbook's model-staleness step 1 asks exactly this of `models list`.
    (models_dir / "CURRENT").write_text("20990101T000000Z-deadbeef\n")
    result = ctl("models", "list", "--models-dir", str(models_dir))
    assert result.exit_code == 2
    assert "CURRENT names 20990101T000000Z-deadbeef, which is not a bundle" in result.stderr
    assert SHIPPED.name in result.stdout, "the bundles that are there are still listed"
    as_json = ctl("models", "list", "--models-dir", str(models_dir), "--json")
    assert as_json.exit_code == 2 and json.loads(as_json.stdout)["current"] == "20990101T000000Z-deadbeef"


def test_list_says_why_when_current_names_a_bundle_whose_manifest_is_unusable(ctl: Ctl, models_dir: Path) -> None:
    manifest = models_dir / SHIPPED.name / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["created_at"] = doc["created_at"].rstrip("Z")  # no time zone
    manifest.write_text(json.dumps(doc))
    result = ctl("models", "list", "--models-dir", str(models_dir))
    assert result.exit_code == 2
    assert f"CURRENT names {SHIPPED.name}, whose manifest is unusable" in result.stderr
    assert "timezone" in result.stderr or "time zone" in result.stderr


def test_verify_of_a_bundle_whose_agent_raises_is_critical_and_says_which(ctl: Ctl, models_dir: Path) -> None:
    break_agent(models_dir / SHIPPED.name, "raises")
    result = ctl("models", "verify", "--models-dir", str(models_dir), "--json")
    assert result.exit_code == 2, result.stdout
    steps = {step["step"]: step for step in json.loads(result.stdout)["steps"]}
    assert steps["sha256 fvg.pt"]["status"] == "ok", "its hashes match: only running it shows the fault"
    assert steps["forward pass"]["status"] == "critical"
    assert "fvg: raised" in steps["forward pass"]["value"] and "agent exploded" in steps["forward pass"]["value"]
    assert "fused graph" not in steps and "latency fvg" not in steps


def test_verify_with_the_workers_signing_key_refuses_an_unsigned_bundle(ctl: Ctl, models_dir: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:
    key = tmp_path / "signing.key"
    key.write_bytes(b"k" * 32)
    monkeypatch.setenv("TACTICAL_MODEL_SIGNING_KEY_FILE", str(key))
    result = ctl("models", "verify", "--models-dir", str(models_dir), "--budget-ms", "1000", "--json")
    assert result.exit_code == 2, result.stdout
    steps = {step["step"]: step for step in json.loads(result.stdout)["steps"]}
    assert steps["signature"]["status"] == "critical" and "refusing an unsigned bundle" in steps["signature"]["value"]
    assert "TorchScript load" not in steps

    assert ctl("models", "sign", "--key-file", str(key), "--models-dir", str(models_dir)).exit_code == 0
    signed = ctl("models", "verify", "--models-dir", str(models_dir), "--budget-ms", "1000", "--json")
    assert signed.exit_code == 0, signed.stdout
    assert {step["step"]: step["status"] for step in json.loads(signed.stdout)["steps"]}["signature"] == "ok"


def test_verify_of_a_current_that_names_no_bundle_is_critical(ctl: Ctl, models_dir: Path) -> None:
    (models_dir / "CURRENT").write_text("20990101T000000Z-deadbeef\n")
    result = ctl("models", "verify", "--models-dir", str(models_dir))
    assert result.exit_code == 2  # as `models list` says it: no worker can load models
    assert "20990101T000000Z-deadbeef" in result.stderr and "workers cannot load it" in result.stderr
    (models_dir / "CURRENT").write_text("not a version!\n")
    assert ctl("models", "verify", "--models-dir", str(models_dir)).exit_code == 2
    assert ctl("models", "list", "--models-dir", str(models_dir)).exit_code == 2


def test_promote_rolls_back_from_a_tampered_current_without_force(
    ctl: Ctl, models_dir: Path, redis_client: redis.Redis
) -> None:
    # The runbook's revert for a broken CURRENT: the previous bundle cannot be compared with one that cannot load.
    compiled = json.loads(ctl("models", "compile", "--models-dir", str(models_dir), "--json").stdout)["version"]
    tamper(models_dir / SHIPPED.name, "fvg.pt")
    result = ctl("models", "promote", compiled, "--models-dir", str(models_dir), "--yes", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert (doc["applied"], doc["previous"], doc["forced"]) == (True, SHIPPED.name, False)
    assert f"CURRENT {SHIPPED.name} is unusable, nothing to beat" in doc["verdict"]["reason"]
    assert "SHA-256 mismatch" in doc["verdict"]["reason"]
    assert read_current_version(models_dir) == compiled
    entry = recent_alerts(redis_client, count=10)[-1]
    assert (entry.kind, entry.fields["previous"], entry.fields["forced"]) == ("model_promote", SHIPPED.name, "false")


def test_a_promotion_while_another_runs_is_refused_and_audited(
    ctl: Ctl, models_dir: Path, redis_client: redis.Redis
) -> None:
    from models.promotion import promotion_lock

    compiled = json.loads(ctl("models", "compile", "--models-dir", str(models_dir), "--json").stdout)["version"]
    with promotion_lock(models_dir):  # another operator's promotion, mid-comparison
        result = ctl("models", "promote", compiled, "--models-dir", str(models_dir), "--yes", "--force")
    assert result.exit_code == 2
    assert "another promotion of" in result.stderr and "is running" in result.stderr
    assert read_current_version(models_dir) == SHIPPED.name
    [failure] = promotion_entries(redis_client)
    # Nothing was judged: audited as a failure, which does not rule the bundle out (the daily update step still
    # lists it as waiting).
    assert (failure.kind, failure.fields["version"]) == ("model_promote_failed", compiled)
    assert compiled not in decided_versions(redis_client, models_dir)
    assert ctl("models", "promote", compiled, "--models-dir", str(models_dir), "--yes", "--force").exit_code == 0
    assert read_current_version(models_dir) == compiled


def test_a_promotion_that_cannot_take_its_lock_is_critical_and_audited(
    ctl: Ctl, models_dir: Path, redis_client: redis.Redis
) -> None:
    compiled = json.loads(ctl("models", "compile", "--models-dir", str(models_dir), "--json").stdout)["version"]
    (models_dir / ".promote.lock").mkdir()  # as unopenable as on a read-only models directory, even for root
    result = ctl("models", "promote", compiled, "--models-dir", str(models_dir), "--yes", "--force")
    assert result.exit_code == 2
    assert "cannot take the promotion lock" in result.stderr and "must be writable" in result.stderr
    assert read_current_version(models_dir) == SHIPPED.name
    [failure] = promotion_entries(redis_client)
    assert failure.kind == "model_promote_failed"


def test_a_models_dir_that_does_not_exist_is_a_usage_error(ctl: Ctl, tmp_path: Path) -> None:
    result = ctl("models", "verify", "--models-dir", str(tmp_path / "typo"))
    assert result.exit_code == 3  # not CRITICAL: the workers' models are elsewhere
    assert "is not a directory" in result.stderr


def test_the_daily_model_update_step_lists_only_bundles_still_waiting(
    ctl: Ctl, models_dir: Path, redis_client: redis.Redis, redis_url: str
) -> None:
    from models.bundle_history import REFUSED_ACTION
    from worker.alerts import audit
    from worker.ops.checks import waiting_bundles
    from worker.ops.sources import Sources

    current = read_manifest(models_dir / SHIPPED.name)
    older = add_older_bundle(models_dir)
    newer = []
    for source in (SHIPPED.name, older):  # recompiles: newer than CURRENT
        done = ctl("models", "compile", source, "--models-dir", str(models_dir), "--json")
        assert done.exit_code == 0, done.stderr
        newer.append(json.loads(done.stdout)["version"])
    time.sleep(1.1)  # a version names its second: the same weights compiled within it are the same bundle
    newer.append(json.loads(ctl("models", "compile", "--models-dir", str(models_dir), "--json").stdout)["version"])

    def waiting() -> list[str]:
        return [m.version for m in waiting_bundles(Sources(redis_url, "http://127.0.0.1:1", models_dir), current)]

    assert sorted(waiting()) == sorted(newer)
    tamper(models_dir / newer[0], "fvg.pt")  # fails its hashes: nothing to promote
    audit(redis_client, actor="ops", action=REFUSED_ACTION, detail="refused", version=newer[1])  # ruled out
    assert waiting() == [newer[2]]
    # Without Redis the audit trail cannot be read: the refused bundle is listed rather than the step failing.
    assert sorted(m.version for m in waiting_bundles(Sources("redis://127.0.0.1:1/2", "http://127.0.0.1:1",
                                                              models_dir), current)) == sorted(newer[1:])


def test_a_signed_current_means_only_signed_bundles_are_offered_even_without_the_key(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers have a key when CURRENT is signed: a revert candidate or an update without a signature would be
    refused by them, so tacticalctl (which may not hold the key) does not offer one."""
    from models.bundle import sign_bundle
    from worker.ops.checks import servable_bundles

    monkeypatch.delenv("TACTICAL_MODEL_SIGNING_KEY_FILE", raising=False)
    older = add_older_bundle(models_dir)
    assert {m.version for m in servable_bundles(models_dir)} == {SHIPPED.name, older}
    key = b"k" * 32
    sign_bundle(models_dir / SHIPPED.name, key)
    assert [m.version for m in servable_bundles(models_dir)] == [SHIPPED.name]
    sign_bundle(models_dir / older, key)
    assert {m.version for m in servable_bundles(models_dir)} == {SHIPPED.name, older}


def test_triage_under_a_signed_current_names_the_unsigned_bundles_to_sign(
    ctl: Ctl, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    older = under_a_signed_current(models_dir, monkeypatch)
    finding = revert_finding(ctl, models_dir)
    assert finding["status"] == "warn"
    assert "no other signed bundle" in finding["summary"] and f"models sign {older}" in finding["summary"]


def test_triage_does_not_ask_to_sign_a_bundle_an_operator_ruled_out(
    ctl: Ctl, models_dir: Path, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.bundle_history import REFUSED_ACTION
    from worker.alerts import audit

    older = under_a_signed_current(models_dir, monkeypatch)
    audit(redis_client, actor="ops", action=REFUSED_ACTION, detail="refused", version=older,
          models_dir=str(models_dir))
    finding = revert_finding(ctl, models_dir)
    assert "no other verified bundle" in finding["summary"] and "models sign" not in finding["summary"], finding


def test_a_verified_bundle_an_operator_ruled_out_is_named_not_hidden(
    ctl: Ctl, models_dir: Path, redis_client: redis.Redis
) -> None:
    # "No other verified bundle" sent the operator to the ML team while one verified: it had been rolled back from.
    from models.bundle_history import REFUSED_ACTION
    from worker.alerts import audit

    older = add_older_bundle(models_dir)
    audit(redis_client, actor="ops", action=REFUSED_ACTION, detail="refused", version=older,
          models_dir=str(models_dir))
    finding = revert_finding(ctl, models_dir)
    assert finding["status"] == "warn" and "no other verified bundle" not in finding["summary"], finding
    assert f"{older} verify, but were rolled back from or refused" in finding["summary"], finding
    assert f"models rollback {older} --yes" in finding["summary"] and finding["evidence"]["ruled_out"] == [older]


def test_a_revert_candidate_whose_signature_cannot_be_checked_here_says_so(
    ctl: Ctl, models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Signed with another key: without the key tacticalctl cannot tell, and the workers would refuse it.
    from models.bundle import sign_bundle

    older = under_a_signed_current(models_dir, monkeypatch)
    sign_bundle(models_dir / older, b"w" * 32)
    unchecked = revert_finding(ctl, models_dir)
    assert unchecked["summary"].startswith(f"revert candidate: {older}"), unchecked
    assert "signature is not checked here" in unchecked["summary"], unchecked
    assert f"tacticalctl models verify {older}" in unchecked["summary"]
    key_file = tmp_path / "signing.key"
    key_file.write_bytes(b"k" * 32)
    monkeypatch.setenv("TACTICAL_MODEL_SIGNING_KEY_FILE", str(key_file))
    checked = revert_finding(ctl, models_dir)
    assert checked["status"] == "warn" and "no other verified bundle" in checked["summary"], checked


def test_triage_does_not_ask_to_sign_a_bundle_whose_jit_compilation_failed(
    ctl: Ctl, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signing it would not make it servable: the workers would still refuse its failed JIT log."""
    from models.bundle import JIT_LOG_FILE

    older = under_a_signed_current(models_dir, monkeypatch)
    (models_dir / older / JIT_LOG_FILE).write_text("JIT compilation FAILED: on purpose\n", encoding="utf-8")
    finding = revert_finding(ctl, models_dir)
    assert finding["status"] == "warn"
    assert "no other verified bundle" in finding["summary"] and "models sign" not in finding["summary"]


def test_a_default_rollback_never_returns_to_a_bundle_rolled_back_from(tmp_path: Path,
                                                                       redis_client: redis.Redis) -> None:
    from models.bundle_history import PROMOTE_ACTION, ROLLBACK_ACTION, replaced_by_current
    from worker.alerts import audit

    (tmp_path / "CURRENT").write_text("20260101T000000Z-bbbbbbbb\n")
    a, b = "20250101T000000Z-aaaaaaaa", "20260101T000000Z-bbbbbbbb"
    audit(redis_client, actor="ops", action=PROMOTE_ACTION, detail="", previous=a, version=b)
    assert replaced_by_current(redis_client, tmp_path) == a
    audit(redis_client, actor="ops", action=PROMOTE_ACTION, detail="", previous=b, version=a)
    audit(redis_client, actor="ops", action=ROLLBACK_ACTION, detail="", previous=a, version=b)  # A was bad
    assert replaced_by_current(redis_client, tmp_path) is None


def test_a_current_that_cannot_be_written_fails_the_rollback_cleanly_and_rules_nothing_out(
    ctl: Ctl, models_dir: Path, redis_client: redis.Redis
) -> None:
    older = add_older_bundle(models_dir)
    (models_dir / "CURRENT").unlink()
    (models_dir / "CURRENT").mkdir()  # not a file: cannot be read, cannot be replaced
    result = ctl("models", "rollback", older, "--models-dir", str(models_dir), "--yes")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cannot write" in result.stderr and "CURRENT" in result.stderr
    assert [p.name for p in models_dir.iterdir() if p.name.endswith(".tmp")] == []
    [failure] = promotion_entries(redis_client)
    assert (failure.kind, failure.fields["version"]) == ("model_rollback_failed", older)
    assert older not in decided_versions(redis_client, models_dir)


def test_a_promotion_whose_held_out_data_cannot_be_evaluated_fails_cleanly(
    ctl: Ctl, models_dir: Path, redis_client: redis.Redis
) -> None:
    compiled = json.loads(ctl("models", "compile", "--models-dir", str(models_dir), "--json").stdout)["version"]
    manifest_path = models_dir / compiled / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["metrics"]["evaluation"]["held_out"] = {"seeds": [1]}  # recorded incompletely
    manifest_path.write_text(json.dumps(manifest))

    dry = ctl("models", "promote", compiled, "--models-dir", str(models_dir))
    assert dry.exit_code == 2 and "is incomplete" in dry.stderr and "Traceback" not in dry.output
    done = ctl("models", "promote", compiled, "--models-dir", str(models_dir), "--yes")
    assert done.exit_code == 2 and "promotion failed" in done.stderr and "is incomplete" in done.stderr
    [failure] = promotion_entries(redis_client)
    assert (failure.kind, failure.fields["version"]) == ("model_promote_failed", compiled)
    assert read_current_version(models_dir) == SHIPPED.name


def test_a_default_rollback_reads_the_history_of_its_own_models_directory(
    ctl: Ctl, tmp_path: Path, redis_client: redis.Redis
) -> None:
    """Hosts share one Redis: a promotion of another directory (another host's copy) to the same version must not
    send this one back to what that directory ran."""
    here, there = tmp_path / "here", tmp_path / "there"
    for directory in (here, there):
        shutil.copytree(SHIPPED, directory / SHIPPED.name)
        (directory / "CURRENT").write_text(SHIPPED.name + "\n")
        older = add_older_bundle(directory)
    compiled = json.loads(ctl("models", "compile", "--models-dir", str(here), "--json").stdout)["version"]
    shutil.copytree(here / compiled, there / compiled)
    (there / "CURRENT").write_text(older + "\n")  # that host ran the older bundle
    assert ctl("models", "promote", compiled, "--models-dir", str(here), "--yes").exit_code == 0
    assert ctl("models", "promote", compiled, "--models-dir", str(there), "--yes", "--force").exit_code == 0
    [newest, *_] = recent_alerts(redis_client, count=10)[::-1]
    assert newest.fields["models_dir"] == str(there.resolve()) and newest.fields["host"]

    assert ctl("models", "rollback", "--models-dir", str(here), "--yes").exit_code == 0
    assert read_current_version(here) == SHIPPED.name, "its own predecessor, not the other directory's"
    assert ctl("models", "rollback", "--models-dir", str(there), "--yes").exit_code == 0
    assert read_current_version(there) == older


def test_a_rollback_to_an_unsigned_bundle_under_a_signed_current_is_refused(
    ctl: Ctl, models_dir: Path, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers holding the key would refuse it and keep CURRENT: the rollback would change nothing live."""
    from models.bundle import sign_bundle

    older = under_a_signed_current(models_dir, monkeypatch)
    dry = ctl("models", "rollback", older, "--models-dir", str(models_dir))
    assert dry.exit_code == 2 and "unsigned, but CURRENT" in dry.stdout + dry.stderr
    done = ctl("models", "rollback", older, "--models-dir", str(models_dir), "--yes")
    assert done.exit_code == 2 and f"tacticalctl models sign {older}" in done.stderr
    assert read_current_version(models_dir) == SHIPPED.name
    assert recent_alerts(redis_client, count=1)[0].kind == "model_rollback_refused"
    sign_bundle(models_dir / older, b"k" * 32)
    assert ctl("models", "rollback", older, "--models-dir", str(models_dir), "--yes").exit_code == 0


def test_list_without_a_current_file_marks_nothing_and_warns(ctl: Ctl, models_dir: Path, tmp_path: Path) -> None:
    (models_dir / "CURRENT").unlink()
    result = ctl("models", "list", "--models-dir", str(models_dir), "--json")
    assert result.exit_code == 1 and "no CURRENT file" in result.stderr
    doc = json.loads(result.stdout)
    assert doc["current"] is None and not any(b["current"] for b in doc["bundles"])
    missing = ctl("models", "list", "--models-dir", str(tmp_path / "typo"))
    assert missing.exit_code == 3 and "is not a directory" in missing.stderr


def test_list_of_several_bundles_without_a_current_file_is_critical(ctl: Ctl, models_dir: Path) -> None:
    # A worker starting here refuses to guess which bundle trades (exit 3): workers cannot load what is here.
    add_older_bundle(models_dir)
    (models_dir / "CURRENT").unlink()
    result = ctl("models", "list", "--models-dir", str(models_dir))
    assert result.exit_code == 2
    assert "no CURRENT file" in result.stderr and "refuses to (2 bundles" in result.stderr
    # `verify` with no version verifies the newest then, and says that is what it did — critical, as a worker
    # restarted here would not come back (the runbook: do not restart while `models verify` is critical).
    verified = ctl("models", "verify", "--models-dir", str(models_dir), "--json")
    assert verified.exit_code == 2, verified.output
    first = json.loads(verified.stdout)["steps"][0]
    assert (first["step"], first["status"]) == ("CURRENT", "critical")
    assert "verified the newest bundle" in first["value"] and "refuses to" in first["next_action"]


def test_list_of_a_current_that_does_not_verify_or_of_no_bundle_is_critical(ctl: Ctl, models_dir: Path,
                                                                             tmp_path: Path) -> None:
    fvg = models_dir / SHIPPED.name / "fvg.pt"
    data = bytearray(fvg.read_bytes())
    data[100] ^= 0x01
    fvg.write_bytes(bytes(data))
    result = ctl("models", "list", "--models-dir", str(models_dir), "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["current"] == SHIPPED.name  # the listing, then why it fails
    assert f"CURRENT {SHIPPED.name} does not verify" in result.stderr and "fvg.pt" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = ctl("models", "list", "--models-dir", str(empty))
    assert nothing.exit_code == 2 and "no model bundle in" in nothing.stderr


# How a bundle's manifest.json stops reading (a bad copy, a hand edit, a partial sync), and what the listing says.
BROKEN_MANIFESTS = {
    "bad JSON": (lambda text: text[: len(text) // 2], "cannot read JSON"),
    "a missing field": (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "agents"}),
                        "required field 'agents' is missing"),
    "the wrong shape": (lambda text: json.dumps([json.loads(text)]), "expected a JSON object"),
}


def break_manifest(bundle_dir: Path, breakage: str = "bad JSON") -> str:
    """Damage the bundle's manifest.json as BROKEN_MANIFESTS[breakage] does: what `models list` says of it."""
    damage, complaint = BROKEN_MANIFESTS[breakage]
    manifest = bundle_dir / "manifest.json"
    manifest.write_text(damage(manifest.read_text()))
    return complaint


@pytest.mark.parametrize("breakage", list(BROKEN_MANIFESTS))
def test_list_shows_a_bundle_whose_manifest_cannot_be_read_says_why_and_warns(ctl: Ctl, models_dir: Path,
                                                                             breakage: str) -> None:
    # The older bundle is the one an operator would roll back to: it must not vanish from the listing.
    older = add_older_bundle(models_dir)
    complaint = break_manifest(models_dir / older, breakage)
    result = ctl("models", "list", "--models-dir", str(models_dir))
    assert result.exit_code == 1, result.output
    [row] = [line for line in result.stdout.splitlines() if older in line]
    assert "unreadable" in row and complaint in row, result.stdout
    assert SHIPPED.name in result.stdout and "CURRENT" in result.stdout, "the readable bundles are listed as before"
    assert f"{models_dir / older}" in result.stderr and complaint in result.stderr
    assert "fix" in result.stderr and "remove the directory" in result.stderr
    assert f"tacticalctl models verify {older}" in result.stderr

    as_json = ctl("models", "list", "--models-dir", str(models_dir), "--json")
    assert as_json.exit_code == 1
    doc = json.loads(as_json.stdout)
    assert [b["version"] for b in doc["bundles"]] == [SHIPPED.name], "bundles holds readable bundles only, as before"
    [unreadable] = doc["unreadable"]
    assert unreadable["name"] == older and unreadable["bundle_dir"] == str(models_dir / older)
    assert complaint in unreadable["error"] and str(models_dir / older) in unreadable["error"]


def test_an_unreadable_bundle_is_said_under_a_narrow_table_and_its_name_is_not_taken_for_markup(
    models_dir: Path
) -> None:
    from typer.testing import CliRunner

    from tacticalctl.app import app

    copy = models_dir / "backup[old]"  # an operator's copy, named as people name copies
    shutil.copytree(models_dir / SHIPPED.name, copy)  # its manifest names another version: it does not read
    narrow = CliRunner().invoke(app, ["models", "list", "--models-dir", str(models_dir)],
                                env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert narrow.exit_code == 1, narrow.output
    assert "backup[old]: unreadable" in narrow.stdout and "but the bundle's directory is 'backup[old]'" in (
        " ".join(narrow.stdout.split()))


def test_an_unreadable_bundle_leaves_the_other_exit_codes_as_they_were(ctl: Ctl, models_dir: Path) -> None:
    broken = models_dir / "20200101T000000Z-00000000"
    shutil.copytree(models_dir / SHIPPED.name, broken)  # its manifest names another version: it does not read
    (models_dir / "CURRENT").write_text("20990101T000000Z-deadbeef\n")
    missing = ctl("models", "list", "--models-dir", str(models_dir), "--json")
    assert missing.exit_code == 2 and "CURRENT names 20990101T000000Z-deadbeef" in missing.stderr
    assert broken.name in missing.stderr, "the unreadable bundle is still named"
    assert [u["name"] for u in json.loads(missing.stdout)["unreadable"]] == [broken.name]
    # One bundle and no CURRENT: a warning, and both are said.
    (models_dir / "CURRENT").unlink()
    one = ctl("models", "list", "--models-dir", str(models_dir))
    assert one.exit_code == 1 and "no CURRENT file" in one.stderr and broken.name in one.stderr
    # Several bundles and no CURRENT: critical, as before.
    add_older_bundle(models_dir)
    several = ctl("models", "list", "--models-dir", str(models_dir))
    assert several.exit_code == 2 and "refuses to (2 bundles" in several.stderr and broken.name in several.stderr


def test_a_current_whose_manifest_cannot_be_read_is_critical_and_marked(ctl: Ctl, models_dir: Path) -> None:
    complaint = break_manifest(models_dir / SHIPPED.name)
    result = ctl("models", "list", "--models-dir", str(models_dir))
    assert result.exit_code == 2
    assert f"CURRENT names {SHIPPED.name}, whose manifest is unusable" in result.stderr
    [row] = [line for line in result.stdout.splitlines() if SHIPPED.name in line]
    assert "CURRENT" in row and "unreadable" in row and complaint in row
    doc = json.loads(ctl("models", "list", "--models-dir", str(models_dir), "--json").stdout)
    assert doc["current"] == SHIPPED.name and doc["bundles"] == []
    assert [u["name"] for u in doc["unreadable"]] == [SHIPPED.name]


def test_the_triage_revert_candidate_is_what_rollback_goes_back_to_never_a_refused_bundle(
    ctl: Ctl, models_dir: Path, redis_client: redis.Redis
) -> None:
    older = add_older_bundle(models_dir)
    compiled = json.loads(ctl("models", "compile", "--models-dir", str(models_dir), "--json").stdout)["version"]
    assert ctl("models", "promote", compiled, "--models-dir", str(models_dir), "--yes").exit_code == 0
    time.sleep(1.1)  # bundle versions are named to the second
    worse = json.loads(ctl("models", "compile", older, "--models-dir", str(models_dir), "--json").stdout)["version"]
    refused = ctl("models", "promote", worse, "--models-dir", str(models_dir), "--yes")
    assert refused.exit_code == 2 and "promotion refused" in refused.stderr  # the newest bundle, ruled out

    report = json.loads(ctl("triage", "model-compilation", "--models-dir", str(models_dir), "--json").stdout)
    summaries = [f["summary"] for f in report["alerts"][0]["findings"]]
    assert any(s.startswith(f"revert candidate: {SHIPPED.name}, the bundle CURRENT replaced") for s in summaries)
    assert not any(worse in s for s in summaries)
    dry = ctl("models", "rollback", "--models-dir", str(models_dir))
    assert f"→ {SHIPPED.name}" in dry.stdout


def test_a_rollback_never_bypasses_the_promotion_gate(ctl: Ctl, models_dir: Path, redis_client: redis.Redis) -> None:
    older = add_older_bundle(models_dir)
    worse = json.loads(ctl("models", "compile", older, "--models-dir", str(models_dir), "--json").stdout)["version"]
    refused = ctl("models", "promote", worse, "--models-dir", str(models_dir), "--yes")
    assert refused.exit_code == 2 and "promotion refused" in refused.stderr

    dry = ctl("models", "rollback", worse, "--models-dir", str(models_dir))
    assert dry.exit_code == 2 and "refused by the promotion gate" in dry.stderr
    done = ctl("models", "rollback", worse, "--models-dir", str(models_dir), "--yes", "--json")
    assert done.exit_code == 2 and f"models promote {worse} --force --yes" in done.stderr
    assert json.loads(done.stdout)["applied"] is False and json.loads(done.stdout)["refused_by_gate"]
    assert read_current_version(models_dir) == SHIPPED.name
    assert recent_alerts(redis_client, count=1)[0].kind == "model_rollback_refused"
    # A bundle never judged (the older one) is a rollback's to take, as before.
    assert ctl("models", "rollback", older, "--models-dir", str(models_dir), "--yes").exit_code == 0


def test_a_rollback_dry_run_without_redis_says_the_gate_was_not_checked(ctl: Ctl, models_dir: Path) -> None:
    older = add_older_bundle(models_dir)
    dry = ctl("models", "rollback", older, "--models-dir", str(models_dir), redis_url="redis://127.0.0.1:1/2")
    assert dry.exit_code == 0, dry.output
    assert "would set CURRENT" in dry.stdout and "the audit trail could not be read" in dry.stdout


def test_a_bundle_whose_directory_name_cannot_be_a_version_fails_verification_before_any_evaluation(
    ctl: Ctl, models_dir: Path
) -> None:
    spaced = models_dir / "2026 spaced"
    shutil.copytree(models_dir / SHIPPED.name, spaced)
    manifest = json.loads((spaced / "manifest.json").read_text())
    manifest["version"] = spaced.name
    (spaced / "manifest.json").write_text(json.dumps(manifest))
    verify = ctl("models", "verify", spaced.name, "--models-dir", str(models_dir))
    assert verify.exit_code == 2 and "is not a bundle version name" in verify.stdout + verify.stderr
    promote = ctl("models", "promote", spaced.name, "--models-dir", str(models_dir), "--yes", "--force")
    assert promote.exit_code == 2 and "is not a bundle version name" in promote.stderr
    assert "failed verification" in promote.stderr  # refused by verification, before the held-out evaluation
    assert read_current_version(models_dir) == SHIPPED.name


def test_history_written_under_another_host_name_is_this_directorys_after_a_container_recreate(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    from models.bundle_history import PROMOTE_ACTION, REFUSED_ACTION, replaced_by_current
    from worker.alerts import audit

    a, b, c = "20250101T000000Z-aaaaaaaa", "20260101T000000Z-bbbbbbbb", "20260201T000000Z-cccccccc"
    (tmp_path / "CURRENT").write_text(b + "\n")
    place = {"models_dir": str(tmp_path.resolve()), "host": "3f2a9c1d0e7b"}  # the container before the recreate
    audit(redis_client, actor="ops", action=PROMOTE_ACTION, detail="", previous=a, version=b, **place)
    audit(redis_client, actor="ops", action=REFUSED_ACTION, detail="", previous=b, version=c, **place)
    assert replaced_by_current(redis_client, tmp_path) == a
    assert decided_versions(redis_client, tmp_path) == {c}
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    assert decided_versions(redis_client, elsewhere) == set()


def test_signing_where_there_is_no_redis_signs_and_says_it_was_not_audited(
    ctl: Ctl, models_dir: Path, tmp_path: Path
) -> None:
    from worker.embedded_redis import free_port

    key = tmp_path / "signing.key"
    key.write_text("k" * 32)
    result = ctl("models", "sign", "--key-file", str(key), "--models-dir", str(models_dir), "--json",
                 redis_url=f"redis://127.0.0.1:{free_port()}/2")  # a build machine: no Redis
    assert result.exit_code == 0, result.stderr
    assert (models_dir / SHIPPED.name / "manifest.sig").is_file()
    doc = json.loads(result.stdout)
    assert doc["audit_id"] is None and "unreachable" in doc["audit_error"]
    assert "signed, but not audited" in result.stderr


def test_a_key_file_that_cannot_be_read_is_named_as_given(ctl: Ctl, models_dir: Path, tmp_path: Path) -> None:
    result = ctl("models", "sign", "--key-file", str(tmp_path / "nokey"), "--models-dir", str(models_dir))
    assert result.exit_code == 2
    assert f"--key-file / TACTICAL_MODEL_SIGNING_KEY_FILE {tmp_path / 'nokey'}: cannot read the signing key" in \
        result.stderr
    assert not (models_dir / SHIPPED.name / "manifest.sig").exists()
