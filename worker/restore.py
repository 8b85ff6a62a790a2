"""Restoring a backup: verify the archive, refuse to overwrite or to race a worker, restore, check the result.

Every member is checked against the manifest's SHA-256 (and the whole archive against its `.sha256` file) before
anything is written, and so is every command the restore needs, on a scratch stream (`probe_restore_commands`).
Streams are rebuilt entry by entry (`worker.stream_archive`: ids, groups with `last-delivered-id` and `entries-read`,
pending entries with their consumer and delivery count; an archive of format 1 RESTOREs their DUMPs), other keys are
restored with RESTORE, with ABSTTL the absolute expiry of each completed key. After it, the streams are compared with
the manifest.
The workers started afterwards reclaim the pending entries; completed keys make redelivered events duplicates.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import IO, Any

import redis

from worker.alerts import audit, audit_done, require_audit_trail
from worker.backup import (
    BACKED_UP_STREAMS,
    BREAKER_MEMBER,
    COMPLETED_MEMBER,
    CONFIG_MEMBER,
    MANIFEST_MEMBER,
    MODELS_PREFIX,
    READABLE_FORMATS,
    STREAM_ENTRIES_MEMBER,
    STREAMS_MEMBER,
    BackupError,
    DumpedKey,
    Progress,
    StreamState,
    checksum_path,
    no_progress,
    read_stream_states,
    scan_unique_keys,
    sha256_path,
)
from worker.connection import is_permission_refusal
from worker.heartbeat import live_consumers
from worker.names import BREAKER_PREFIX, COMPLETED_PREFIX, CONSUMER_GROUP
from worker.redis_text import as_text
from worker.settings import WorkerSettings
from worker.stream_archive import CHUNK, RebuildCounts, StreamRebuilder, record_stream
from worker.stream_entries import server_now_ms

TARGET_PATTERN = "tactical:*"
# The keys each Redis member of an archive may hold, as `tacticalctl backup` writes them, and how a line names its
# key: anything else (a key of another application) is refused, so a restore writes nothing outside the tactical
# keyspace it clears.
def _dumped_key(line: bytes) -> str:
    return DumpedKey.from_line(line).key.decode("utf-8", "replace")


_MEMBER_KEYS: dict[str, tuple[str, Callable[[bytes], str], Callable[[str], bool]]] = {
    STREAMS_MEMBER: ("streams", _dumped_key, lambda key: key in BACKED_UP_STREAMS),
    STREAM_ENTRIES_MEMBER: ("streams", record_stream, lambda key: key in BACKED_UP_STREAMS),
    COMPLETED_MEMBER: ("completed", _dumped_key, lambda key: key.startswith(COMPLETED_PREFIX)),
    BREAKER_MEMBER: ("breaker", _dumped_key, lambda key: key.startswith(BREAKER_PREFIX)),
}


class ArchiveIntegrityError(BackupError):
    """The archive is damaged or was altered: a checksum does not match, or a member is missing or unexpected."""


class RestoreRefused(BackupError):
    """Restoring would overwrite data or race a running worker; the message says how to proceed."""


# ---- reading it back -------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VerifiedArchive:
    path: Path
    sha256: str
    checksum_file: Path | None  # None: no .sha256 beside it; members were still checked against the manifest
    manifest: dict[str, Any]

    @property
    def streams(self) -> list[StreamState]:
        return [StreamState.from_dict(doc) for doc in self.manifest["redis"]["streams"]]


def _safe_member_name(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ArchiveIntegrityError(f"archive member {name!r} has an unsafe path")
    return path.as_posix()


def _members(tar: tarfile.TarFile) -> Iterator[tuple[str, IO[bytes]]]:
    for member in tar:
        name = _safe_member_name(member.name)
        if not member.isfile():
            raise ArchiveIntegrityError(f"archive member {name!r} is not a regular file")
        handle = tar.extractfile(member)
        assert handle is not None
        yield name, handle


def _hash_stream(handle: IO[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def _hash_dumped_keys(archive: Path, handle: IO[bytes], member: str) -> tuple[str, int, ArchiveIntegrityError | None]:
    """`_hash_stream` of a Redis member, and the first problem with its lines: one that is not a dumped key, or a key
    that is not one `tacticalctl backup` writes there (another application's key). Said only once the hash matched:
    an archive altered without its checksums is refused as that."""
    what, key_of, allowed = _MEMBER_KEYS[member]
    digest, size, problem = hashlib.sha256(), 0, None
    for line in handle:
        digest.update(line)
        size += len(line)
        if problem is not None:
            continue
        try:
            key = key_of(line)
        except _MALFORMED as exc:
            problem = _malformed(archive, member, exc)
            continue
        if not allowed(key):
            problem = ArchiveIntegrityError(f"{archive}: {member} holds the key {key!r}, which is not one of the "
                                            f"{what} keys a backup writes: nothing was restored")
    return digest.hexdigest(), size, problem


def open_archive(archive: Path, progress: Progress = no_progress) -> VerifiedArchive:
    """Check the archive against its .sha256 file (if present) and every member against the manifest."""
    if not archive.is_file():
        raise BackupError(f"{archive}: no such file")
    digest = sha256_path(archive)
    sidecar = checksum_path(archive)
    if sidecar.is_file():
        expected = (sidecar.read_text().split() or [""])[0]
        if expected.lower() != digest:
            raise ArchiveIntegrityError(f"{archive}: SHA-256 {digest} does not match {sidecar} ({expected}): "
                                        "the archive is damaged or was altered")
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            manifest: dict[str, Any] | None = None
            seen: set[str] = set()
            for name, handle in _members(tar):
                if manifest is None:
                    if name != MANIFEST_MEMBER:
                        raise ArchiveIntegrityError(f"{archive}: {MANIFEST_MEMBER} is not the first member")
                    manifest = json.load(handle)
                    if not isinstance(manifest, dict) or manifest.get("format") not in READABLE_FORMATS:
                        found = manifest.get("format") if isinstance(manifest, dict) else None
                        raise ArchiveIntegrityError(
                            f"{archive}: not a {' or '.join(READABLE_FORMATS)} archive (format {found!r})"
                            + (": written by a newer tacticalctl; restore it with that version"
                               if isinstance(found, str) and found.startswith("tactical-backup/") else ""))
                    continue
                expected_file = manifest["files"].get(name)
                if expected_file is None:
                    raise ArchiveIntegrityError(f"{archive}: member {name!r} is not listed in the manifest")
                actual, size, problem = (_hash_dumped_keys(archive, handle, name) if name in _MEMBER_KEYS
                                         else (*_hash_stream(handle), None))
                if actual != expected_file["sha256"] or size != expected_file["bytes"]:
                    raise ArchiveIntegrityError(f"{archive}: member {name!r} has SHA-256 {actual}, the manifest "
                                                f"says {expected_file['sha256']}")
                if problem is not None:
                    raise problem
                seen.add(name)
                progress("verify archive", len(seen), len(manifest["files"]))
    except (tarfile.TarError, EOFError, OSError, json.JSONDecodeError) as exc:
        raise ArchiveIntegrityError(f"{archive}: unreadable archive ({exc})") from None
    except _MALFORMED as exc:
        raise _malformed(archive, MANIFEST_MEMBER, exc) from None
    if manifest is None:
        raise ArchiveIntegrityError(f"{archive}: empty archive")
    verified = VerifiedArchive(archive, digest, sidecar if sidecar.is_file() else None, manifest)
    try:  # what the restore reads of the manifest, read once here: a malformed one is refused before Redis is touched
        missing = sorted(set(manifest["files"]) - seen)
        verified.streams, str(manifest["created_at"])
    except _MALFORMED as exc:
        raise _malformed(archive, MANIFEST_MEMBER, exc) from None
    if missing:
        raise ArchiveIntegrityError(f"{archive}: members listed in the manifest are missing: {', '.join(missing)}")
    return verified


# What reading JSON of an unexpected shape raises: a key missing, a list where a mapping belongs, a bad number or
# base64 (ValueError, as json.JSONDecodeError and binascii.Error are).
_MALFORMED = (KeyError, TypeError, AttributeError, ValueError)


def _malformed(archive: Path, member: str, exc: Exception) -> ArchiveIntegrityError:
    """A member whose hash matches but whose content is not what `tacticalctl backup` writes."""
    detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
    return ArchiveIntegrityError(f"{archive}: {member} is malformed ({type(exc).__name__}: {detail}); it was not "
                                 "written by `tacticalctl backup`, or was altered with its checksums")


# ---- restoring -------------------------------------------------------------------------------------------------

# How Redis before 7.0 answers what a rebuild needs (XSETID ENTRIESADDED, XGROUP CREATE ENTRIESREAD, CREATECONSUMER).
_UNSUPPORTED_REPLIES = ("wrong number of arguments", "syntax error", "unknown command", "unknown subcommand")


@dataclass(frozen=True, slots=True)
class CommandProbe:
    """What the target Redis will not run of what a restore needs."""

    refused: tuple[str, ...] = ()  # NOPERM: the user's ACL lacks them
    unsupported: tuple[str, ...] = ()  # the server does not know them (Redis before 7.0)


def classify_probe_reply(reply: object) -> str | None:
    """'refused' (NOPERM), 'unsupported' (a command or option the server does not know), or None: ran, or failed for
    another reason (out of memory, read-only) that the restore itself reports."""
    if is_permission_refusal(reply):
        return "refused"
    if isinstance(reply, redis.ResponseError) and any(text in str(reply).lower() for text in _UNSUPPORTED_REPLIES):
        return "unsupported"
    return None


@dataclass(frozen=True, slots=True)
class RestorePlan:
    archive: VerifiedArchive
    existing_streams: tuple[str, ...]
    existing_tactical_keys: int
    live_workers: tuple[str, ...]
    model_conflicts: tuple[str, ...]  # files in the models directory that differ from the archive's
    models_dir: Path | None
    commands: CommandProbe = CommandProbe()  # what the restore needs that the target will not run
    target_read: bool = True  # False: a models-only restore, which does not read Redis; nothing is known of the target

    @property
    def target_empty(self) -> bool:
        return not self.existing_streams and not self.existing_tactical_keys

    def refusal(self, force: bool, *, models_only: bool = False) -> str | None:
        """Why restoring now would be wrong, or None. Only the model files count with `models_only`: Redis is not
        touched then."""
        if models_only and not any(name.startswith(MODELS_PREFIX) for name in self.archive.manifest.get("files", {})):
            return ("the archive holds no model bundles (made with --no-models, or from an empty models directory): "
                    "--models-only would restore nothing; restore the bundles from another archive, or install them "
                    "(`python -m models.compile --verify`)")
        if self.models_dir is not None and (problem := _unwritable_dir(self.models_dir)) is not None:
            return f"{problem}: name the models directory to restore into, or --no-models"
        if self.commands.unsupported and not models_only:
            return (f"the target Redis does not run {', '.join(self.commands.unsupported)} as this restore needs "
                    "(XSETID with ENTRIESADDED, XGROUP CREATE with ENTRIESREAD): restore into Redis 7.0 or newer; "
                    "nothing was restored")
        if self.commands.refused and not models_only:
            return (f"the Redis user may not run {', '.join(self.commands.refused)}, which this restore needs (an ACL "
                    "from before restores rebuilt streams entry by entry): apply runbook/acl/users.acl, then restore; "
                    "nothing was restored")
        if self.live_workers and not models_only:
            return (f"workers are running against the target ({', '.join(self.live_workers)}): stop them first, "
                    "then restore, then start them; to restore only the model bundles onto a new host, --models-only")
        if not force and not self.target_empty and not models_only:
            return (f"the target is not empty ({len(self.existing_streams)} streams, {self.existing_tactical_keys} "
                    "tactical:* keys): restore into an empty database; --force --yes replaces them, losing whatever "
                    "the target holds that the archive does not (stop the producers first); to restore only the model "
                    "bundles onto a new host, --models-only")
        if not force and self.model_conflicts:
            return (f"{len(self.model_conflicts)} files in {self.models_dir} differ from the archive's "
                    f"({', '.join(self.model_conflicts[:3])}): add --force --yes to overwrite them"
                    + (", or name another --models-dir" if models_only else ", or --no-models"))
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"archive": str(self.archive.path), "sha256": self.archive.sha256,
                "checksum_file": None if self.archive.checksum_file is None else str(self.archive.checksum_file),
                "created_at": self.archive.manifest["created_at"], "keys": self.archive.manifest["keys"],
                "target": None if not self.target_read else {
                    "existing_streams": list(self.existing_streams),
                    "existing_tactical_keys": self.existing_tactical_keys,
                    "live_workers": list(self.live_workers),
                    "refused_commands": list(self.commands.refused),
                    "unsupported_commands": list(self.commands.unsupported)},
                "models_dir": None if self.models_dir is None else str(self.models_dir),
                "model_conflicts": list(self.model_conflicts)}


def _count_keys(client: redis.Redis, pattern: str) -> int:
    return sum(len(chunk) for chunk in scan_unique_keys(client, pattern))


def _model_conflicts(archive: VerifiedArchive, models_dir: Path | None) -> tuple[str, ...]:
    if models_dir is None:
        return ()
    conflicts = []
    for name, spec in archive.manifest["files"].items():
        if name.startswith(MODELS_PREFIX):
            target = models_dir / name[len(MODELS_PREFIX):]
            if target.exists() and (not target.is_file() or sha256_path(target) != spec["sha256"]):
                conflicts.append(name[len(MODELS_PREFIX):])
    return tuple(sorted(conflicts))


def _unwritable_dir(directory: Path) -> str | None:
    """Why model files could not be written into `directory` (created if missing), or None: found before a --force
    restore clears Redis, not after."""
    if directory.is_symlink() and not directory.exists():
        return f"{directory} is a symlink to nothing"
    if directory.exists():
        if not directory.is_dir():
            return f"{directory} is not a directory"
        return None if os.access(directory, os.W_OK | os.X_OK) else f"{directory} is not writable"
    ancestor = directory.parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{directory} cannot be created: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{directory} cannot be created: {ancestor} is not writable"
    return None


def plan_restore(client: redis.Redis | None, archive: VerifiedArchive, models_dir: Path | None, *,
                 models_only: bool = False) -> RestorePlan:
    """What restoring `archive` meets. With `models_only` Redis is not read (nothing of it is restored: a count of its
    `tactical:*` keys could scan millions for nothing) and `client` may be None (Redis not reached): the plan is the
    model files alone."""
    if models_only:
        return RestorePlan(archive, (), 0, (), _model_conflicts(archive, models_dir), models_dir, target_read=False)
    if client is None:
        raise ValueError("only a models-only restore is planned without Redis")
    existing = tuple(name for name in BACKED_UP_STREAMS if client.exists(name))
    commands = CommandProbe() if models_only else probe_restore_commands(client, archive)
    return RestorePlan(archive, existing, _count_keys(client, TARGET_PATTERN), tuple(live_consumers(client)),
                       _model_conflicts(archive, models_dir), models_dir, commands)


PROBE_PREFIX = "tactical:restore:probe:"


def probe_restore_commands(client: redis.Redis, archive: VerifiedArchive) -> CommandProbe:
    """The commands restoring `archive` runs that the Redis user may not, or the server cannot, found before anything
    is cleared or restored: each is run on a scratch stream of this probe's own (`PROBE_PREFIX…`, deleted at once).
    Without it an ACL from before restores rebuilt streams (no XSETID), or a Redis 6, stopped a restore part way, the
    target half written."""
    key = f"{PROBE_PREFIX}{secrets.token_hex(8)}"
    copy = f"{key}:restored"
    files = archive.manifest["files"]
    probes: list[tuple[str, Callable[[redis.client.Pipeline], object]]] = [
        ("XADD", lambda pipe: pipe.execute_command("XADD", key, "1-1", "field", "value"))]
    if STREAM_ENTRIES_MEMBER in files:
        probes += [
            ("XSETID", lambda pipe: pipe.execute_command("XSETID", key, "1-1", "ENTRIESADDED", 1,
                                                         "MAXDELETEDID", "0-0")),
            ("XGROUP CREATE", lambda pipe: pipe.execute_command("XGROUP", "CREATE", key, "probe", "0",
                                                                "ENTRIESREAD", 0)),
            ("XGROUP CREATECONSUMER", lambda pipe: pipe.xgroup_createconsumer(key, "probe", "probe")),
            ("XCLAIM", lambda pipe: pipe.xclaim(key, "probe", "probe", min_idle_time=0, message_ids=["1-1"], idle=0,
                                                retrycount=1, force=True, justid=True)),
            ("XGROUP DESTROY", lambda pipe: pipe.xgroup_destroy(key, "probe")),
            ("PEXPIREAT", lambda pipe: pipe.pexpireat(key, int((time.time() + 600) * 1000))),  # deleted below anyway
        ]
    dumped = any(member in files for member in (COMPLETED_MEMBER, BREAKER_MEMBER, STREAMS_MEMBER))
    try:
        with client.pipeline(transaction=False) as pipe:
            for _, probe in probes:
                probe(pipe)
            pipe.dump(key)
            replies = pipe.execute(raise_on_error=False)
        verdicts = [(name, classify_probe_reply(reply)) for (name, _), reply in zip(probes, replies, strict=False)]
        payload = replies[-1]
        if dumped and isinstance(payload, bytes):
            try:
                client.restore(copy, 60_000, payload)
            except redis.ResponseError as exc:
                verdicts.append(("RESTORE", classify_probe_reply(exc)))
    finally:
        client.delete(key, copy)
    return CommandProbe(tuple(name for name, verdict in verdicts if verdict == "refused"),
                        tuple(name for name, verdict in verdicts if verdict == "unsupported"))


@dataclass(frozen=True, slots=True)
class RestoreReport:
    plan: RestorePlan
    cleared_keys: int
    restored: dict[str, int]
    expired: int  # keys whose expiry passed while they sat in the archive
    model_files_written: tuple[str, ...]
    environment: dict[str, str]  # the TACTICAL_* environment of the `tacticalctl backup` run
    worker_settings: dict[str, dict[str, Any]]  # each running worker's effective settings then, by consumer
    differences: tuple[str, ...] = field(default=())  # restored state vs. the manifest; empty when verified
    audit_id: str | None = None
    audit_error: str | None = None  # why a models-only restore's audit entry was not written; the restore stands
    # pending entries whose stream entry had been deleted before the backup: nothing to restore (a worker would
    # only ack them); "stream/group" → their ids
    pending_without_entry: dict[str, list[str]] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        return {**self.plan.as_dict(), "cleared_keys": self.cleared_keys, "restored": self.restored,
                "expired": self.expired, "model_files_written": list(self.model_files_written),
                "environment": self.environment, "worker_settings": self.worker_settings, "verified": self.verified,
                "differences": list(self.differences), "audit_id": self.audit_id, "audit_error": self.audit_error,
                "pending_without_entry": self.pending_without_entry}


def _clear_target(client: redis.Redis) -> int:
    cleared = int(client.delete(*BACKED_UP_STREAMS))
    for chunk in scan_unique_keys(client, TARGET_PATTERN):
        cleared += int(client.delete(*chunk))
    return cleared


def _restore_lines(client: redis.Redis, lines: IO[bytes], now_ms: int, progress: Progress,
                   member: str) -> tuple[int, list[str]]:
    """RESTORE a member's keys; (restored, the keys that expired in the archive and were left out)."""
    stage = f"restore {_MEMBER_KEYS[member][0]}"
    restored = 0
    expired: list[str] = []
    batch: list[DumpedKey] = []

    def flush() -> None:
        nonlocal restored
        with client.pipeline(transaction=False) as pipe:
            for dumped in batch:
                ttl, absolute = (0, False) if dumped.expire_at_ms is None else (dumped.expire_at_ms, True)
                pipe.restore(dumped.key, ttl, dumped.payload, absttl=absolute)
            replies = pipe.execute(raise_on_error=False)
        for dumped, reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                hint = (" (the target Redis is older than the source: restore into the same or a newer version)"
                        if "payload version" in str(reply) else "")
                raise BackupError(f"RESTORE {as_text(dumped.key)} failed: {reply}{hint}")
        restored += len(batch)
        batch.clear()
        progress(stage, restored, None)

    for line in lines:
        dumped = DumpedKey.from_line(line)  # its key was checked with the archive (open_archive)
        if dumped.expire_at_ms is not None and dumped.expire_at_ms <= now_ms:
            expired.append(as_text(dumped.key))
            continue
        batch.append(dumped)
        if len(batch) >= CHUNK:
            flush()
    if batch:
        flush()
    return restored, expired


def _rebuild_streams(client: redis.Redis, lines: IO[bytes], now_ms: int, progress: Progress) -> RebuildCounts:
    rebuilder = StreamRebuilder(client, now_ms)
    for count, line in enumerate(lines, 1):
        rebuilder.add(line)  # its stream was checked with the archive (open_archive)
        if count % CHUNK == 0:
            progress("restore streams, entry by entry", rebuilder.counts.entries, None)
    return rebuilder.finish()


def _write_model_file(target: Path, handle: IO[bytes]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.restoring")
    with partial.open("wb") as out:
        shutil.copyfileobj(handle, out)
    os.replace(partial, target)


def verify_restored_models(models_dir: Path, files: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """Model files in `models_dir` that are missing or differ from the archive's sha256."""
    differences = []
    for name, described in files.items():
        if not name.startswith(MODELS_PREFIX):
            continue
        relative = name[len(MODELS_PREFIX):]
        target = models_dir / relative
        if not target.is_file():
            differences.append(f"model file {relative} is missing from {models_dir}")
        elif sha256_path(target) != described["sha256"]:
            differences.append(f"model file {relative} differs from the backup (sha256)")
    return tuple(differences)


def verify_restored(client: redis.Redis, expected: list[StreamState],
                    pending_without_entry: Mapping[str, list[str]] | None = None) -> tuple[str, ...]:
    """Differences between the streams in Redis and the manifest's (lengths, ids, groups, pending entries).
    `pending_without_entry` ("stream/group" → ids): pending entries the restore could not bring back, expected
    missing."""
    names = tuple(s.name for s in expected)
    actual = read_stream_states(client, names)
    differences = []
    for want, got in zip(expected, actual, strict=True):
        want = _without_pending(want, pending_without_entry or {})
        for label, a, b in (("exists", want.exists, got.exists), ("length", want.length, got.length),
                            ("last id", want.last_generated_id, got.last_generated_id),
                            ("groups", list(want.groups), list(got.groups)),
                            ("pending entries", list(want.pending), list(got.pending))):
            if a != b:
                differences.append(f"{want.name}: {label} is {b!r}, the backup has {a!r}")
    return tuple(differences)


def _without_pending(state: StreamState, gone: Mapping[str, list[str]]) -> StreamState:
    """`state` less the pending entries in `gone` ("stream/group" → ids)."""
    groups = tuple({**group, "pending": group["pending"] - len(gone.get(f"{state.name}/{group['name']}", ()))}
                   for group in state.groups)
    ids = set(gone.get(f"{state.name}/{CONSUMER_GROUP}", ()))
    return replace(state, groups=groups, pending=tuple(row for row in state.pending if row["id"] not in ids))


def restore_backup(
    client: redis.Redis | None,
    archive: VerifiedArchive,
    *,
    models_dir: Path | None,
    force: bool,
    actor: str,
    progress: Progress = no_progress,
    models_only: bool = False,
) -> RestoreReport:
    """Restore a verified archive into an empty target (or, with `force`, replace the target's tactical keys).
    With `models_only`, only the model bundles, into `models_dir`: Redis is left as it is (a lost worker host), and
    needed only for the audit entry. Its client may then be None (Redis not reached: a new host before Redis is back),
    or Redis may refuse the entry: the bundles are restored and verified all the same, and the report has no
    `audit_id` (with a client, `audit_error` says why; without one, the caller knows)."""
    if models_only and models_dir is None:
        raise RestoreRefused("--models-only needs a models directory to restore into")
    plan = plan_restore(client, archive, models_dir, models_only=models_only)
    reason = plan.refusal(force, models_only=models_only)
    if reason:
        raise RestoreRefused(reason)
    # Where the archive's streams and keys go: nowhere with `models_only` (plan_restore refused a None client else).
    target_redis = None if models_only else client
    if models_only and client is not None:  # otherwise tactical_alerts is restored from the archive (a key there
        require_audit_trail(client)  # refuses or is cleared)
    cleared = _clear_target(target_redis) if target_redis is not None and force and not plan.target_empty else 0
    try:
        members = _restore_members(target_redis, archive, models_dir, progress)
    except (BackupError, redis.RedisError, OSError, tarfile.TarError) as exc:
        raise BackupError(f"restore stopped part way, the target holds part of the backup: {exc}. "
                          "Fix the cause and run the restore again with --force --yes") from None
    expired_streams = set(members.expired) & set(BACKED_UP_STREAMS)
    differences = (() if target_redis is None else verify_restored(
        target_redis, [s for s in archive.streams if s.name not in expired_streams], members.pending_without_entry)) + (
        () if models_dir is None else verify_restored_models(models_dir, archive.manifest["files"]))
    what = "the model bundles of " if models_only else ""
    entry = {"actor": actor, "action": "restore",
             "detail": f"restored {what}{archive.path.name} (backup of {archive.manifest['created_at']})"
                       + ("" if not differences else f"; {len(differences)} differences from the manifest"),
             "archive": str(archive.path), "sha256": archive.sha256, "forced": str(force).lower(),
             "models_only": str(models_only).lower()}
    audit_id: str | None
    audit_error = None
    if client is None:
        audit_id = None
    elif models_only:  # the bundles are in place whether or not Redis takes the entry
        audit_id, audit_error = audit_done(client, **entry)
    else:
        audit_id = as_text(audit(client, **entry))
    return RestoreReport(plan, cleared, members.counts, len(members.expired), tuple(members.models_written),
                         members.environment, members.workers, differences, audit_id, audit_error,
                         members.pending_without_entry)


# Per process, not per deployment: each worker names its own consumer (host:pid by default).
_PER_PROCESS_SETTINGS = frozenset({"consumer"})


def config_env_file(environment: Mapping[str, str], workers: Mapping[str, Mapping[str, Any]]) -> str:
    """The archived configuration as an env file (`--config-out`). The running workers' settings when the backup saw
    any (what they ran with, from their heartbeats), a worker that differed from the first noted beside the value;
    then the variables of the backup run's environment that are no worker setting (password files, TLS, ...). With no
    running worker, that environment alone. Secrets were never archived; URL passwords read `***`."""
    lines: list[str] = []
    names: set[str] = set()
    if workers:
        first, *others = sorted(workers)
        lines.append(f"# the settings of the running workers when the backup was taken ({', '.join(sorted(workers))})")
        for name, value in sorted(workers[first].items()):
            if name in _PER_PROCESS_SETTINGS:
                continue
            variable = WorkerSettings.env_name(name)
            names.add(variable)
            differing = [f"{other}: {workers[other].get(name)!s}" for other in others
                         if workers[other].get(name) != value]
            if differing:
                lines.append(f"# {variable} differs between workers; {first} ran with the value below, "
                             + "; ".join(differing))
            lines.append(f"{variable}={'' if value is None else value}")
        rest = {name: value for name, value in environment.items() if name not in names}
        if rest:
            lines.append("# from the environment of the `tacticalctl backup` run (no worker setting)")
    else:
        rest = dict(environment)
        lines.append("# the TACTICAL_* environment of the `tacticalctl backup` run (no worker was running: run backups "
                     "with the workers' environment)")
    lines += [f"{name}={value}" for name, value in sorted(rest.items())]
    return "".join(f"{line}\n" for line in lines)


@dataclass(slots=True)
class _RestoredMembers:
    """What a restore put back from the archive's members."""

    counts: dict[str, int] = field(default_factory=dict)  # by kind: streams, stream_entries, completed keys, ...
    expired: list[str] = field(default_factory=list)  # keys (streams among them) whose expiry passed: not restored
    models_written: list[str] = field(default_factory=list)  # relative to the models directory
    environment: dict[str, str] = field(default_factory=dict)  # of the backup run
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)  # the running workers' settings, by consumer
    pending_without_entry: dict[str, list[str]] = field(default_factory=dict)  # by stream: entries trimmed away


def _restore_members(client: redis.Redis | None, archive: VerifiedArchive, models_dir: Path | None,
                     progress: Progress) -> _RestoredMembers:
    """`client` None: the Redis members are skipped and Redis is not touched (a models-only restore)."""
    now_ms = 0 if client is None else server_now_ms(client)
    members = _RestoredMembers()
    restored, expired, written = members.counts, members.expired, members.models_written
    with tarfile.open(archive.path, mode="r:gz") as tar:
        for name, handle in _members(tar):
            if name in _MEMBER_KEYS:
                if client is None:
                    continue
                what = _MEMBER_KEYS[name][0]
                try:
                    if name == STREAM_ENTRIES_MEMBER:
                        counts = _rebuild_streams(client, handle, now_ms, progress)
                        count, stream_entries = counts.streams, counts.entries
                        restored["stream_entries"] = restored.get("stream_entries", 0) + stream_entries
                        members.pending_without_entry = counts.pending_without_entry
                        lapsed = counts.expired
                    else:
                        count, lapsed = _restore_lines(client, handle, now_ms, progress, name)
                    expired.extend(lapsed)
                except _MALFORMED as exc:
                    raise _malformed(archive.path, name, exc) from None
                restored[what] = restored.get(what, 0) + count
            elif name == CONFIG_MEMBER:
                try:
                    config = json.load(handle)
                    members.environment = {str(k): str(v) for k, v in config.get("environment", {}).items()}
                    members.workers = {str(name): dict(values) for name, values in config.get("workers", {}).items()}
                except _MALFORMED as exc:
                    raise _malformed(archive.path, name, exc) from None
            elif name.startswith(MODELS_PREFIX) and models_dir is not None:
                relative = name[len(MODELS_PREFIX):]
                target = models_dir / relative
                if not (target.is_file() and sha256_path(target) == archive.manifest["files"][name]["sha256"]):
                    _write_model_file(target, handle)
                    written.append(relative)
                    progress("model files", len(written), None)
    return members
