"""Backup: the model bundles, the non-secret configuration and the Redis state that matters, as one
archive whose every member is pinned by SHA-256.

Consistency. The streams must agree with each other: an input entry acknowledged by the group has its decision
in `tactical_decisions` (and its command, or its dead letter), an entry still pending has not. The worker changes
them together in one Lua commit, so the backup takes them together: a COPY of every stream — entries with their
ids, consumer groups with `last-delivered-id` and `entries-read`, the pending entries with consumer and delivery
count — in one MULTI/EXEC, which no commit can interleave. The copies are then read in short ranges while Redis
goes on serving the workers, archived entry by entry (`worker.stream_archive`), and deleted. A DUMP of each stream in
the transaction, as format 1 did, held Redis for the whole serialisation (~0.8 s at 50,000 + 50,000 entries); it is
still how a backup proceeds when Redis has no memory to spare for the copies (maxmemory), and said so.

The `tactical:completed:{cid}` keys are many and must not stall Redis inside that transaction, and they need not:
each is written once, in the same commit as its decision, holds the decision's stream id, and keeps the expiry it
was written with. So they are read after EXEC with SCAN and pipelined DUMPs, and a key whose decision id is newer
than the snapshot's last decision is left out: it did not exist at the snapshot (keeping it would make a restored
pending entry look done, and lose it). Breaker and restart counters are read the same way; they need no agreement
with the streams. Not backed up: `tactical:processing:*` leases (the pending entries they guard are reclaimed) and
heartbeats (liveness of processes that will not exist after a restore).

Expiries are kept as absolute times (PEXPIRETIME, then RESTORE … ABSTTL or PEXPIREAT): time spent in the archive
counts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import redis

from worker.alerts import audit, require_audit_trail
from worker.heartbeat import live_consumers
from worker.names import (
    ALL_STREAMS,
    BREAKER_PREFIX,
    COMPLETED_PREFIX,
    CONSUMER_GROUP,
    DECISIONS_STREAM,
)
from worker.redis_text import as_text, server_label
from worker.security import effective_settings, non_secret_environment
from worker.settings import WorkerSettings
from worker.stream_archive import CHUNK, FROZEN_TTL_MS, frozen_key, write_stream
from worker.stream_entries import parse_stream_id, time_reply_ms, time_reply_us

BACKUP_FORMAT = "tactical-backup/2"  # 2: streams archived entry by entry (STREAM_ENTRIES_MEMBER)
READABLE_FORMATS = ("tactical-backup/1", BACKUP_FORMAT)  # a format-1 archive holds the streams as DUMPs only
MANIFEST_MEMBER = "manifest.json"
CONFIG_MEMBER = "config/settings.json"
STREAMS_MEMBER = "redis/streams.jsonl"  # DUMPs: a stream name holding another type; every stream in a DUMP snapshot
STREAM_ENTRIES_MEMBER = "redis/stream_entries.jsonl"  # `worker.stream_archive` records of the copied streams
COMPLETED_MEMBER = "redis/completed.jsonl"
BREAKER_MEMBER = "redis/breaker.jsonl"
MODELS_PREFIX = "models/"
BACKED_UP_STREAMS = ALL_STREAMS
PENDING_DETAIL_LIMIT = 100_000  # pending entries listed in the manifest; the archive holds them all
COPY_MEMORY_MARGIN = 0.9  # copies are taken only if Redis stays below this share of its maxmemory with them

Progress = Callable[[str, int, "int | None"], None]  # (stage, done, total or None)

BACKUP_ACTION = "backup"  # its tactical_alerts kind: the daily check looks for it


def no_progress(stage: str, done: int, total: int | None) -> None:
    return None


class BackupError(Exception):
    """A backup or restore cannot proceed; the message says what to do."""


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---- one key, dumped -------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DumpedKey:
    key: bytes
    payload: bytes  # DUMP output: Redis' own serialisation, checksummed, restored byte for byte
    expire_at_ms: int | None  # absolute Unix time in ms; None: no expiry

    def to_line(self) -> str:
        return json.dumps({"key": self.key.decode("utf-8", "surrogateescape"), "expire_at_ms": self.expire_at_ms,
                           "dump": base64.b64encode(self.payload).decode("ascii")}) + "\n"

    @classmethod
    def from_line(cls, line: str | bytes) -> DumpedKey:
        doc = json.loads(line)
        return cls(str(doc["key"]).encode("utf-8", "surrogateescape"), base64.b64decode(doc["dump"]),
                   None if doc["expire_at_ms"] is None else int(doc["expire_at_ms"]))


def _expire_at(reply: Any) -> int | None:
    """PEXPIRETIME: -1 no expiry, -2 no key."""
    return int(reply) if isinstance(reply, int) and reply >= 0 else None


# ---- the streams, read in one transaction ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StreamState:
    """What a stream looked like: enough to check a restore against, and for an operator to read."""

    name: str
    exists: bool
    length: int = 0
    last_generated_id: str = "0-0"
    groups: tuple[dict[str, Any], ...] = ()  # name, last_delivered_id, entries_read, pending, consumers
    pending: tuple[dict[str, Any], ...] = ()  # of the worker's group: id, consumer, deliveries
    other_type: str | None = None  # the key holds this type, not a stream (someone else wrote it)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "exists": self.exists, "length": self.length,
                "last_generated_id": self.last_generated_id, "groups": list(self.groups),
                "pending": list(self.pending), "pending_listed_up_to": PENDING_DETAIL_LIMIT,
                "other_type": self.other_type}

    def renamed(self, name: str) -> StreamState:
        return replace(self, name=name)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> StreamState:
        return cls(str(doc["name"]), bool(doc["exists"]), int(doc["length"]), str(doc["last_generated_id"]),
                   tuple(doc["groups"]), tuple(doc["pending"]), doc.get("other_type"))


def _queue_stream_state(pipe: Any, name: str, group: str) -> None:
    pipe.xinfo_stream(name)
    pipe.xinfo_groups(name)
    pipe.xpending_range(name, group, min="-", max="+", count=PENDING_DETAIL_LIMIT)


def _stream_state(name: str, info: Any, groups: Any, pending: Any) -> StreamState:
    if isinstance(info, Exception):
        return StreamState(name, exists=False)
    group_rows = () if isinstance(groups, Exception) else tuple(
        {"name": as_text(g["name"]), "last_delivered_id": as_text(g["last-delivered-id"]),
         "entries_read": g.get("entries-read"), "pending": int(g["pending"]), "consumers": int(g["consumers"])}
        for g in groups
    )
    pending_rows = () if isinstance(pending, Exception) else tuple(
        {"id": as_text(p["message_id"]), "consumer": as_text(p["consumer"]), "deliveries": int(p["times_delivered"])}
        for p in pending
    )
    return StreamState(name, True, int(info["length"]), as_text(info["last-generated-id"]), group_rows, pending_rows)


def read_stream_states(client: redis.Redis, names: tuple[str, ...] = BACKED_UP_STREAMS,
                       group: str = CONSUMER_GROUP, *, transaction: bool = True) -> list[StreamState]:
    with client.pipeline(transaction=transaction) as pipe:
        for name in names:
            _queue_stream_state(pipe, name, group)
        replies = pipe.execute(raise_on_error=False)
    return [_stream_state(name, *replies[3 * i: 3 * i + 3]) for i, name in enumerate(names)]


@dataclass(frozen=True, slots=True)
class FrozenStream:
    """A stream's copy, taken in the snapshot's transaction, to be archived entry by entry (`write_stream`)."""

    name: str
    key: str
    expire_at_ms: int | None


@dataclass(frozen=True, slots=True)
class StreamsSnapshot:
    server_time_ms: int
    states: tuple[StreamState, ...]
    dumps: tuple[DumpedKey, ...]  # streams (a DUMP snapshot) and stream names holding another type, as DUMPs
    held_ms: float = 0.0  # how long the transaction held Redis: serving nobody else (Redis's clock, in it)
    frozen: tuple[FrozenStream, ...] = ()  # copies to read, then delete (`release`)
    method: str = "copy"  # "copy", or "dump" with the reason the copies were not taken

    def state(self, name: str) -> StreamState:
        return next(s for s in self.states if s.name == name)

    @property
    def decided_up_to(self) -> tuple[int, int]:
        """The newest decision id the snapshot holds: completed keys with a newer one came after it."""
        decisions = self.state(DECISIONS_STREAM)
        if decisions.exists:
            return parse_stream_id(decisions.last_generated_id)
        return (self.server_time_ms - 1, 2**63)  # no decisions stream: only keys from before the snapshot's ms

    def release(self, client: redis.Redis) -> None:
        """Delete the copies. Best effort: copies a Redis error leaves behind expire within FROZEN_TTL_MS, and the
        error that stopped the backup is the one to report."""
        if self.frozen:
            with contextlib.suppress(redis.RedisError):
                client.unlink(*(frozen.key for frozen in self.frozen))


def snapshot_streams(client: redis.Redis, names: tuple[str, ...] = BACKED_UP_STREAMS,
                     group: str = CONSUMER_GROUP) -> StreamsSnapshot:
    """COPY every stream in one MULTI/EXEC (no worker commit falls between two of them), then read each copy's state.
    Where Redis has no memory to spare for the copies, DUMP them in the transaction instead (`dump_snapshot`).
    The caller archives `frozen` and then `release`s it."""
    no_room = _no_room_for_copies(client, names)
    if no_room is not None:
        return dump_snapshot(client, names, group, reason=no_room)
    token = secrets.token_hex(6)
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.time()
            for name in names:
                pipe.type(name)
                pipe.pexpiretime(name)
                pipe.copy(name, frozen_key(token, name), replace=True)
                pipe.pexpire(frozen_key(token, name), FROZEN_TTL_MS)
            pipe.time()  # the transaction's last command: with the first, how long it held Redis
            replies = pipe.execute(raise_on_error=False)
        copied = [(name, *replies[1 + 4 * i: 5 + 4 * i]) for i, name in enumerate(names)]
        refused = next((reply for *_, reply, _ in copied if isinstance(reply, Exception)), None)
        if refused is not None:
            raise refused
    except redis.ResponseError as exc:  # refused when queued (the whole transaction), or when run
        client.unlink(*(frozen_key(token, name) for name in names))
        if isinstance(exc, redis.exceptions.NoPermissionError):  # an ACL from before backups copied
            return dump_snapshot(client, names, group, reason="this Redis user may not COPY: give it the ACL in "
                                 "runbook/acl, and backups hold Redis only for the copies")
        if "OOM" in str(exc) or "maxmemory" in str(exc):  # maxmemory reached between the check and the COPY
            return dump_snapshot(client, names, group, reason=f"COPY refused ({exc})")
        raise BackupError(f"COPY of the streams failed: {exc}") from None
    states, dumps = [], []
    streams = [FrozenStream(name, frozen_key(token, name), _expire_at(expire))
               for name, kind, expire, _, _ in copied if as_text(kind) == "stream"]
    copy_states = read_stream_states(client, tuple(s.key for s in streams), group, transaction=False)  # one trip
    state_of = {s.name: state.renamed(s.name) for s, state in zip(streams, copy_states, strict=True)}
    for name, kind, expire, _, _ in copied:
        key, kind = frozen_key(token, name), as_text(kind)
        if kind == "stream":
            states.append(state_of[name])
        elif kind == "none":
            states.append(StreamState(name, exists=False))
        else:  # there, but no stream: archived as it is, and said
            payload = client.dump(key)
            client.unlink(key)
            states.append(StreamState(name, exists=False, other_type=kind))
            if payload is not None:
                dumps.append(DumpedKey(name.encode(), payload, _expire_at(expire)))
    return StreamsSnapshot(time_reply_ms(replies[0]), tuple(states), tuple(dumps),
                           held_ms=(time_reply_us(replies[-1]) - time_reply_us(replies[0])) / 1e3,
                           frozen=tuple(streams))


def _no_room_for_copies(client: redis.Redis, names: tuple[str, ...]) -> str | None:
    """Why copies of the streams would not fit under Redis's maxmemory (evicting keys or refusing writes), or None."""
    memory = client.info("memory")
    limit = int(memory.get("maxmemory", 0))
    if limit <= 0:
        return None
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.memory_usage(name)
        needed = sum(int(size or 0) for size in pipe.execute())
    used = int(memory.get("used_memory", 0))
    if used + needed <= COPY_MEMORY_MARGIN * limit:
        return None
    return (f"copies of the streams ({needed} bytes) would take Redis past {COPY_MEMORY_MARGIN:.0%} of its maxmemory "
            f"({used} of {limit} bytes used)")


def dump_snapshot(client: redis.Redis, names: tuple[str, ...] = BACKED_UP_STREAMS, group: str = CONSUMER_GROUP,
                  *, reason: str) -> StreamsSnapshot:
    """DUMP every stream and read its state in one MULTI/EXEC: Redis serves nobody else until every stream is
    serialised. `reason`: why the copies were not taken."""
    with client.pipeline(transaction=True) as pipe:
        pipe.time()
        for name in names:
            pipe.dump(name)
            pipe.pexpiretime(name)
            _queue_stream_state(pipe, name, group)
        pipe.time()  # the transaction's last command: with the first, how long it held Redis
        replies = pipe.execute(raise_on_error=False)
    states, dumps = [], []
    for i, name in enumerate(names):
        payload, expire, info, groups, pending = replies[1 + 5 * i: 6 + 5 * i]
        if isinstance(payload, Exception):
            raise BackupError(f"DUMP {name} failed: {payload}")
        state = _stream_state(name, info, groups, pending)
        if payload is not None and not state.exists:  # there, but no stream: archived as it is, and said
            state = replace(state, other_type=as_text(client.type(name)))
        states.append(state)
        if payload is not None:
            dumps.append(DumpedKey(name.encode(), payload, _expire_at(expire)))
    return StreamsSnapshot(time_reply_ms(replies[0]), tuple(states), tuple(dumps),
                           held_ms=(time_reply_us(replies[-1]) - time_reply_us(replies[0])) / 1e3,
                           method=f"dump: {reason}")


# ---- keys read after the transaction ---------------------------------------------------------------------------

def scan_unique_keys(client: redis.Redis, pattern: str) -> Iterator[list[bytes]]:
    """Every key matching `pattern` once (SCAN may repeat a key), in chunks."""
    seen: set[bytes] = set()
    chunk: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        if key in seen:
            continue
        seen.add(key)
        chunk.append(key)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _decided_after(value: Any, cutoff: tuple[int, int]) -> bool:
    if not isinstance(value, bytes):
        return False
    try:
        return parse_stream_id(value) > cutoff
    except ValueError:
        return False  # not a decision id: not written by a commit, nothing to order it by


def write_scanned_keys(client: redis.Redis, pattern: str, out: IO[str], *, decided_up_to: tuple[int, int] | None,
                       progress: Progress, stage: str) -> tuple[int, int]:
    """DUMP every key matching `pattern` into `out`; with `decided_up_to`, leave out keys whose value is a newer
    decision id. Returns (written, left out)."""
    written = left_out = 0
    per_key = 2 if decided_up_to is None else 3
    for chunk in scan_unique_keys(client, pattern):
        with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.dump(key)
                pipe.pexpiretime(key)  # type: ignore[arg-type]  # annotated str in redis-py; a bytes key works
                if decided_up_to is not None:
                    pipe.get(key)
            replies = pipe.execute(raise_on_error=False)
        for i, key in enumerate(chunk):
            payload, expire = replies[per_key * i], replies[per_key * i + 1]
            if payload is None or isinstance(payload, Exception):
                continue  # expired or deleted since SCAN
            if decided_up_to is not None and _decided_after(replies[per_key * i + 2], decided_up_to):
                left_out += 1
                continue
            out.write(DumpedKey(key, payload, _expire_at(expire)).to_line())
            written += 1
        progress(stage, written, None)
    return written, left_out


# ---- the archive -----------------------------------------------------------------------------------------------

def sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_path(archive: Path) -> Path:
    """The `sha256sum`-format file beside the archive: `sha256sum -c FILE.tar.gz.sha256` checks it too."""
    return archive.with_name(archive.name + ".sha256")


def _model_files(models_dir: Path) -> list[Path]:
    """Bundles and CURRENT; not caches nor hidden files (the promotion lock, a compilation's staging directory). A
    bundle directory that is a symbolic link is followed, as the worker follows it: `rglob` from the models directory
    does not, and such a bundle — CURRENT's, say — was left out of the archive without a word."""
    def wanted(path: Path) -> bool:
        return path.is_file() and not any(part == "__pycache__" or part.startswith(".")
                                          for part in path.relative_to(models_dir).parts)

    files: list[Path] = []
    archived: set[Path] = set()
    # Directories first, then links to directories: a link is followed only to a bundle (a manifest) not archived
    # already — not an alias of one here (`current -> <version>`), a link to the directory itself, or to a tree
    # that is no bundle.
    tops = sorted(models_dir.iterdir(), key=lambda top: (top.is_symlink(), top.name))
    for top in tops:
        if top.is_dir():  # a link to a directory too: rglob below it walks the directory linked to
            target = top.resolve()
            if top.is_symlink() and (target in archived or not (top / "manifest.json").is_file()):
                continue
            archived.add(target)
            files += [path for path in top.rglob("*") if wanted(path)]
        elif wanted(top):
            files.append(top)
    return sorted(files)


def _bundle_report(models_dir: Path) -> dict[str, Any]:
    from models.bundle import CURRENT_FILE, BundleError, read_verified_agents

    bundles = []
    for manifest in sorted(models_dir.glob("*/manifest.json")):
        try:
            verified, _ = read_verified_agents(manifest.parent)
            bundles.append({"version": verified.version, "verified": True, "problem": None})
        except BundleError as exc:
            bundles.append({"version": manifest.parent.name, "verified": False, "problem": str(exc)})
    current = models_dir / CURRENT_FILE
    return {"dir": str(models_dir), "current": current.read_text().strip() if current.is_file() else None,
            "bundles": bundles}


def _private_file(path: Path) -> IO[bytes]:
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def _tar_member_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o600
    return info


def running_worker_settings(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """The effective settings of each running worker, by consumer, as its heartbeat publishes them (passwords masked):
    what the workers run with, which the environment of the `tacticalctl backup` run may not be."""
    return {consumer: beat["settings"] for consumer, beat in live_consumers(client).items()
            if isinstance(beat.get("settings"), dict)}


@dataclass(frozen=True, slots=True)
class BackupReport:
    archive: Path
    sha256: str
    size_bytes: int
    manifest: dict[str, Any]
    audit_id: str | None

    def as_dict(self) -> dict[str, Any]:
        m = self.manifest
        return {"archive": str(self.archive), "checksum_file": str(checksum_path(self.archive)),
                "sha256": self.sha256, "bytes": self.size_bytes, "created_at": m["created_at"],
                "redis": m["redis"], "keys": m["keys"], "models": m["models"], "config": m["config"],
                "audit_id": self.audit_id}


def create_backup(
    client: redis.Redis,
    archive: Path,
    *,
    settings: WorkerSettings,
    models_dir: Path | None,
    actor: str,
    source_url: str,
    environ: Mapping[str, str] | None = None,
    overwrite: bool = False,
    progress: Progress = no_progress,
) -> BackupReport:
    """Write `archive` (tar.gz) and `archive.sha256`, and audit the backup in `tactical_alerts`."""
    archive = archive.absolute()
    if archive.is_dir():
        raise BackupError(f"{archive} is a directory: name the archive file, e.g. {archive / 'tactical.tar.gz'}")
    if archive.is_symlink() or (archive.exists() and not archive.is_file()):
        raise BackupError(f"{archive} is not a regular file (a link, a device, a pipe): name the archive file itself")
    if archive.exists() and not overwrite:
        raise BackupError(f"{archive} exists: choose another file name, or add --force to overwrite it")
    if not archive.parent.is_dir():
        raise BackupError(f"{archive.parent} is not a directory")
    if models_dir is not None and not models_dir.is_dir():
        raise BackupError(f"models directory {models_dir} does not exist: pass --models-dir, or --no-models")
    require_audit_trail(client)  # before the archive is written: a backup is not left behind unaudited
    try:
        staging_dir = tempfile.TemporaryDirectory(prefix=".tactical-backup-", dir=archive.parent)
    except OSError as exc:
        raise BackupError(f"cannot write in {archive.parent}: {exc.strerror or exc}") from None
    with staging_dir as tmp:
        staging = Path(tmp)
        (staging / "redis").mkdir()
        progress("snapshot of the streams (MULTI/EXEC)", 0, 1)
        snapshot = snapshot_streams(client)
        progress("snapshot of the streams (MULTI/EXEC)", 1, 1)
        try:
            with (staging / STREAMS_MEMBER).open("w") as out:
                for dumped in snapshot.dumps:
                    out.write(dumped.to_line())
            with (staging / STREAM_ENTRIES_MEMBER).open("w") as out:
                for done, frozen in enumerate(snapshot.frozen, 1):
                    write_stream(client, frozen.name, frozen.key, out, frozen.expire_at_ms)
                    progress("streams, entry by entry", done, len(snapshot.frozen))
        finally:
            snapshot.release(client)
        with (staging / COMPLETED_MEMBER).open("w") as out:
            completed, newer = write_scanned_keys(client, COMPLETED_PREFIX + "*", out,
                                                  decided_up_to=snapshot.decided_up_to, progress=progress,
                                                  stage="completed keys")
        with (staging / BREAKER_MEMBER).open("w") as out:
            breaker, _ = write_scanned_keys(client, BREAKER_PREFIX + "*", out, decided_up_to=None,
                                            progress=progress, stage="breaker and restart counters")
        (staging / "config").mkdir()
        workers = running_worker_settings(client)
        config = {"settings": effective_settings(settings), "environment": non_secret_environment(environ),
                  "workers": workers}
        (staging / CONFIG_MEMBER).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        models: dict[str, Any] | None = None
        if models_dir is not None:
            sources = _model_files(models_dir)
            for done, source in enumerate(sources, 1):
                target = staging / MODELS_PREFIX / source.relative_to(models_dir).as_posix()
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                progress("model files", done, len(sources))
            models = _bundle_report(staging / "models") | {"dir": str(models_dir)}
            # Said, not refused: a backup during an incident (CURRENT broken) must still save the Redis state.
            models["current_missing"] = (models["current"] is not None and models["current"]
                                         not in {bundle["version"] for bundle in models["bundles"]})
            # The workers' own models directories, where they differ from the one archived: bundles promoted there
            # would be missing from a restore.
            models["workers_elsewhere"] = sorted({
                str(dir_) for worker in workers.values()
                if (dir_ := worker.get("models_dir")) and Path(str(dir_)).resolve() != models_dir.resolve()})
        members = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        streams = sum(state.exists or state.other_type is not None for state in snapshot.states)
        server_info = client.info("server")
        manifest = {
            "format": BACKUP_FORMAT,
            "created_at": _utc_now(),
            "created_by": actor,
            "redis": {
                "source": source_url,
                "version": as_text(server_info.get("redis_version", "unknown")),  # Redis-compatible, on Valkey too
                "server": server_label(server_info),
                "snapshot_time_ms": snapshot.server_time_ms,
                "snapshot_held_ms": round(snapshot.held_ms, 3),
                "method": (("streams: COPY in one MULTI/EXEC, the copies read entry by entry after it"
                            if snapshot.method == "copy" else f"streams: DUMP in one MULTI/EXEC ({snapshot.method})")
                           + "; completed keys: SCAN+DUMP after it, newer ones left out"),
                "streams": [s.as_dict() for s in snapshot.states],
            },
            "keys": {"streams": streams, "completed": completed,
                     "completed_newer_than_snapshot": newer, "breaker": breaker},
            "config": {"workers": sorted(workers)},  # whose settings config/settings.json holds
            "models": models,
            "files": {name: {"sha256": sha256_path(staging / name), "bytes": (staging / name).stat().st_size}
                      for name in members},
        }
        (staging / MANIFEST_MEMBER).write_text(json.dumps(manifest, indent=2) + "\n")
        partial = archive.with_name(archive.name + ".partial")
        try:
            with _private_file(partial) as raw, tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
                for done, name in enumerate([MANIFEST_MEMBER, *members], 1):
                    tar.add(staging / name, arcname=name, recursive=False, filter=_tar_member_filter)
                    progress("archive", done, len(members) + 1)
                tar.close()
                raw.flush()
                os.fsync(raw.fileno())
            checksum_path(archive).unlink(missing_ok=True)  # an old archive's: never left beside the new one
            os.replace(partial, archive)
        finally:
            partial.unlink(missing_ok=True)
    digest = sha256_path(archive)
    with _private_file(checksum_path(archive)) as out:
        out.write(f"{digest}  {archive.name}\n".encode())
    audit_id = audit(client, actor=actor, action=BACKUP_ACTION,
                     detail=f"backup written to {archive}: {streams} streams, "
                            f"{completed} completed keys",
                     archive=str(archive), sha256=digest)
    return BackupReport(archive, digest, archive.stat().st_size, manifest, as_text(audit_id))
