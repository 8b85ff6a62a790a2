"""Model bundles: one directory per version, its files pinned by SHA-256 in a manifest.

    <models_dir>/<version>/fvg.pt, momentum.pt, entry.pt, manifest.json, jit_compilation.log
    <models_dir>/CURRENT      the active version's name; without it, the newest `created_at` is active

Loading TorchScript runs code, so every file's hash is checked against the manifest before anything loads it.
`read_verified_agents` hands back the very bytes it hashed, so a file swapped between check and load cannot slip in.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.actions import ACTION_ORDER, AGENT_NAMES
from worker.records import MATRIX_SHAPE

BUNDLE_FORMAT = "tactical-bundle/1"
MANIFEST_FILE = "manifest.json"
JIT_LOG_FILE = "jit_compilation.log"
CURRENT_FILE = "CURRENT"
INPUT_SHAPE: tuple[int | None, ...] = (None, *MATRIX_SHAPE)
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# What `models compile` names a bundle: when it was made, and a hash of its agents' hashes.
COMPILED_VERSION = re.compile(r"\d{8}T\d{6}Z-(?P<content>[0-9a-f]{8})")


class BundleError(Exception):
    """A model bundle cannot be used; the message names the file or directory and what is wrong."""


class BundleNotFoundError(BundleError, FileNotFoundError):
    """No bundle where one was expected; the message names the directory searched."""


class ManifestError(BundleError, ValueError):
    """A manifest is unreadable or describes something this worker cannot run."""


class BundleWriteError(BundleError, OSError):
    """A bundle file or CURRENT could not be written (nothing was changed): the directory's fault, not a bundle's."""


class ModelIntegrityError(BundleError, RuntimeError):
    """A model file is missing or its bytes differ from the manifest's SHA-256."""


class UnusableBundleError(BundleError):
    """A bundle whose files verify, but whose agents this torch cannot load or that cannot decide (they raise, or
    give outputs that are not finite probabilities): refused like a tampered one, never served."""


@dataclass(frozen=True, slots=True)
class AgentFile:
    name: str
    file: str
    sha256: str
    parameters: int


@dataclass(frozen=True, slots=True)
class Manifest:
    version: str
    created_at: datetime
    agents: tuple[AgentFile, ...]
    torch_version: str
    training: dict[str, Any] = field(compare=False)
    metrics: dict[str, Any] = field(compare=False)
    format: str = BUNDLE_FORMAT
    input_shape: tuple[int | None, ...] = INPUT_SHAPE
    action_order: tuple[str, ...] = ACTION_ORDER
    bundle_dir: Path | None = field(default=None, compare=False)

    def agent(self, name: str) -> AgentFile:
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "version": self.version,
            "created_at": format_timestamp(self.created_at),
            "input_shape": list(self.input_shape),
            "action_order": list(self.action_order),
            "agents": {
                a.name: {"file": a.file, "sha256": a.sha256, "parameters": a.parameters} for a in self.agents
            },
            "torch_version": self.torch_version,
            "training": self.training,
            "metrics": self.metrics,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, bundle_dir: Path | None = None) -> Manifest:
        where = bundle_dir / MANIFEST_FILE if bundle_dir is not None else "manifest"
        try:
            agents = tuple(
                AgentFile(name, str(spec["file"]), str(spec["sha256"]).lower(), int(spec["parameters"]))
                for name, spec in data["agents"].items()
            )
            return cls(
                format=str(data["format"]),
                version=str(data["version"]),
                created_at=parse_timestamp(str(data["created_at"])),
                input_shape=tuple(data["input_shape"]),
                action_order=tuple(data["action_order"]),
                agents=agents,
                torch_version=str(data["torch_version"]),
                training=dict(data.get("training", {})),
                metrics=dict(data.get("metrics", {})),
                bundle_dir=bundle_dir,
            )
        except KeyError as missing:
            raise ManifestError(f"{where}: required field {missing} is missing") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"{where}: malformed ({exc})") from None


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"created_at {text!r} has no timezone")
    return moment.astimezone(UTC)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Unset:
    """Marks "read the signing key from the environment"."""


UNSET = Unset()


def read_manifest(bundle_dir: Path, *, signing_key: bytes | None = None) -> Manifest:
    """The bundle's manifest; with `signing_key`, only if `manifest.sig` is its valid HMAC (checked on the very
    bytes parsed)."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_FILE
    if not bundle_dir.is_dir():
        raise BundleNotFoundError(f"model bundle directory {bundle_dir} does not exist")
    if not path.is_file():
        raise BundleNotFoundError(f"{bundle_dir} is not a model bundle: {MANIFEST_FILE} is missing")
    try:
        raw = path.read_bytes()
        if signing_key is not None:
            verify_signature(bundle_dir, raw, signing_key)
        data = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    manifest = Manifest.from_json(data, bundle_dir=bundle_dir)
    if manifest.version != bundle_dir.name:
        # Decisions, /health and the audit name a bundle by its manifest's version; CURRENT, promote and rollback by
        # its directory. A bundle whose two differ would be served under another bundle's name.
        raise ManifestError(f"{path}: version {manifest.version!r}, but the bundle's directory is {bundle_dir.name!r}")
    return manifest


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Path:
    path = Path(bundle_dir) / MANIFEST_FILE
    _write_atomically(path, json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n")
    return path


def check_compatible(manifest: Manifest) -> None:
    """Refuse a manifest whose contract (format, input shape, action order, agents) differs from this code's."""
    where = manifest.bundle_dir / MANIFEST_FILE if manifest.bundle_dir is not None else "manifest"
    if manifest.format != BUNDLE_FORMAT:
        raise ManifestError(f"{where}: format {manifest.format!r}, this worker reads {BUNDLE_FORMAT!r}")
    if tuple(manifest.input_shape) != INPUT_SHAPE:
        raise ManifestError(f"{where}: input_shape {list(manifest.input_shape)}, expected {list(INPUT_SHAPE)}")
    if tuple(manifest.action_order) != ACTION_ORDER:
        raise ManifestError(
            f"{where}: action_order {list(manifest.action_order)}, expected {list(ACTION_ORDER)}"
        )
    names = tuple(a.name for a in manifest.agents)
    if sorted(names) != sorted(AGENT_NAMES):
        raise ManifestError(f"{where}: agents {list(names)}, expected {list(AGENT_NAMES)}")
    for agent in manifest.agents:
        if Path(agent.file).name != agent.file or agent.file in ("", ".", ".."):
            raise ManifestError(f"{where}: agent {agent.name} file {agent.file!r} must be a plain file name")
        if not re.fullmatch(r"[0-9a-f]{64}", agent.sha256):
            raise ManifestError(f"{where}: agent {agent.name} sha256 {agent.sha256!r} is not a SHA-256 hex digest")


def read_verified_agents(
    bundle_dir: Path, *, signing_key: bytes | Unset | None = UNSET
) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest and each agent file's bytes, every one checked against its SHA-256 (AGENT_NAMES order).
    When a signing key is configured (`TACTICAL_MODEL_SIGNING_KEY_FILE`, or passed), the manifest must carry a
    valid signature too: the hashes then prove who made the files, not only that they match the manifest."""
    key = signing_key_from_env() if isinstance(signing_key, Unset) else signing_key
    manifest = read_manifest(bundle_dir, signing_key=key)
    check_compatible(manifest)
    contents: dict[str, bytes] = {}
    for name in AGENT_NAMES:
        agent = manifest.agent(name)
        path = Path(bundle_dir) / agent.file
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelIntegrityError(f"{path}: listed in the manifest but missing") from None
        except OSError as exc:
            raise ModelIntegrityError(f"{path}: cannot be read ({exc})") from None
        actual = sha256_bytes(data)
        if actual != agent.sha256:
            raise ModelIntegrityError(f"{path}: SHA-256 mismatch: manifest {agent.sha256}, file {actual}")
        contents[name] = data
    check_version_content(manifest)
    return manifest, contents


def bundle_version(created_at: datetime, file_hashes: list[str]) -> str:
    """Sortable by time, unique by content: `20250101T120000Z-1a2b3c4d`."""
    return f"{created_at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{_content_hash(file_hashes)}"


def _content_hash(file_hashes: list[str]) -> str:
    return hashlib.sha256("".join(file_hashes).encode()).hexdigest()[:8]


def check_version_content(manifest: Manifest) -> None:
    """A compiled bundle's version names its content: files replaced in place and their new hashes written into its
    manifest would be served under the old name (two workers deciding with different weights, one version). A
    version of another form (named by hand) is not checked."""
    named = COMPILED_VERSION.fullmatch(manifest.version)
    # In AGENT_NAMES order, as `models compile` hashed them: not the manifest's (rewriting it may reorder them).
    actual = _content_hash([manifest.agent(name).sha256 for name in AGENT_NAMES])
    if named is not None and named["content"] != actual:
        where = manifest.bundle_dir / MANIFEST_FILE if manifest.bundle_dir is not None else "manifest"
        raise ModelIntegrityError(
            f"{where}: version {manifest.version} was compiled from other files (its files' hashes give {actual}): "
            "a bundle is never changed in place; compile a new version (`tacticalctl models compile`)")


def check_unchanged(loaded: Manifest, on_disk: Manifest) -> None:
    """The bundle a worker serves (`loaded`) still has the files it loaded, as its directory's manifest now says: a
    worker started later would load what is on disk, and decide under the same version with other weights."""
    now = {agent.name: (agent.file, agent.sha256) for agent in on_disk.agents}  # by name: order is no change
    changed = [agent.file for agent in loaded.agents if now.get(agent.name) != (agent.file, agent.sha256)]
    if changed or len(loaded.agents) != len(on_disk.agents):
        where = on_disk.bundle_dir if on_disk.bundle_dir is not None else on_disk.version
        raise ModelIntegrityError(
            f"{where}: {', '.join(changed) or 'its agents'} changed on disk since this worker loaded version "
            f"{loaded.version}; it serves what it loaded, a worker started now would not. A bundle is never changed "
            "in place: restore its files, or compile a new version and promote it")


def verify_bundle(bundle_dir: Path, *, signing_key: bytes | Unset | None = UNSET) -> Manifest:
    """The bundle's manifest, once every file's hash (and, with a key, the signature) matches; else a BundleError."""
    manifest, _ = read_verified_agents(Path(bundle_dir), signing_key=signing_key)
    return manifest


# ---- optional signatures: HMAC-SHA256 of manifest.json with a key shared by the model pipeline and the workers ----

SIGNATURE_FILE = "manifest.sig"
SIGNING_KEY_ENV = "TACTICAL_MODEL_SIGNING_KEY_FILE"
_SIGNATURE_SCHEME = "hmac-sha256"


def signing_key_from_env(environ: dict[str, str] | None = None) -> bytes | None:
    """The key in the file TACTICAL_MODEL_SIGNING_KEY_FILE names, or None when it is not set."""
    environ = dict(os.environ) if environ is None else environ
    path = environ.get(SIGNING_KEY_ENV)
    if not path:
        return None
    return read_signing_key(Path(path), f"{SIGNING_KEY_ENV}={path}")


def read_signing_key(path: Path, source: str) -> bytes:
    """The key in `path`; `source` says where the path came from (a variable, a flag), for the error."""
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ModelIntegrityError(f"{source}: cannot read the signing key ({exc})") from None
    if len(key) < 16:
        raise ModelIntegrityError(f"{source}: the signing key must be at least 16 bytes")
    return key


def manifest_signature(manifest_bytes: bytes, key: bytes) -> str:
    return f"{_SIGNATURE_SCHEME}:" + hmac.new(key, manifest_bytes, hashlib.sha256).hexdigest()


def sign_bundle(bundle_dir: Path, key: bytes) -> Path:
    """Write `manifest.sig` for the bundle's manifest as it is now (sign after the manifest is final)."""
    bundle_dir = Path(bundle_dir)
    signature = manifest_signature((bundle_dir / MANIFEST_FILE).read_bytes(), key)
    path = bundle_dir / SIGNATURE_FILE
    _write_atomically(path, signature + "\n")
    return path


def verify_signature(bundle_dir: Path, manifest_bytes: bytes, key: bytes) -> None:
    path = Path(bundle_dir) / SIGNATURE_FILE
    try:
        recorded = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ModelIntegrityError(f"{path}: missing, and a signing key is configured ({SIGNING_KEY_ENV}): "
                                  "refusing an unsigned bundle") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelIntegrityError(f"{path}: cannot be read ({exc})") from None
    if not hmac.compare_digest(recorded, manifest_signature(manifest_bytes, key)):
        raise ModelIntegrityError(f"{path}: signature mismatch: {MANIFEST_FILE} was not signed with this key")


@dataclass(frozen=True, slots=True)
class UnreadableBundle:
    """A directory holding a manifest that does not read: `error` is the BundleError's message."""

    bundle_dir: Path
    error: str

    @property
    def name(self) -> str:
        return self.bundle_dir.name

    def as_dict(self) -> dict[str, str]:
        return {"bundle_dir": str(self.bundle_dir), "name": self.name, "error": self.error}


def _manifest_dirs(models_dir: Path) -> list[Path]:
    """The directories of `models_dir` holding a manifest; hidden ones (staging, temporary) are never bundles."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    return sorted(child for child in models_dir.iterdir()
                  if not child.name.startswith(".") and (child / MANIFEST_FILE).is_file())


def list_bundles(models_dir: Path) -> list[Manifest]:
    """Every bundle with a readable manifest under `models_dir`, newest first. Hashes are not checked here."""
    manifests = []
    for child in _manifest_dirs(models_dir):
        with contextlib.suppress(BundleError):
            manifests.append(read_manifest(child))
    return sorted(manifests, key=lambda m: (m.created_at, m.version), reverse=True)


def unreadable_bundles(models_dir: Path) -> list[UnreadableBundle]:
    """The directories `list_bundles` passes over though they hold a manifest, by name: no worker loads them and no
    rollback goes to them until their manifest reads."""
    unreadable = []
    for child in _manifest_dirs(models_dir):
        try:
            read_manifest(child)
        except BundleError as exc:
            unreadable.append(UnreadableBundle(child, str(exc)))
    return unreadable


def read_current_version(models_dir: Path) -> str | None:
    path = Path(models_dir) / CURRENT_FILE
    try:
        version = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise BundleNotFoundError(f"{path} is not text: it should hold one bundle version name") from None
    except OSError as exc:  # a directory, unreadable: workers cannot tell which bundle is active
        raise BundleNotFoundError(f"{path} cannot be read ({exc.strerror}): it should be a file holding one bundle "
                                  "version name") from None
    if not VERSION_PATTERN.fullmatch(version):
        raise BundleNotFoundError(f"{path} holds {version!r}, which is not a bundle version name")
    return version


class CurrentMissingError(BundleNotFoundError):
    """CURRENT is gone from a directory whose bundle is being served: which bundle to serve is no longer said."""


def signed_current_version(models_dir: Path) -> str | None:
    """CURRENT's version when that bundle carries a signature, else None (no CURRENT, unreadable, unsigned). Where
    tacticalctl holds no key, a signed CURRENT is what says the workers hold one: they refuse unsigned bundles."""
    try:
        current = read_current_version(models_dir)
    except BundleError:
        return None
    return current if current is not None and (Path(models_dir) / current / SIGNATURE_FILE).is_file() else None


def named_bundle_dir(models_dir: Path) -> Path:
    """The bundle CURRENT names; CurrentMissingError without a CURRENT file. What a running worker follows: the
    newest bundle (`current_bundle_dir`'s fallback) may be one the promotion gate refused or one just compiled, and
    a CURRENT lost (a sync with --delete, a restore, a mistake) must not switch the live model to it."""
    models_dir = Path(models_dir)
    version = read_current_version(models_dir)  # read once: the file may go between two reads
    if version is None:
        raise CurrentMissingError(
            f"{models_dir / CURRENT_FILE} is missing: name the bundle to serve with `tacticalctl models promote "
            "<version> --yes` (or write its version into that file)"
        )
    return _named(models_dir, version)


def _named(models_dir: Path, version: str) -> Path:
    bundle_dir = models_dir / version
    if not (bundle_dir / MANIFEST_FILE).is_file():
        raise BundleNotFoundError(
            f"{models_dir / CURRENT_FILE} names {version!r}, but {bundle_dir} has no {MANIFEST_FILE}"
        )
    return bundle_dir


def current_bundle_dir(models_dir: Path) -> Path:
    """The active bundle: the one CURRENT names, else the newest by `created_at` (a directory never promoted into;
    what the checks look at — a worker starts on it only if it is the only one: `serving_bundle_dir`)."""
    return _active_bundle_dir(Path(models_dir), newest_of_several=True)


def serving_bundle_dir(models_dir: Path) -> Path:
    """What a worker starts on: the bundle CURRENT names; without CURRENT, the only bundle there is. With several
    and no CURRENT a worker does not guess which one trades (the newest may be one the promotion gate refused):
    BundleNotFoundError, naming how to choose."""
    return _active_bundle_dir(Path(models_dir), newest_of_several=False)


def _active_bundle_dir(models_dir: Path, *, newest_of_several: bool) -> Path:
    version = read_current_version(models_dir)  # read once: the file may go between two reads
    if version is not None:
        return _named(models_dir, version)
    bundles = list_bundles(models_dir)
    if not bundles:
        raise BundleNotFoundError(f"no model bundle (a directory with {MANIFEST_FILE}) in {models_dir}")
    if len(bundles) > 1 and not newest_of_several:
        raise BundleNotFoundError(
            f"no {CURRENT_FILE} file in {models_dir}, and {len(bundles)} bundles (newest {bundles[0].version}): a "
            "worker does not guess which one trades. Name it: `tacticalctl models rollback <version> --yes` (or "
            f"write its version into {models_dir / CURRENT_FILE})")
    assert bundles[0].bundle_dir is not None
    return bundles[0].bundle_dir


def set_current(models_dir: Path, version: str) -> None:
    """Make `version` the active bundle, after verifying it; readers see the old or the new name, never half."""
    models_dir = Path(models_dir)
    if not VERSION_PATTERN.fullmatch(version):
        raise BundleNotFoundError(f"{version!r} is not a bundle version name (a directory in {models_dir})")
    verify_bundle(models_dir / version)
    _write_atomically(models_dir / CURRENT_FILE, version + "\n")


def _write_atomically(path: Path, text: str) -> None:
    """Write `path` whole or not at all; BundleWriteError (the temporary file removed) when it cannot be."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        # Written beside it and renamed over it: the directory must take new files, not only the file be writable.
        raise BundleWriteError(f"cannot write {path} ({exc.strerror or exc}): {path.parent} must be a writable "
                               "directory with free space (the file is replaced by a rename)") from None
