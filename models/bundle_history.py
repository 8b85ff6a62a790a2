"""What the audit trail (`tactical_alerts`) says about model bundles: which one CURRENT replaced, and which ones an
operator has already decided on. Kept apart from `models.promotion`, which loads torch, so the daily checks can ask.

Hosts share one Redis, and a host may have several models directories: every promotion and rollback records where
it happened (`bundle_place`: the directory's absolute path, and the host for the reader), and each directory's history
is read on its own. By path, not by host: in a container the host name changes with every recreate, and the compose
replicas share one models volume at one path. Separate copies at the same path on separate hosts share a history.
An entry without a directory (older ones) matches any; a relative path is read from the current directory.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Mapping
from pathlib import Path

import redis

from models.bundle import read_current_version
from worker.alerts import recent_alerts

PROMOTE_ACTION = "model_promote"
REFUSED_ACTION = "model_promote_refused"  # the bundle was judged: it failed verification or the held-out comparison
ROLLBACK_ACTION = "model_rollback"
ROLLBACK_REFUSED_ACTION = "model_rollback_refused"  # the bundle failed verification
# Could not be attempted (another promotion running, CURRENT not writable): nothing was judged, nothing ruled out.
PROMOTE_FAILED_ACTION = "model_promote_failed"
ROLLBACK_FAILED_ACTION = "model_rollback_failed"
SIGN_ACTION = "model_sign"  # manifest.sig written: what workers holding the key will accept
COMPILE_ACTION = "model_compile"  # a bundle compiled again from another with the installed torch: not yet served
AUDIT_SCAN = 10_000  # newest tactical_alerts entries read: months of a normal audit trail


def bundle_place(models_dir: Path) -> dict[str, str]:
    """The fields an audit entry of a bundle change records about where it happened."""
    return {"host": socket.gethostname(), "models_dir": str(Path(models_dir).resolve())}


def _happened_in(fields: Mapping[str, str], place: Mapping[str, str]) -> bool:
    directory = fields.get("models_dir")
    return not directory or _resolved(directory) == place["models_dir"]


@functools.lru_cache(maxsize=256)
def _resolved(directory: str) -> str:  # up to AUDIT_SCAN entries are read, most naming one of a few directories
    return str(Path(directory).resolve())


def replaced_by_current(client: redis.Redis, models_dir: Path, *, scan: int = AUDIT_SCAN) -> str | None:
    """The bundle CURRENT replaced when it was promoted, from the latest promotion to it recorded in
    `tactical_alerts` (the newest `scan` entries are read); None when no such entry is found. A rollback to CURRENT
    is passed over: the bundle rolled back from is the one ruled out, and going back once more means the one before
    CURRENT, not that one again; nor is a bundle rolled back from since CURRENT was promoted over it. Raises
    BundleNotFoundError when CURRENT cannot be read."""
    current = read_current_version(Path(models_dir))
    if current is None:
        return None
    place = bundle_place(models_dir)
    rolled_back_from: set[str] = set()  # by a rollback newer than the entries still to read
    for alert in reversed(recent_alerts(client, count=scan)):
        if not _happened_in(alert.fields, place):
            continue
        if alert.kind == ROLLBACK_ACTION:
            rolled_back_from.add(alert.fields.get("previous") or "")
        elif alert.kind == PROMOTE_ACTION and alert.fields.get("version") == current:
            previous = alert.fields.get("previous") or None
            # Promoted over a bundle since rolled back from (B over A, A over B, back to B): not that one again.
            return None if previous in rolled_back_from else previous
    return None


def refused_by_gate(client: redis.Redis, models_dir: Path, version: str, *, scan: int = AUDIT_SCAN) -> str | None:
    """The audit id of the promotion refusal of `version` in `models_dir` (failed verification or the held-out
    comparison), when that is the latest word on it: a promotion of it since (forced, say) clears it. None when
    the newest `scan` entries hold no such refusal."""
    place = bundle_place(models_dir)
    for alert in reversed(recent_alerts(client, count=scan)):  # newest first
        if alert.fields.get("version") != version or not _happened_in(alert.fields, place):
            continue
        if alert.kind == REFUSED_ACTION:
            return alert.id
        if alert.kind in (PROMOTE_ACTION, ROLLBACK_ACTION):
            return None
    return None


def decided_versions(client: redis.Redis, models_dir: Path, *, scan: int = AUDIT_SCAN) -> set[str]:
    """Bundles of `models_dir` an operator has already ruled out: refused on promotion or rollback, or rolled back
    from. A newer bundle among them is not waiting to be promoted."""
    place = bundle_place(models_dir)
    decided = set()
    for alert in recent_alerts(client, count=scan):
        if not _happened_in(alert.fields, place):
            continue
        if alert.kind in (REFUSED_ACTION, ROLLBACK_REFUSED_ACTION):
            decided.add(alert.fields.get("version") or "")
        elif alert.kind == ROLLBACK_ACTION:
            decided.add(alert.fields.get("previous") or "")
    decided.discard("")
    return decided


__all__ = [
    "COMPILE_ACTION",
    "PROMOTE_ACTION",
    "PROMOTE_FAILED_ACTION",
    "REFUSED_ACTION",
    "ROLLBACK_ACTION",
    "ROLLBACK_FAILED_ACTION",
    "ROLLBACK_REFUSED_ACTION",
    "SIGN_ACTION",
    "bundle_place",
    "decided_versions",
    "refused_by_gate",
    "replaced_by_current",
]
