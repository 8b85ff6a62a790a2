from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch

from models.architectures import build_agents
from models.bundle import (
    CURRENT_FILE,
    MANIFEST_FILE,
    BundleNotFoundError,
    Manifest,
    ManifestError,
    ModelIntegrityError,
    UnusableBundleError,
    check_unchanged,
    current_bundle_dir,
    list_bundles,
    read_manifest,
    serving_bundle_dir,
    set_current,
    sha256_file,
    unreadable_bundles,
    verify_bundle,
    write_manifest,
)
from models.compile import CompilationError, compile_bundle, max_output_difference
from tests.bundles import break_agent, with_broken_agent
from worker.actions import ACTION_ORDER, AGENT_NAMES
from worker.inference import AgentEnsemble
from worker.settings import default_models_dir

torch.set_num_threads(1)

CREATED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def compiled_bundle(tmp_path_factory) -> Path:
    return compile_bundle(
        build_agents(seed=0),
        tmp_path_factory.mktemp("compiled"),
        training={"seed": 0, "data_sha256": "ab" * 32},
        metrics={"vote_directional_accuracy": 0.61},
        created_at=CREATED,
    )


@pytest.fixture
def models_dir(tmp_path, compiled_bundle) -> Path:
    """A models directory holding a copy of the compiled bundle, safe to tamper with."""
    shutil.copytree(compiled_bundle, tmp_path / compiled_bundle.name)
    return tmp_path


def add_version(models_dir: Path, source: Path, version: str, created_at: datetime) -> Path:
    """Another valid bundle: the same files under a new version name and creation time."""
    target = models_dir / version
    shutil.copytree(source, target)
    manifest = dataclasses.replace(read_manifest(source), version=version, created_at=created_at)
    write_manifest(target, manifest)
    return target


def flip_one_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_manifest_round_trips_through_json(compiled_bundle: Path) -> None:
    manifest = read_manifest(compiled_bundle)
    assert manifest.version == compiled_bundle.name
    assert manifest.created_at == CREATED
    assert manifest.input_shape == (None, 60, 7)
    assert manifest.action_order == ACTION_ORDER
    assert tuple(a.name for a in manifest.agents) == AGENT_NAMES
    assert manifest.torch_version == torch.__version__
    for agent in manifest.agents:
        assert agent.sha256 == sha256_file(compiled_bundle / agent.file)
        assert agent.parameters > 0
    again = Manifest.from_json(json.loads(json.dumps(manifest.to_json())), bundle_dir=compiled_bundle)
    assert again == manifest
    assert again.training == manifest.training and again.metrics == manifest.metrics
    raw = json.loads((compiled_bundle / MANIFEST_FILE).read_text())
    assert raw["created_at"] == "2025-01-02T03:04:05Z"
    assert raw["input_shape"] == [None, 60, 7]
    assert set(raw["agents"]["momentum"]) == {"file", "sha256", "parameters"}


def test_verify_bundle_accepts_an_untouched_bundle(compiled_bundle: Path) -> None:
    assert verify_bundle(compiled_bundle).version == compiled_bundle.name


def test_the_shipped_bundle_is_current_and_verifies() -> None:
    models_dir = default_models_dir()
    bundle_dir = current_bundle_dir(models_dir)
    manifest = verify_bundle(bundle_dir)
    assert (models_dir / CURRENT_FILE).read_text().strip() == manifest.version
    shipped = {m.version for m in list_bundles(models_dir)}
    assert shipped == {manifest.version, manifest.training["initial_bundle"]}, (
        "ship the MAPPO bundle (CURRENT) and the supervised bundle it started from, nothing else"
    )
    assert "JIT compilation successful" in (bundle_dir / "jit_compilation.log").read_text()
    for agent in manifest.agents:
        assert (bundle_dir / agent.file).stat().st_size < 500_000
    assert manifest.training["data_sha256"]
    assert manifest.metrics["beats"] == {"hold": True, "random": True, "rule_fvg": True, "supervised": True}


def test_one_changed_byte_is_refused_before_any_torchscript_is_loaded(models_dir: Path, monkeypatch) -> None:
    bundle_dir = next(models_dir.iterdir())
    expected = read_manifest(bundle_dir).agent("momentum").sha256
    flip_one_byte(bundle_dir / "momentum.pt")
    actual = sha256_file(bundle_dir / "momentum.pt")

    loads: list[object] = []
    monkeypatch.setattr(torch.jit, "load", lambda *args, **kwargs: loads.append(args))
    with pytest.raises(ModelIntegrityError) as refused:
        verify_bundle(bundle_dir)
    message = str(refused.value)
    assert "momentum.pt" in message
    assert f"SHA-256 mismatch: manifest {expected}, file {actual}" in message
    with pytest.raises(ModelIntegrityError, match=r"momentum\.pt"):
        AgentEnsemble.load(bundle_dir)
    assert loads == []


def replace_in_place(bundle_dir: Path, agent: str, source: Path) -> None:
    """Another agent's file copied over `agent`'s and its new hash written into the manifest: every file matches
    the manifest, under the version the old files were compiled as."""
    manifest = read_manifest(bundle_dir)
    shutil.copyfile(source, bundle_dir / manifest.agent(agent).file)
    agents = tuple(dataclasses.replace(a, sha256=sha256_file(source)) if a.name == agent else a
                   for a in manifest.agents)
    write_manifest(bundle_dir, dataclasses.replace(manifest, agents=agents))


def test_a_compiled_bundle_changed_in_place_is_refused(models_dir: Path, tmp_path: Path) -> None:
    bundle_dir = next(models_dir.iterdir())
    other = compile_bundle(build_agents(seed=5), tmp_path / "other", training={}, metrics={})
    replace_in_place(bundle_dir, "fvg", other / "fvg.pt")
    with pytest.raises(ModelIntegrityError, match=f"version {bundle_dir.name} was compiled from other files"):
        verify_bundle(bundle_dir)


def test_a_manifest_written_again_with_its_agents_in_another_order_is_no_change(models_dir: Path) -> None:
    bundle_dir = next(models_dir.iterdir())
    loaded = verify_bundle(bundle_dir)
    write_manifest(bundle_dir, dataclasses.replace(loaded, agents=tuple(reversed(loaded.agents))))
    assert [a.name for a in read_manifest(bundle_dir).agents] != [a.name for a in loaded.agents]
    check_unchanged(loaded, verify_bundle(bundle_dir))  # the compiled version still names its files


def test_a_bundle_changed_on_disk_after_loading_is_told_apart(models_dir: Path, tmp_path: Path) -> None:
    """Named by hand (no content hash in its version), only the files a worker loaded can tell the change."""
    bundle_dir = add_version(models_dir, next(models_dir.iterdir()), "hand-named", CREATED)
    loaded = verify_bundle(bundle_dir)
    check_unchanged(loaded, verify_bundle(bundle_dir))  # untouched: nothing to say
    other = compile_bundle(build_agents(seed=5), tmp_path / "other", training={}, metrics={})
    replace_in_place(bundle_dir, "entry", other / "entry.pt")
    on_disk = verify_bundle(bundle_dir)  # every hash matches its manifest
    with pytest.raises(ModelIntegrityError, match=r"entry\.pt changed on disk since this worker loaded version "
                                                  r"hand-named"):
        check_unchanged(loaded, on_disk)


def test_a_missing_model_file_is_named(models_dir: Path) -> None:
    bundle_dir = next(models_dir.iterdir())
    (bundle_dir / "entry.pt").unlink()
    with pytest.raises(ModelIntegrityError, match=r"entry\.pt: listed in the manifest but missing"):
        verify_bundle(bundle_dir)


def test_a_missing_manifest_names_the_directory(models_dir: Path) -> None:
    bundle_dir = next(models_dir.iterdir())
    (bundle_dir / MANIFEST_FILE).unlink()
    with pytest.raises(BundleNotFoundError, match=f"{bundle_dir}.*manifest.json is missing"):
        verify_bundle(bundle_dir)
    with pytest.raises(BundleNotFoundError, match="does not exist"):
        verify_bundle(models_dir / "no-such-version")


@pytest.mark.parametrize(
    ("edit", "complaint"),
    [
        (lambda m: m.update(action_order=["long", "hold", "short"]), "action_order"),
        (lambda m: m.update(input_shape=[None, 30, 7]), "input_shape"),
        (lambda m: m["agents"]["fvg"].update(file="../fvg.pt"), "plain file name"),
        (lambda m: m["agents"].pop("entry"), "agents"),
        (lambda m: m.pop("created_at"), "created_at"),
        (lambda m: m.update(format="other/9"), "format"),
    ],
)
def test_a_manifest_this_worker_cannot_honour_is_refused(models_dir: Path, edit, complaint: str) -> None:
    bundle_dir = next(models_dir.iterdir())
    raw = json.loads((bundle_dir / MANIFEST_FILE).read_text())
    edit(raw)
    (bundle_dir / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=complaint):
        verify_bundle(bundle_dir)


def test_unreadable_manifest_json_is_a_manifest_error(models_dir: Path) -> None:
    bundle_dir = next(models_dir.iterdir())
    (bundle_dir / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read JSON"):
        read_manifest(bundle_dir)


def test_without_current_the_newest_bundle_is_active(models_dir: Path) -> None:
    original = next(models_dir.iterdir())
    add_version(models_dir, original, "older", CREATED - timedelta(days=1))
    newest = add_version(models_dir, original, "newer", CREATED + timedelta(hours=1))
    (models_dir / ".staging-x").mkdir()
    (models_dir / "junk").mkdir()
    assert [m.version for m in list_bundles(models_dir)] == ["newer", original.name, "older"]
    assert current_bundle_dir(models_dir) == newest


def test_a_bundle_whose_manifest_does_not_read_is_no_bundle_but_is_named_with_why(models_dir: Path) -> None:
    original = next(models_dir.iterdir())
    broken = add_version(models_dir, original, "older", CREATED - timedelta(days=1))
    (broken / MANIFEST_FILE).write_text("{not json")
    (models_dir / ".staging-x").mkdir()  # hidden, or without a manifest: not bundles, readable or not
    (models_dir / ".staging-x" / MANIFEST_FILE).write_text("{")
    (models_dir / "20250101T000000Z.failed").mkdir()
    assert [m.version for m in list_bundles(models_dir)] == [original.name]  # never chosen, never served
    assert serving_bundle_dir(models_dir) == original
    [unreadable] = unreadable_bundles(models_dir)
    assert (unreadable.name, unreadable.bundle_dir) == ("older", broken)
    assert unreadable.error.startswith(f"{broken / MANIFEST_FILE}: cannot read JSON")
    assert unreadable.as_dict() == {"name": "older", "bundle_dir": str(broken), "error": unreadable.error}
    assert unreadable_bundles(models_dir / "absent") == []


def test_without_current_a_worker_starts_only_on_the_one_bundle_there(models_dir: Path) -> None:
    original = next(models_dir.iterdir())
    assert serving_bundle_dir(models_dir) == original  # the only one: no choice to guess
    add_version(models_dir, original, "newer", CREATED + timedelta(hours=1))
    with pytest.raises(BundleNotFoundError, match=r"no CURRENT file .* 2 bundles \(newest newer\): a worker does "
                                                  r"not guess which one trades"):
        serving_bundle_dir(models_dir)
    set_current(models_dir, original.name)
    assert serving_bundle_dir(models_dir) == original


def test_current_names_the_active_bundle_and_set_current_replaces_it(models_dir: Path) -> None:
    original = next(models_dir.iterdir())
    add_version(models_dir, original, "newer", CREATED + timedelta(hours=1))
    set_current(models_dir, original.name)
    assert current_bundle_dir(models_dir) == original
    assert (models_dir / CURRENT_FILE).read_text() == original.name + "\n"
    set_current(models_dir, "newer")
    assert current_bundle_dir(models_dir) == models_dir / "newer"
    assert sorted(p.name for p in models_dir.iterdir() if p.is_file()) == [CURRENT_FILE]


def test_set_current_refuses_a_tampered_or_unknown_bundle(models_dir: Path) -> None:
    original = next(models_dir.iterdir())
    set_current(models_dir, original.name)
    tampered = add_version(models_dir, original, "tampered", CREATED)
    flip_one_byte(tampered / "fvg.pt")
    with pytest.raises(ModelIntegrityError, match=r"fvg\.pt"):
        set_current(models_dir, "tampered")
    with pytest.raises(BundleNotFoundError):
        set_current(models_dir, "missing")
    with pytest.raises(BundleNotFoundError, match="not a bundle version name"):
        set_current(models_dir, "../elsewhere")
    assert current_bundle_dir(models_dir) == original


def test_current_naming_a_missing_bundle_is_an_error_naming_both(models_dir: Path) -> None:
    (models_dir / CURRENT_FILE).write_text("gone\n")
    with pytest.raises(BundleNotFoundError, match=r"CURRENT names 'gone'.*has no manifest.json"):
        current_bundle_dir(models_dir)


def test_an_empty_models_directory_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleNotFoundError, match=str(tmp_path)):
        current_bundle_dir(tmp_path)
    assert list_bundles(tmp_path / "absent") == []


def test_build_time_verification_installs_the_current_bundle_and_logs_success(tmp_path) -> None:
    from models.compile import main
    from worker.settings import default_models_dir

    out, log = tmp_path / "jit", tmp_path / "jit_compilation.log"
    assert main(["--verify", str(default_models_dir()), "--log", str(log), "--out", str(out)]) == 0
    assert log.read_text().rstrip().endswith("JIT compilation successful")
    assert verify_bundle(current_bundle_dir(out)).version == current_bundle_dir(default_models_dir()).name


def test_build_time_verification_of_a_tampered_bundle_logs_the_failure(tmp_path) -> None:
    import shutil

    from models.compile import main
    from worker.settings import default_models_dir

    models_dir = tmp_path / "models"
    shutil.copytree(default_models_dir(), models_dir)
    target = current_bundle_dir(models_dir) / "entry.pt"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    log = tmp_path / "jit_compilation.log"
    assert main(["--verify", str(models_dir), "--log", str(log)]) == 1
    text = log.read_text()
    assert "JIT compilation FAILED" in text and "entry.pt" in text and "SHA-256 mismatch" in text


def test_with_a_signing_key_only_bundles_signed_with_it_load(tmp_path, monkeypatch) -> None:
    from models.bundle import SIGNING_KEY_ENV, ModelIntegrityError, sign_bundle
    from worker.settings import default_models_dir

    models_dir = tmp_path / "models"
    shutil.copytree(default_models_dir(), models_dir)
    bundle = current_bundle_dir(models_dir)
    key_file, other_key = tmp_path / "key", tmp_path / "other"
    key_file.write_bytes(b"k" * 32)
    other_key.write_bytes(b"o" * 32)

    monkeypatch.setenv(SIGNING_KEY_ENV, str(key_file))
    with pytest.raises(ModelIntegrityError, match="refusing an unsigned bundle"):
        verify_bundle(bundle)
    sign_bundle(bundle, b"k" * 32)
    assert verify_bundle(bundle).version == bundle.name

    monkeypatch.setenv(SIGNING_KEY_ENV, str(other_key))
    with pytest.raises(ModelIntegrityError, match="signature mismatch"):
        verify_bundle(bundle)

    monkeypatch.setenv(SIGNING_KEY_ENV, str(key_file))
    manifest = bundle / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format"', '"format" ', 1))  # any edit after signing
    with pytest.raises(ModelIntegrityError, match="signature mismatch"):
        verify_bundle(bundle)

    monkeypatch.delenv(SIGNING_KEY_ENV)
    assert verify_bundle(bundle).version == bundle.name, "without a key, signatures are optional"



def test_a_manifest_naming_another_version_than_its_directory_is_refused(models_dir: Path) -> None:
    bundle = next(models_dir.iterdir())
    write_manifest(bundle, dataclasses.replace(read_manifest(bundle), version="other"))
    with pytest.raises(ManifestError, match=f"version 'other', but the bundle's directory is '{bundle.name}'"):
        verify_bundle(bundle)
    assert list_bundles(models_dir) == []  # it would be served under another bundle's name: not a bundle at all


@pytest.mark.parametrize(("broken", "complaint"), [
    ("raises", "fvg: raised .*agent exploded"),
    ("nan", "fvg: non-finite output"),
    ("two_actions", r"fvg: output shapes \(1, 2\)"),
])
def test_a_bundle_whose_agent_cannot_decide_is_refused_at_load(tmp_path: Path, broken: str, complaint: str) -> None:
    bundle = with_broken_agent(current_bundle_dir(default_models_dir()), tmp_path, broken)
    verify_bundle(bundle)  # every hash matches: only running the agents shows it
    with pytest.raises(UnusableBundleError, match=complaint):
        AgentEnsemble.load(bundle)


def test_compilation_refuses_agents_whose_outputs_are_not_finite(tmp_path: Path) -> None:
    agents = build_agents(seed=0)
    with torch.no_grad():
        next(agents["momentum"].parameters()).fill_(float("nan"))
    with pytest.raises(CompilationError, match="momentum: non-finite output on a batch of 1: the agent cannot decide"):
        compile_bundle(agents, tmp_path, training={}, metrics={})
    assert list_bundles(tmp_path) == []
    (failed,) = tmp_path.glob("*.failed")
    assert "JIT compilation FAILED" in (failed / "jit_compilation.log").read_text()


def test_an_output_that_is_nan_differs_infinitely_not_at_all() -> None:
    class Outputs(torch.nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor]:
            return (torch.full((batch.shape[0], 3), self.value),)

    inputs = [torch.zeros(2, 60, 7)]
    assert max_output_difference(Outputs(0.5), Outputs(0.5), inputs) == 0.0
    assert max_output_difference(Outputs(0.5), Outputs(float("nan")), inputs) == float("inf")


def test_build_time_verification_installs_every_bundle_that_verifies(tmp_path: Path) -> None:
    from models.compile import main

    models_dir = tmp_path / "models"
    shutil.copytree(default_models_dir(), models_dir)
    current = current_bundle_dir(models_dir).name
    others = [m.version for m in list_bundles(models_dir) if m.version != current]
    assert others, "the shipped models directory holds a bundle to roll back to"
    broken = break_agent(models_dir / others[0], "nan").name

    out, log = tmp_path / "jit", tmp_path / "jit_compilation.log"
    assert main(["--verify", str(models_dir), "--log", str(log), "--out", str(out)]) == 0
    assert current_bundle_dir(out).name == current
    installed = {m.version for m in list_bundles(out)}
    assert installed == {m.version for m in list_bundles(models_dir)} - {broken}
    for version in installed:
        verify_bundle(out / version)
    text = log.read_text()
    assert f"not installed: bundle {broken} refused: fvg: non-finite output" in text
    assert text.rstrip().endswith("JIT compilation successful")


def test_build_time_verification_does_not_guess_among_several_bundles_without_current(tmp_path: Path) -> None:
    """The image must serve what a worker would: with several bundles and no CURRENT a worker refuses to start, and
    the build refuses too, rather than install the newest (perhaps one the promotion gate refused) as current."""
    from models.compile import main

    models_dir = tmp_path / "models"
    shutil.copytree(default_models_dir(), models_dir)
    assert len(list_bundles(models_dir)) > 1
    (models_dir / "CURRENT").unlink()
    out, log = tmp_path / "jit", tmp_path / "jit_compilation.log"

    assert main(["--verify", str(models_dir), "--log", str(log), "--out", str(out)]) == 1
    assert "JIT compilation FAILED" in log.read_text()
    assert not (out / "CURRENT").exists()


def test_build_time_verification_refuses_to_install_over_its_own_source(tmp_path: Path) -> None:
    from models.compile import main

    models_dir = tmp_path / "models"
    shutil.copytree(default_models_dir(), models_dir)
    before = {m.version for m in list_bundles(models_dir)}
    log = tmp_path / "jit_compilation.log"
    assert main(["--verify", str(models_dir), "--log", str(log), "--out", str(models_dir)]) == 1
    assert "is the directory being verified" in log.read_text()
    assert {m.version for m in list_bundles(models_dir)} == before
    verify_bundle(current_bundle_dir(models_dir))


def test_a_current_file_that_is_not_text_or_not_a_file_is_a_bundle_error(models_dir: Path) -> None:
    (models_dir / CURRENT_FILE).write_bytes(b"\xff\xfe")
    with pytest.raises(BundleNotFoundError, match="is not text"):
        current_bundle_dir(models_dir)
    (models_dir / CURRENT_FILE).unlink()
    (models_dir / CURRENT_FILE).mkdir()
    with pytest.raises(BundleNotFoundError, match="cannot be read"):
        current_bundle_dir(models_dir)


def test_a_bundle_that_cannot_be_written_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models import bundle as bundle_module
    from models.bundle import BundleWriteError

    real_replace = bundle_module.os.replace

    def disk_full(src, dst):  # the manifest's atomic rename fails as on a full disk
        if str(dst).endswith("manifest.json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(bundle_module.os, "replace", disk_full)
    with pytest.raises(BundleWriteError, match=r"compiled, but the bundle could not be written .*No space left"):
        compile_bundle(build_agents(seed=0), tmp_path, training={}, metrics={})
    assert list(tmp_path.iterdir()) == [], "no staging directory, no temporary file, no bundle"


def test_a_models_directory_that_cannot_be_written_is_said_before_compiling(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from models import compile as compile_module
    from models.bundle import BundleWriteError

    compiled: list[object] = []
    monkeypatch.setattr(compile_module, "_compile_all", lambda *args: compiled.append(args))
    not_a_directory = tmp_path / "models"
    not_a_directory.write_text("a file where the models directory should be")
    with pytest.raises(BundleWriteError, match=r"cannot write a bundle into .*models .*nothing was compiled"):
        compile_bundle(build_agents(seed=0), not_a_directory, training={}, metrics={})
    assert compiled == []


def test_current_that_cannot_be_replaced_names_its_directory(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models import bundle as bundle_module
    from models.bundle import BundleWriteError

    def refused(src, dst):  # a directory that takes no new entry: the rename fails, not the file
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(bundle_module.os, "replace", refused)
    with pytest.raises(BundleWriteError, match=f"{models_dir} must be a writable directory"):
        set_current(models_dir, next(models_dir.iterdir()).name)
    assert not (models_dir / CURRENT_FILE).exists()
    assert [p.name for p in models_dir.iterdir() if p.name.startswith(".")] == []  # no temporary file left
