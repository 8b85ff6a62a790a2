"""Diagnosis probes: each reads one part of the system the way the runbook's commands did — Redis (PING, INFO,
SLOWLOG, LATENCY), the worker process (/proc CPU and memory), the stream (XINFO, XPENDING, lag and trend), the
breaker, the health state, the idempotency keys, the model bundle (hashes, TorchScript load, JIT log) — and turns
what it reads into findings with a severity. `run_probe` makes sure a probe never raises: an unreachable service or
an unreadable answer is itself the finding.
"""

from __future__ import annotations

import math
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from models.bundle import (
    SIGNATURE_FILE,
    SIGNING_KEY_ENV,
    BundleError,
    Manifest,
    current_bundle_dir,
    named_bundle_dir,
    read_manifest,
)
from models.bundle_history import decided_versions, replaced_by_current
from worker.alerts import AuditTrailError, Severity, recent_alerts
from worker.breaker import BreakerState
from worker.connection import REDIS_UNREACHABLE, refusal_advice
from worker.decision_entry import decision_confidences
from worker.health import DEFAULT_THRESHOLDS, CheckStatus, check_latency
from worker.heartbeat import last_beats_of_gone_workers, live_consumers
from worker.lag import LagUnavailable, read_consumer_lag
from worker.names import COMPLETED_PREFIX, CONSUMER_GROUP, DEAD_LETTER_STREAM, DECISIONS_STREAM, INPUT_STREAM
from worker.ops.checks import REDIS_DOWN, Status, bundles_by_signature, health_state_named, jit_log_status
from worker.ops.checks import flapping as state_flapping
from worker.ops.duplicates import (
    DUPLICATE_WINDOW_S,
    FleetDuplicates,
    fleet_duplicate_events,
    iter_newest,
    scan_window,
)
from worker.ops.fleet import at_once, other_live_workers, worker_url_of
from worker.ops.keys import find_stale_processing_keys
from worker.ops.latency import NoLatencyHistogram, operation_latencies
from worker.ops.pending import PendingUnavailable, read_pending_entries, reclaim_advice
from worker.ops.process_stats import host_stats, process_cpu_percent, process_rss_mb
from worker.ops.sources import RedisUnavailable, Sources
from worker.ops.stream_info import StreamMissing, read_stream_overview
from worker.ops.worker_client import WorkerClient, WorkerNotAnswering, WorkerUnreachable
from worker.redis_text import as_number as number
from worker.redis_text import as_text, server_label
from worker.settings import DEFAULT_SETTINGS
from worker.stream_entries import entry_time_ms

THRESHOLDS = DEFAULT_THRESHOLDS
SETTINGS = DEFAULT_SETTINGS
CPU_BUSY_PERCENT = 90.0  # of one core: the worker runs one inference thread, so this is saturation
MEMORY_LOW_RATIO = 0.10
RECENT = 200  # decisions / events / dead letters sampled for patterns
FLAPPING_WINDOW_S = 15 * 60.0
_FAILING_CHECK = re.compile(r"\b([a-z_]+) (warn|critical):")  # how a transition's reason names each failing check
_STATUS_FOR_STATE = {"degraded": "warn", "critical": "critical"}


def _state_rank(name: str) -> int:
    """How bad a health state named as /health/state names it (healthy 0 … failed 3); 0 for a name it does not know."""
    state = health_state_named(name)
    return 0 if state is None else int(state)


def _moved_by(transition: Mapping[str, Any]) -> set[str]:
    """The checks that moved the state into a worse one: those at the status that state stands for (a reason lists
    every check not OK, and one that stayed at warn throughout is in every reason). Into FAILED nothing new moved it:
    it is time spent critical."""
    to, came_from = str(transition.get("to")), str(transition.get("from"))
    wanted = _STATUS_FOR_STATE.get(to)
    if wanted is None or _state_rank(to) <= _state_rank(came_from):
        return set()
    return {name for name, status in _FAILING_CHECK.findall(str(transition.get("reason", ""))) if status == wanted}


@dataclass(frozen=True, slots=True)
class Finding:
    status: Status
    summary: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "summary": self.summary, "evidence": dict(self.evidence)}


Probe = Callable[[Sources], list[Finding]]


def _ok(summary: str, **evidence: Any) -> Finding:
    return Finding(Status.OK, summary, evidence)


def _warn(summary: str, **evidence: Any) -> Finding:
    return Finding(Status.WARN, summary, evidence)


def _critical(summary: str, **evidence: Any) -> Finding:
    return Finding(Status.CRITICAL, summary, evidence)


def run_probe(probe: Probe, sources: Sources) -> list[Finding]:
    """The probe's findings; an unreachable service or an unreadable answer becomes a finding, never an error."""
    name = getattr(probe, "__name__", "probe").removeprefix("probe_").replace("_", " ")
    try:
        return probe(sources)
    except RedisUnavailable as exc:
        return [_critical(f"{exc}: the worker can neither read events nor commit decisions")]
    except WorkerNotAnswering as exc:
        return [_critical(f"{exc}: {WorkerNotAnswering.HUNG_ADVICE}")]
    except WorkerUnreachable as exc:
        return [_critical(str(exc))]
    except REDIS_UNREACHABLE as exc:
        return [_critical(f"Redis failed during the diagnosis: {exc}")]
    except AuditTrailError as exc:  # the alert history is someone else's key: the message says how to move it aside
        return [_critical(str(exc))]
    except redis.ResponseError as exc:
        if (advice := refusal_advice(exc)) is not None:  # refused for a reason the operator must act on
            return [_critical(f"{name}: Redis refused a command ({exc}): {advice}")]
        return [Finding(Status.UNKNOWN, f"{name}: could not check (Redis: {exc})")]
    except (KeyError, TypeError, ValueError, OSError, BundleError) as exc:
        return [Finding(Status.UNKNOWN, f"{name}: could not check ({type(exc).__name__}: {exc})")]


# ---- probes ------------------------------------------------------------------------------------------------------


def _evicted_by(policy: str) -> str:
    """What of ours an evicting maxmemory-policy may delete, and what that does."""
    if policy.startswith("volatile-"):  # keys with a TTL only: the completed and processing keys, the heartbeats
        return "the completed keys among them (a redelivered event decided, and traded, twice)"
    return "the completed keys and whole streams among them (an event decided twice, or lost)"


def probe_redis(sources: Sources) -> list[Finding]:
    """redis-cli ping / INFO / SLOWLOG GET 10 / LATENCY LATEST, judged."""
    client = sources.redis()
    started = time.perf_counter()
    client.ping()
    rtt_ms = (time.perf_counter() - started) * 1e3
    findings = []
    if rtt_ms > THRESHOLDS.redis_rtt_critical_ms:
        findings.append(_critical(f"Redis round trip {rtt_ms:.1f} ms > {THRESHOLDS.redis_rtt_critical_ms:g} ms: "
                                  "Redis or the network is slow", rtt_ms=rtt_ms))
    elif rtt_ms > THRESHOLDS.redis_rtt_warn_ms:
        findings.append(_warn(f"Redis round trip {rtt_ms:.1f} ms > {THRESHOLDS.redis_rtt_warn_ms:g} ms",
                              rtt_ms=rtt_ms))
    else:
        findings.append(_ok(f"Redis answers PING in {rtt_ms:.2f} ms", rtt_ms=rtt_ms))
    info = client.info()
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    evidence = {k: info.get(k) for k in ("redis_version", "connected_clients", "blocked_clients", "used_memory_human",
                                         "maxmemory_human", "instantaneous_ops_per_sec", "rejected_connections",
                                         "evicted_keys")}
    evidence["server"] = server = server_label(info)
    policy = str(info.get("maxmemory_policy", "noeviction"))
    evidence["maxmemory_policy"] = policy
    memory = f"Redis memory {info.get('used_memory_human')} of {info.get('maxmemory_human')}"
    # What Redis does at maxmemory: refuse writes (noeviction: the worker can neither commit nor beat, its breaker
    # opens; nothing is lost) or evict whole keys — completed keys among them, and a redelivered event whose key was
    # evicted is decided, and maybe traded, a second time. Streams are never trimmed to make room.
    at_limit = ("writes refused (OOM): the workers can neither commit nor beat; `tacticalctl stream trim "
                "--older-than <age>` (a dry run, then --yes) or raise maxmemory" if policy == "noeviction" else
                f"Redis evicts keys (maxmemory-policy {policy}): {_evicted_by(policy)}; set maxmemory-policy "
                "noeviction")
    if limit and used >= limit:
        findings.append(_critical(f"{memory}: maxmemory reached, {at_limit}", **evidence))
    elif limit and used > 0.9 * limit:
        findings.append(_warn(f"{memory}: near maxmemory (at it, {at_limit})", **evidence))
    elif limit and policy != "noeviction":
        findings.append(_warn(f"{memory}: maxmemory-policy {policy}: at maxmemory Redis evicts keys, "
                              f"{_evicted_by(policy)}; set maxmemory-policy noeviction", **evidence))
    elif int(info.get("rejected_connections", 0)):
        findings.append(_warn(f"Redis rejected {info.get('rejected_connections')} connections (maxclients)",
                              **evidence))
    else:
        findings.append(_ok(f"{server}: {info.get('connected_clients')} clients, "
                            f"{info.get('used_memory_human')} used, {info.get('instantaneous_ops_per_sec')} ops/s",
                            **evidence))
    now_s = int(client.time()[0])
    slowlog = client.slowlog_get(SLOWLOG_READ)  # the last 10 are judged; all of them say whose a spike was
    findings += _slow_commands(slowlog[:10], now_s)
    findings += _latency_events(client, now_s, slowlog)
    return findings


SLOWLOG_READ = 128  # Redis's default slowlog-max-len: the whole log
# Latency-monitor events that are a slow command: the slow log says whose. The others (fork, aof-fsync-always,
# expire-cycle, …) are Redis's own.
_COMMAND_EVENTS = {"command", "fast-command"}


def _latency_events(client: redis.Redis, now_s: int, slowlog: list[dict[str, Any]]) -> list[Finding]:
    """Latency-monitor spikes over the warning threshold in the last SLOWLOG_RECENT_S, from each event's history
    (LATENCY LATEST keeps only an event's latest sample: a smaller spike a second later would hide a big one).
    Command spikes that each match a slow-log entry tacticalctl sent are its own: said, not warned of."""
    def recent(ts: int) -> bool:
        return now_s - ts <= SLOWLOG_RECENT_S

    spikes: dict[str, list[tuple[int, int]]] = {}
    for row in client.execute_command("LATENCY", "LATEST") or []:
        event, latest = as_text(row[0]), (int(row[1]), int(row[2]))
        if not recent(latest[0]):
            continue  # its latest sample is old: all of them are
        try:
            samples = [(int(ts), int(ms)) for ts, ms in client.execute_command("LATENCY", "HISTORY", event) or []]
        except redis.ResponseError:  # an ACL without LATENCY HISTORY: the latest sample alone
            samples = [latest]
        over = [(ts, ms) for ts, ms in samples if recent(ts) and ms > THRESHOLDS.slow_command_warn_ms]
        if over:
            spikes[event] = over
    if not spikes:
        return []
    window = f"in the last {SLOWLOG_RECENT_S // 60} min"
    own = {event: [(ts, ms) for ts, ms in samples if _sent_by_tacticalctl(ts, ms, slowlog)]
           for event, samples in spikes.items() if event in _COMMAND_EVENTS}
    others = {event: [sample for sample in samples if sample not in own.get(event, [])]
              for event, samples in spikes.items()}
    others = {event: samples for event, samples in others.items() if samples}
    own = {event: samples for event, samples in own.items() if samples}
    if not others:
        return [_ok(f"Redis latency monitor: {_listed(own)} {window}, each a slow command tacticalctl sent itself",
                    latency=_peaks(own))]
    # The headline is the others' spikes: a backup's own snapshot must not be what a warning reports as its peak.
    also = f"; tacticalctl's own: {_listed(own)}" if own else ""
    return [_warn(f"Redis latency monitor: {_listed(others)} {window}{also} (`LATENCY HISTORY <event>` for each "
                  "spike; fork: a save or AOF rewrite)", latency=_peaks(others), own_latency=_peaks(own))]


def _peaks(spikes: dict[str, list[tuple[int, int]]]) -> dict[str, int]:
    return {event: max(ms for _, ms in samples) for event, samples in spikes.items()}


def _listed(spikes: dict[str, list[tuple[int, int]]]) -> str:
    peaks = _peaks(spikes)
    return ", ".join(f"{event} {peaks[event]} ms" + (f" (peak of {len(samples)})" if len(samples) > 1 else "")
                     for event, samples in spikes.items())


def _sent_by_tacticalctl(ts: int, ms: int, slowlog: list[dict[str, Any]]) -> bool:
    """Whether the command spike Redis stamped at `ts` (one sample a second: the longest) was tacticalctl's: its
    slow-log entries ending about then add up to the spike — a transaction's spike is the sum of its commands, each
    logged apart (EXEC itself is not) — and no other client's entry alone comes near it."""
    own_ms, others_longest_ms = 0.0, 0.0
    for entry in slowlog:
        duration_s = int(entry.get("duration", 0)) / 1e6
        ended = int(entry.get("start_time", 0)) + duration_s
        if abs(ended - ts) > 1.0 + duration_s:
            continue
        if as_text(entry.get("client_name") or b"").startswith("tacticalctl"):
            own_ms += duration_s * 1e3
        else:
            others_longest_ms = max(others_longest_ms, duration_s * 1e3)
    return own_ms >= _OWN_SHARE * ms and others_longest_ms < _OWN_SHARE * ms


_OWN_SHARE = 0.75  # of a spike, in tacticalctl's logged commands: those under slowlog-log-slower-than are not logged


SLOWLOG_RECENT_S = 900  # slow commands older than this are history, not the cause of what is happening now


def _slow_commands(last_ten: list[dict[str, Any]], now_s: int) -> list[Finding]:
    """The last 10 slow-log entries over the warning threshold, of the last SLOWLOG_RECENT_S. Those tacticalctl sent
    (its scans of the decision stream, a backup's DUMP) are said apart, not warned of: the operator's own check
    would otherwise be what every later triage warns about."""
    slow = [entry for entry in last_ten
            if int(entry.get("duration", 0)) > THRESHOLDS.slow_command_warn_ms * 1000
            and now_s - int(entry.get("start_time", 0)) <= SLOWLOG_RECENT_S]
    by_tacticalctl: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for entry in slow:
        by_tacticalctl[as_text(entry.get("client_name") or b"").startswith("tacticalctl")].append(entry)
    findings = []
    for entries, judge, whose in ((by_tacticalctl[False], _warn, ""),
                                  (by_tacticalctl[True], _ok, " sent by tacticalctl itself")):
        if not entries:
            continue
        commands = Counter(as_text(entry.get("command")).split(" ")[0].upper() for entry in entries)
        listed = ", ".join(f"{c} ×{n}" for c, n in commands.items())
        findings.append(judge(
            f"{len(entries)} of the last 10 slow-log entries{whose} took over {THRESHOLDS.slow_command_warn_ms:g} ms "
            f"in the last {SLOWLOG_RECENT_S // 60} min ({listed})",
            slowlog=[{"command": as_text(e.get("command"))[:120], "duration_us": e.get("duration"),
                      "client": as_text(e.get("client_name") or b"")} for e in entries]))
    return findings


def probe_worker_http(sources: Sources) -> list[Finding]:
    """curl /health: does the worker answer, and in which state."""
    http_status, body = sources.health()
    code = body.get("state_code")
    summary = (f"worker {body.get('consumer')} answers /health: {body.get('state')} (HTTP {http_status}), "
               f"model {body.get('model_version')}")
    if isinstance(code, int) and code >= 2:
        # Running and answering: not down, whatever paged. Its own checks say what is wrong.
        return [_critical(f"{summary}: it runs and judges itself unhealthy — its failing checks: `tacticalctl "
                          "health state` (`tacticalctl triage health-stuck`)", **body)]
    if code == 1:
        return [_warn(summary, **body)]
    return [_ok(summary, **body)]


GONE_RECENTLY_S = 900  # a worker gone without a clean stop is named while others beat for this long (15 min)


HUNG_PROBES = 5  # gone workers past the window whose port is tried, the latest first: each costs a timeout at most


def _still_holding_their_port(gone: Mapping[str, Mapping[str, Any]],
                              timeout_s: float) -> dict[str, tuple[Mapping[str, Any], str]]:
    """Of workers gone (no beat, no clean stop), those whose endpoint still accepts connections without answering:
    the process is there, hung or stopped. A port refused (gone for good) is history, and one that answers is not hung
    (its own /health says why it does not beat). The latest few only, tried at once: a day of restarts leaves many."""
    here = socket.gethostname()
    latest = sorted(gone.items(), key=lambda item: number(item[1].get("last_beat_unix")) or 0.0,
                    reverse=True)[:HUNG_PROBES]
    candidates = [(name, beat, url) for name, beat in latest if (url := worker_url_of(beat, here)) is not None]

    def hangs(url: str) -> bool:
        try:
            WorkerClient(url, timeout_s=timeout_s).health()
        except WorkerNotAnswering:
            return True
        except WorkerUnreachable:
            return False
        return False

    verdicts = at_once(lambda candidate: hangs(candidate[2]), candidates, "hung-probe")
    return {name: (beat, url) for (name, beat, url), hung in zip(candidates, verdicts, strict=True) if hung}


def probe_heartbeats(sources: Sources) -> list[Finding]:
    """Which workers beat, and which consumer-group members hold entries without one."""
    client = sources.redis()
    live = live_consumers(client)
    findings = []
    if live:
        # Each with the endpoint it serves, as its heartbeat names it: `--worker-url` for the one to look at.
        here = socket.gethostname()
        endpoints = {name: worker_url_of(beat, here) for name, beat in live.items()}
        findings.append(_ok(f"{len(live)} live worker(s) by heartbeat: " + ", ".join(
            f"{name} (pid {beat.get('pid')} on {beat.get('host')}"
            + (f", {endpoints[name]})" if endpoints[name] else ")") for name, beat in live.items()),
            consumers=sorted(live), endpoints=endpoints))
        # Scaled out, one worker down leaves the others beating: TacticalWorkerDown fires for its instance all the
        # same. Its last beat (kept only by a stop that was not clean) names it.
        cutoff = time.time() - GONE_RECENTLY_S
        all_gone = last_beats_of_gone_workers(client, live)
        gone = {name: beat for name, beat in all_gone.items()
                if isinstance(beat.get("last_beat_unix"), int | float) and beat["last_beat_unix"] >= cutoff}
        if gone:
            findings.append(_warn(
                f"{len(gone)} worker(s) stopped beating in the last {GONE_RECENTLY_S // 60} min without a clean "
                "stop — killed, crashed, hung or stopped (SIGSTOP): " + "; ".join(
                    f"{name} (pid {beat.get('pid')} on {beat.get('host')}) {_ago(beat.get('last_beat_unix'))}"
                    for name, beat in list(gone.items())[:3])
                + ". The others carry on and reclaim its entries; read why in its log, and restart it",
                gone={name: {"pid": beat.get("pid"), "host": beat.get("host"), "last_beat": beat.get("last_beat")}
                      for name, beat in gone.items()}))
        hung = _still_holding_their_port({name: beat for name, beat in all_gone.items() if name not in gone},
                                         sources.http_timeout_s)
        if hung:
            findings.append(_warn(
                f"{len(hung)} worker(s) gone longer than {GONE_RECENTLY_S // 60} min still hold their port without "
                "answering — hung or stopped (SIGSTOP), TacticalWorkerDown firing for them: " + "; ".join(
                    f"{name} (pid {beat.get('pid')} on {beat.get('host')}, {url}) {_ago(beat.get('last_beat_unix'))}"
                    for name, (beat, url) in hung.items())
                + ": see what it does (`ps -o stat= -p <pid>` on its host: T = stopped; `py-spy dump --pid <pid>`), "
                "then restart it",
                hung={name: {"pid": beat.get("pid"), "host": beat.get("host"), "url": url,
                             "last_beat": beat.get("last_beat")} for name, (beat, url) in hung.items()}))
    else:
        gone = last_beats_of_gone_workers(client, live)
        seen = "; ".join(f"{name} (pid {beat.get('pid')} on {beat.get('host')}) "
                         f"{_ago(beat.get('last_beat_unix'))}" for name, beat in list(gone.items())[:3])
        findings.append(_critical(
            "no worker has a live heartbeat: nothing is consuming synergy_events"
            + (f"; last seen: {seen} — hung, stopped or killed (`ps -o stat= -p <pid>` on its host: T = stopped; "
               "`py-spy dump --pid <pid>`)" if gone else ""),
            last_seen={name: {"pid": beat.get("pid"), "host": beat.get("host"), "last_beat": beat.get("last_beat")}
                       for name, beat in gone.items()}))
    try:
        overview = read_stream_overview(client)
    except StreamMissing as exc:
        return [*findings, _warn(str(exc))]
    # Only the workers' group: a downstream reader's own group has consumers that never beat, and its pending entries
    # are neither reclaimed by the workers nor claimable with `pending claim`.
    for group in (g for g in overview.groups if g.name == CONSUMER_GROUP):
        for consumer in group.consumers:
            if not consumer.alive and consumer.pending:
                findings.append(_warn(
                    f"consumer {consumer.name} has no heartbeat and holds {consumer.pending} pending entries "
                    f"(idle {consumer.idle_ms / 1000:.0f} s): {reclaim_advice(worker_live=bool(live))}",
                    consumer=consumer.name, pending=consumer.pending, idle_ms=consumer.idle_ms))
    return findings


def _ago(unix: object) -> str:
    if not isinstance(unix, int | float):
        return "at an unknown time"
    return f"{max(0.0, time.time() - unix):.0f} s ago"


def probe_worker_process(sources: Sources) -> list[Finding]:
    """docker stats / free -h: CPU and memory of each worker process on this host, and of the host."""
    findings = []
    here = socket.gethostname()
    for name, beat in live_consumers(sources.redis()).items():
        pid = beat.get("pid")
        if beat.get("host") != here or not isinstance(pid, int):
            findings.append(_ok(f"{name} runs on {beat.get('host')}: check its CPU there (`docker stats`)"))
            continue
        cpu = process_cpu_percent(pid)
        rss = process_rss_mb(pid)
        if cpu is None:
            findings.append(Finding(Status.UNKNOWN, f"{name} (pid {pid}): /proc not readable (another PID namespace?)"))
            continue
        summary = f"{name} (pid {pid}): CPU {cpu:.0f}% of a core, RSS {rss or 0:.0f} MB"
        if cpu >= CPU_BUSY_PERCENT:
            findings.append(_warn(summary + ": CPU-bound — more consumers or fewer events per worker",
                                  pid=pid, cpu_percent=cpu, rss_mb=rss))
        else:
            findings.append(_ok(summary, pid=pid, cpu_percent=cpu, rss_mb=rss))
    host = host_stats()
    summary = f"host: load {host.load_1m:.2f} on {host.cpus} CPU(s), {host.mem_available_mb or 0:.0f} MB available"
    ratio = host.mem_available_ratio
    if host.load_1m > host.cpus:
        findings.append(_warn(summary + ": more runnable work than CPUs — the worker competes for cores",
                              **host.as_dict()))
    elif ratio is not None and ratio < MEMORY_LOW_RATIO:
        findings.append(_warn(summary + f": under {MEMORY_LOW_RATIO:.0%} of memory free (leak? swap?)",
                              **host.as_dict()))
    else:
        findings.append(_ok(summary, **host.as_dict()))
    return findings


def probe_latency(sources: Sources) -> list[Finding]:
    """The window's P50/P99 and, from the /metrics histogram, which stage the time goes to."""
    state = sources.state()
    window = state.get("window") or {}
    p50, p99 = number(window.get("p50_ms")), number(window.get("p99_ms"))
    judged = check_latency(p50, p99, THRESHOLDS)
    who = f"{state['consumer']}, " if isinstance(state.get("consumer"), str) else ""  # the others: fleet latency
    findings = [Finding(Status.of(judged.status), f"{who}last 60 s: {judged.message}", {"p50_ms": p50, "p99_ms": p99})]
    try:
        rows = operation_latencies(sources.metrics())
    except NoLatencyHistogram as exc:
        return [*findings, Finding(Status.UNKNOWN, str(exc))]
    # The hot path's stages only: an agent timed alone by the monitor's probe is no stage an event waited in.
    stages = [row for row in rows
              if row.operation != "end_to_end" and row.agent_type == "all" and row.p99_ms is not None]
    if stages:
        slowest = max(stages, key=lambda row: row.p99_ms or 0.0)
        findings.append(_ok(f"since start, slowest stage: {slowest.label} p99 {slowest.p99_ms:.1f} ms "
                            f"(p50 {slowest.p50_ms or 0:.1f} ms); `tacticalctl latency` for every stage",
                            stages=[row.as_dict() for row in stages]))
    return findings


def probe_fleet_latency(sources: Sources) -> list[Finding]:
    """The last 60 s of every other live worker, from the /health/state its heartbeat names: `probe_latency` reads
    the worker at --worker-url alone, and one slow replica of a fleet (its host, its model) was an all-clear."""
    try:
        measured = sources.state().get("consumer")
    except WorkerUnreachable:
        measured = None
    try:
        others = other_live_workers(sources.redis(), measured=measured, worker_url=sources.worker_url)
    except RedisUnavailable:
        return []  # probe_redis says so, once
    findings = []
    for worker in others:
        name, url = worker.name, worker.url
        if url is None:
            # A worker names its endpoint once it serves it; the first beats of a starting one come before.
            findings.append(_ok(f"{name}: latency not judged, its heartbeat names no HTTP endpoint (yet)"))
            continue
        try:
            window = WorkerClient(url, timeout_s=sources.http_timeout_s).state().get("window") or {}
        except WorkerUnreachable as exc:
            findings.append(_warn(f"{name}: latency not judged, {exc} (from here; `tacticalctl --worker-url "
                                  f"<its address> latency` where it is reachable)", url=url))
            continue
        p50, p99 = number(window.get("p50_ms")), number(window.get("p99_ms"))
        judged = check_latency(p50, p99, THRESHOLDS)
        findings.append(Finding(Status.of(judged.status), f"{name}, last 60 s: {judged.message} ({url})",
                                {"consumer": name, "url": url, "p50_ms": p50, "p99_ms": p99}))
    return findings


def probe_stream(sources: Sources) -> list[Finding]:
    """XINFO STREAM / GROUPS, consumer lag (count and seconds) and its trend, the processing rate."""
    client = sources.redis()
    try:
        lag = read_consumer_lag(client)
    except LagUnavailable as exc:
        return [_warn(str(exc))]
    summary = (f"consumer lag {lag.seconds:.2f} s: {lag.count_text} undelivered, {lag.pending} pending, "
               f"stream length {lag.stream_length}")
    evidence = lag.as_dict()
    if lag.seconds > THRESHOLDS.lag_critical_s:
        findings = [_critical(summary + f" (> {THRESHOLDS.lag_critical_s:g} s)", **evidence)]
    elif lag.seconds > THRESHOLDS.lag_warn_s:
        findings = [_warn(summary + f" (> {THRESHOLDS.lag_warn_s:g} s)", **evidence)]
    else:
        findings = [_ok(summary, **evidence)]
    if lag.count is None:
        findings.append(_warn(lag.count_note or "the undelivered count is unknown — judge by seconds and pending"))
    try:
        state = sources.state()
    except WorkerUnreachable as exc:
        return [*findings, _critical(f"{exc}: nothing may be consuming")]
    trend = (state.get("lag") or {}).get("trend")
    window = state.get("window") or {}
    rate = number(window.get("throughput_per_s"))
    if trend in ("stall", "stop"):
        findings.append(_critical(f"lag trend {trend}: pending entries are not being acknowledged",
                                  trend=trend))
    elif trend == "warn":
        findings.append(_warn("lag trend warn: the backlog only grows — the consumer is falling behind",
                              trend=trend))
    backlog = lag.backlog_at_least or lag.pending  # with a bound, its low end: as many wait at least
    at_least = "" if lag.count_exact else "at least "
    if rate is not None and backlog >= THRESHOLDS.event_rate_min_backlog and rate < THRESHOLDS.event_rate_alert_per_s:
        findings.append(_warn(f"processing {rate:.1f} events/s < {THRESHOLDS.event_rate_alert_per_s:g}/s with "
                              f"{at_least}{backlog} waiting: throughput is the bottleneck", throughput_per_s=rate))
    elif rate is not None:
        findings.append(_ok(f"processing {rate:.1f} events/s over the last 60 s", throughput_per_s=rate))
    breaker = (state.get("circuit_breaker") or {}).get("state")
    if breaker and breaker != "closed":
        findings.append(_critical(f"circuit breaker {breaker}: the worker is not taking events "
                                  "(`tacticalctl triage breaker-open`)"))
    return findings


def probe_pending(sources: Sources) -> list[Finding]:
    """XPENDING: entries delivered and not acknowledged, how long, how often."""
    try:
        stuck = read_pending_entries(sources.redis(), min_idle_ms=SETTINGS.claim_min_idle_ms, count=1000)
    except PendingUnavailable as exc:
        return [_warn(str(exc))]
    if not stuck:
        return [_ok(f"no entry pending longer than {SETTINGS.claim_min_idle_ms / 1000:g} s")]
    holders = Counter(entry.consumer for entry in stuck)
    redelivered = [e for e in stuck if e.times_delivered >= SETTINGS.max_deliveries]
    findings = [_warn(f"{len(stuck)} entries pending over {SETTINGS.claim_min_idle_ms / 1000:g} s, held by "
                      + ", ".join(f"{c} ({n})" for c, n in holders.most_common(5))
                      + f": `tacticalctl pending --extended --idle {SETTINGS.claim_min_idle_ms}`",
                      oldest=stuck[0].as_dict(), holders=dict(holders))]
    if redelivered:
        findings.append(_warn(f"{len(redelivered)} entries delivered {SETTINGS.max_deliveries}+ times: they fail "
                              "every time (poison?) — `tacticalctl pending dead-letter --reason … --yes`",
                              entries=[e.as_dict() for e in redelivered[:10]]))
    return findings


def probe_breaker(sources: Sources) -> list[Finding]:
    """The breaker of every worker (published in Redis and over HTTP) and the restart count."""
    overview = sources.breaker_overview()
    findings = []
    for name, status in overview.published.items():
        text = f"breaker of {name}: {status.state.name.lower()}, {status.consecutive_failures} consecutive failures"
        if status.last_reason:
            text += f"; last reason: {status.last_reason}"
        if status.state is BreakerState.OPEN:
            findings.append(_critical(text, **status.as_dict()))
        elif status.state is BreakerState.HALF_OPEN:
            findings.append(_warn(text, **status.as_dict()))
        else:
            findings.append(_ok(text, **status.as_dict()))
    if not overview.published:
        state = overview.state
        if state is None:
            findings.append(_warn("no live worker has published its breaker and HTTP gave none "
                                  f"({overview.http_error})"))
        else:
            # Seen over HTTP only (heartbeats lapsed: Redis refusing writes): the reason is here or nowhere.
            http = dict(overview.http or {})
            text = f"breaker (HTTP): {state.name.lower()}"
            if http.get("consecutive_failures") is not None:
                text += f", {http['consecutive_failures']} consecutive failures"
            if http.get("last_reason"):
                text += f"; last reason: {http['last_reason']}"
            findings.append(Finding(Status.of(CheckStatus.CRITICAL if state is BreakerState.OPEN else
                                              CheckStatus.OK if state is BreakerState.CLOSED else CheckStatus.WARN),
                                    text, http))
    restarts = f"{overview.restarts} restart(s) in {overview.restart_window_s:g} s (limit {overview.restart_limit})"
    if overview.over_restart_limit:
        findings.append(_critical(restarts + ": the restart limit opens the breaker — the worker keeps dying",
                                  restarts=overview.restarts))
    elif overview.restarts > len(overview.published):  # each running worker's own start is counted too
        findings.append(_warn(restarts + f": more starts than workers with a live heartbeat and a published breaker "
                              f"({len(overview.published)}) — something restarts them, or their heartbeats lapsed "
                              "(Redis refusing writes)",
                              restarts=overview.restarts))
    else:
        findings.append(_ok(restarts, restarts=overview.restarts))
    return findings


def probe_alert_history(sources: Sources) -> list[Finding]:
    """redis-cli XREAD COUNT 10 STREAMS tactical_alerts 0, but the latest P0/P1 ones. While Redis refuses writes the
    workers hold the alerts they raise (they are written once it takes writes again): the history is then not the
    whole story, a warning."""
    client = sources.redis()
    alerts = [a for a in recent_alerts(client, count=500) if a.severity in (Severity.P0, Severity.P1)]
    refusing = _refusing_writes(client)
    held = (f"; Redis refuses writes now ({refusing}): the workers hold the alerts they raise until it takes writes "
            "again, so this history may lack the latest" if refusing else "")
    judge = _warn if refusing else _ok
    if not alerts:
        return [judge(f"no P0/P1 alert among the latest 500 entries of tactical_alerts{held}")]
    latest = alerts[-10:]
    return [judge(f"{len(alerts)} P0/P1 alerts recently; latest: {latest[-1].ts} {latest[-1].severity} "
                  f"{latest[-1].message}{held}", alerts=[a.as_dict() for a in latest])]


# A script that writes nothing but does not declare `no-writes`: Redis admits it by the rule it applies to writes, so
# its refusal is the one a write would meet now.
_WRITE_ADMISSION_LUA = "#!lua\nreturn 1"
WRITE_PAUSE_WAIT_S = 1.0
# Refusals of a write that redis-py has no class for, by their code.
_WRITE_REFUSALS = {"NOREPLICAS": "fewer good replicas than min-replicas-to-write",
                   "MISCONF": "it cannot persist: a failed save with stop-writes-on-bgsave-error"}


def _refusing_writes(client: redis.Redis) -> str | None:
    """Why Redis refuses writes now; None when it takes them. Asked of Redis itself rather than read off INFO: at
    maxmemory it refuses them when it finds nothing to evict — under noeviction, and under a volatile-* policy once
    no key has an expiry — which no INFO field says. (Like any write at maxmemory, the question makes an evicting
    Redis evict first.) A Redis that cannot be asked so (before 7.0, or EVAL not permitted) is judged from INFO."""
    connection = client.connection_pool.get_connection()
    try:
        connection.send_command("EVAL", _WRITE_ADMISSION_LUA, 0)
        # Redis holds a write-flagged script while writes are paused (CLIENT PAUSE WRITE, FAILOVER): no answer soon
        # is the answer (a read would wait out the socket timeout and report Redis failed).
        if not connection.can_read(timeout=WRITE_PAUSE_WAIT_S):
            connection.disconnect()
            return "writes paused: CLIENT PAUSE WRITE, or a FAILOVER in progress"
        connection.read_response()
        return None
    except redis.OutOfMemoryError:
        return "maxmemory reached, nothing it may evict"
    except redis.ReadOnlyError:
        return "a read-only replica"
    except redis.ResponseError as exc:
        refusal = _WRITE_REFUSALS.get(str(exc).split(" ", 1)[0])
        if refusal is not None:
            return refusal
    finally:
        client.connection_pool.release(connection)
    info = client.info()
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    if limit and used >= limit and str(info.get("maxmemory_policy", "noeviction")) == "noeviction":
        return "maxmemory reached"
    if info.get("role") == "slave" and str(info.get("slave_read_only", 1)) == "1":
        return "a read-only replica"
    return None


def probe_model_staleness(sources: Sources) -> list[Finding]:
    """When the worker last confirmed its bundle is the current verified one, and whether it is CURRENT."""
    findings = []
    models_dir = sources.models_dir
    try:
        current = read_manifest(named_bundle_dir(models_dir))
        findings.append(_ok(f"CURRENT in {models_dir} is {current.version}, created "
                            f"{current.created_at:%Y-%m-%d %H:%M}Z", version=current.version))
    except BundleError as exc:
        current = None
        findings.append(_critical(f"the model pipeline is broken: {exc}"))
    model = sources.state().get("model") or {}
    staleness = number(model.get("staleness_s"))
    limit = THRESHOLDS.model_staleness_critical_s
    loaded = model.get("version")
    text = (f"worker runs {loaded} (created {model.get('created_at')}); last confirmed current and verified "
            f"{'?' if staleness is None else f'{staleness:.0f} s'} ago")
    if staleness is None:
        findings.append(_warn(text, **model))
    elif staleness > limit:
        findings.append(_critical(text + f" (> {limit / 60:g} min): its bundle could not be confirmed", **model))
    else:
        findings.append(_ok(text, **model))
    if model.get("problem"):
        findings.append(_critical(f"worker reports: {model['problem']}"))
    if current is not None and loaded and loaded != current.version:
        findings.append(_warn(f"the worker runs {loaded} but CURRENT is {current.version}: the reload has not "
                              "happened (see the worker's log for `model bundle not confirmed`)"))
    return findings


def probe_bundle(sources: Sources) -> list[Finding]:
    """Check the compilation log, the model files and torch: every verification step of the current bundle."""
    models_dir = sources.models_dir
    findings = []
    try:
        bundle_dir = current_bundle_dir(models_dir)
    except BundleError as exc:
        return [_critical(f"no usable bundle: {exc}")]
    from worker.ops.bundles import verify_steps  # imports torch: only the checks that load a bundle pay for it

    steps = verify_steps(bundle_dir)
    bad = [s for s in steps if s.status is not Status.OK]
    for step in bad:
        findings.append(Finding(step.status, f"{bundle_dir.name}: {step.step}: {step.value}", dict(step.details)))
    if not bad:
        findings.append(_ok(f"{bundle_dir.name}: all {len(steps)} verification steps pass (manifest, hashes, "
                            "TorchScript load, forward pass, latency, JIT log)", steps=[s.as_dict() for s in steps]))
    failed_dirs = sorted(p for p in models_dir.glob("*.failed") if p.is_dir())
    if failed_dirs:
        last = failed_dirs[-1]
        log = jit_log_status(last)
        findings.append(_warn(f"{len(failed_dirs)} failed compilation(s) in {models_dir}; latest {last.name}: "
                              f"{log.failure or 'see its log'}", failed=[str(p) for p in failed_dirs[-5:]]))
    return findings


_NO_HISTORY: tuple[type[Exception], ...] = (*REDIS_DOWN, AuditTrailError, BundleError)


def probe_previous_bundles(sources: Sources) -> list[Finding]:
    """What a revert could go to: the bundle CURRENT replaced (what `models rollback` goes back to), else the newest
    verified bundle other than CURRENT that no operator has ruled out (refused, or rolled back from)."""
    models_dir = sources.models_dir
    try:
        active = current_bundle_dir(models_dir).name
    except BundleError:
        active = None
    replaced, ruled_out = None, set()
    try:
        client = sources.redis()
        ruled_out = decided_versions(client, models_dir)
        replaced = replaced_by_current(client, models_dir)
    except _NO_HISTORY:
        pass  # without the audit trail, any verified bundle is a candidate
    servable_manifests, unsigned_manifests = bundles_by_signature(models_dir)  # verified once, both lists
    by_version = {manifest.version: manifest for manifest in servable_manifests}
    servable = [version for version in by_version if version != active]
    if replaced in servable:
        return [_ok(f"revert candidate: {replaced}, the bundle CURRENT replaced (`tacticalctl models rollback "
                    f"--yes`){_signature_caveat(by_version[replaced])}", candidates=[replaced])]
    candidates = [version for version in servable if version not in ruled_out]
    excluded = sorted(ruled_out & set(servable))  # verified, but an operator refused it or rolled back from it
    if not candidates:
        # A bundle an operator refused or rolled back from is not one to sign either.
        unsigned = [manifest.version for manifest in unsigned_manifests
                    if manifest.version != active and manifest.version not in ruled_out]
        if unsigned:
            return [_warn(f"no other signed bundle in {models_dir} to revert to, and CURRENT is signed (workers "
                          f"refuse unsigned ones): {', '.join(unsigned[:3])} verify. Sign one to revert to it: "
                          f"`tacticalctl models sign {unsigned[0]} --key-file <key>`", unsigned=unsigned[:5],
                          ruled_out=excluded)]
        if excluded:  # said, not hidden
            return [_warn(f"no verified bundle in {models_dir} to revert to that no operator ruled out: "
                          f"{', '.join(excluded[:3])} verify, but were rolled back from or refused by the promotion "
                          "gate (the audit trail: `tacticalctl alerts --severity AUDIT`). Once the reason no longer "
                          f"holds: `tacticalctl models rollback {excluded[0]} --yes` (one the gate refused: "
                          f"`tacticalctl models promote {excluded[0]} --force --yes`); else a revert needs the ML team",
                          ruled_out=excluded)]
        return [_warn(f"no other verified bundle in {models_dir} to revert to: a revert needs the ML team",
                      ruled_out=excluded)]
    return [_ok(f"revert candidate: {candidates[0]} (`tacticalctl models rollback {candidates[0]} --yes`)"
                f"{_signature_caveat(by_version[candidates[0]])}", candidates=candidates[:5])]


def _signature_caveat(manifest: Manifest) -> str:
    """Without the key here a signature cannot be checked: one made with another key passes for servable in this
    process, and the workers, which hold the key, would refuse the bundle."""
    assert manifest.bundle_dir is not None
    if os.environ.get(SIGNING_KEY_ENV) or not (manifest.bundle_dir / SIGNATURE_FILE).is_file():
        return ""
    return (f"; its signature is not checked here (no ${SIGNING_KEY_ENV}): check it first with "
            f"`{SIGNING_KEY_ENV}=<key file> tacticalctl models verify {manifest.version}`")


def probe_errors(sources: Sources) -> list[Finding]:
    """grep ERROR, as numbers: errors by operation, the window's error rate, the dead-letter reasons."""
    findings = []
    try:
        families = sources.metrics()
        errors = {s.labels.get("operation", ""): float(s.value) for s in families.get("tactical_errors", [])
                  if s.name == "tactical_errors_total" and float(s.value) > 0}
        rates = {s.labels.get("operation", ""): float(s.value) for s in families.get("tactical_error_rate", [])
                 if math.isfinite(float(s.value))}
        high = {op: r for op, r in rates.items() if r > THRESHOLDS.error_rate_warn}
        if high:
            findings.append(_warn("error rate above " f"{THRESHOLDS.error_rate_warn:.0%}: " + ", ".join(
                f"{op} {r:.1%}" for op, r in sorted(high.items())), error_rates=rates, errors_total=errors))
        elif errors:
            findings.append(_ok("errors since start: " + ", ".join(f"{op} {int(n)}" for op, n in errors.items()),
                                errors_total=errors))
        else:
            findings.append(_ok("no errors counted since the worker started"))
    except WorkerUnreachable as exc:
        findings.append(_critical(str(exc)))
    client = sources.redis()
    recent = list(iter_newest(client, DEAD_LETTER_STREAM, limit=RECENT))
    if recent:
        reasons = Counter(as_text(fields.get(b"dead_reason", b"?")).split(":")[0] for _, fields in recent)
        newest_age_s = sources.now() - entry_time_ms(recent[0][0]) / 1000
        text = (f"{len(recent)} recent dead letters (newest {newest_age_s:.0f} s ago): "
                + ", ".join(f"{r} ×{n}" for r, n in reasons.most_common(5)))
        status = Status.WARN if newest_age_s < FLAPPING_WINDOW_S else Status.OK
        findings.append(Finding(status, text + " — `tacticalctl dead-letter list`", {"reasons": dict(reasons)}))
    else:
        findings.append(_ok("no dead letters"))
    return findings


def probe_confidence(sources: Sources) -> list[Finding]:
    """The agents' confidence: the window's mean, per agent over recent decisions, and the input it came from."""
    state = sources.state()
    window = state.get("window") or {}
    mean = number(window.get("mean_confidence"))
    findings = []
    if mean is None:
        findings.append(_ok("no decisions in the last 60 s"))
    elif mean < THRESHOLDS.confidence_warn:
        findings.append(_warn(f"mean confidence {mean:.2f} < {THRESHOLDS.confidence_warn:g} over the last 60 s",
                              mean_confidence=mean))
    else:
        findings.append(_ok(f"mean confidence {mean:.2f} over the last 60 s", mean_confidence=mean))
    client = sources.redis()
    decisions = list(iter_newest(client, DECISIONS_STREAM, limit=RECENT))
    per_agent: dict[str, list[float]] = {}
    for _, fields in decisions:
        for agent, value in decision_confidences(fields).items():
            per_agent.setdefault(agent, []).append(value)
    if per_agent:
        means = {agent: sum(v) / len(v) for agent, v in per_agent.items()}
        low = {a: m for a, m in means.items() if m < THRESHOLDS.confidence_warn}
        text = f"last {len(decisions)} decisions, mean confidence: " + ", ".join(
            f"{a} {m:.2f}" for a, m in means.items())
        findings.append((_warn if low else _ok)(text + (f" — low: {', '.join(low)}" if low else ""),
                                                per_agent=means))
    accuracy = state.get("agent_accuracy") or {}
    if any(v is not None for v in accuracy.values()):
        findings.append(_ok("agent accuracy: " + ", ".join(
            f"{a} {'-' if v is None else f'{v:.2f}'}" for a, v in accuracy.items()), agent_accuracy=accuracy))
    events = list(iter_newest(client, INPUT_STREAM, limit=RECENT))
    if events:
        upstream = [c for _, f in events if (c := number(as_text(f.get(b"confidence")))) is not None]
        newest_age_s = sources.now() - entry_time_ms(events[0][0]) / 1000
        text = (f"input feed: newest event {newest_age_s:.0f} s old; upstream confidence mean "
                f"{sum(upstream) / len(upstream):.2f} over {len(upstream)} events" if upstream else
                f"input feed: newest event {newest_age_s:.0f} s old")
        findings.append(_ok(text, newest_event_age_s=newest_age_s))
    return findings


def probe_duplicates(sources: Sources) -> list[Finding]:
    """KEYS tactical:processing:* / tactical:completed:*, made safe: stale keys, repeated ids, repeated commands."""
    client = sources.redis()
    findings = []
    stale = find_stale_processing_keys(client)
    if stale:
        owners = Counter(k.owner or "?" for k in stale)
        findings.append(_warn(
            f"{len(stale)} stale processing key(s) whose owner has no heartbeat: "
            + ", ".join(f"{o} ({n})" for o, n in owners.most_common(5))
            + " — redeliveries of these ids count as duplicates in flight until the lease ends; "
            "`tacticalctl keys clean --yes`", keys=[k.as_dict() for k in stale[:20]]))
    else:
        findings.append(_ok("no stale processing keys"))
    scan = scan_window(client)
    window = f"{DUPLICATE_WINDOW_S / 60:g} min"
    commands, offenders = scan.commands, scan.resent
    if commands.offenders:
        findings.append(_critical(
            f"{len(commands.offenders)} correlation id(s) with more than one execution command in the last {window}: "
            + ", ".join(o.correlation_id for o in commands.offenders[:5]), **commands.as_dict()))
    else:
        findings.append(_ok(f"no repeated execution command in the last {window} ({commands.scanned} commands)"))
    if offenders.offenders:
        findings.append(_warn(
            f"{len(offenders.offenders)} correlation id(s) sent more than once in the last {window} "
            f"({offenders.scanned} events; producer retries): " + ", ".join(
                f"{o.correlation_id} ×{o.count}" for o in offenders.offenders[:5]), **offenders.as_dict()))
    no_ttl = [key for key in client.scan_iter(match=COMPLETED_PREFIX + "*", count=1000) if client.ttl(key) == -1][:20]
    if no_ttl:
        findings.append(_warn(f"{len(no_ttl)}+ completed key(s) without a TTL: they never expire "
                              "(check TACTICAL_COMPLETED_TTL_S and the commit script)",
                              keys=[as_text(k) for k in no_ttl]))
    fleet = fleet_duplicate_events(client, sources.worker_url, metrics=sources.metrics, health=sources.health,
                                   timeout_s=sources.http_timeout_s)
    findings.append(_duplicate_counters(fleet))
    return findings


def _duplicate_counters(fleet: FleetDuplicates) -> Finding:
    """The duplicates every live worker caught, summed: each counts only its own. A worker not read is named, and
    the sum is then a floor (a warning), not the stack's figure."""
    said = fleet.summary() + (", each acked without a second command" if fleet.read else "")
    if fleet.unread:
        said += "; " + fleet.shortfall()
    return (_warn if fleet.missing else _ok)(said, **fleet.as_dict())


# A failing health check → its playbook, by the check's status: (on warn, on critical). The worker's own verdict,
# so a state that is degraded always names why, also for what the window's figures above do not show (an event
# rate judged against a backlog, a slow Redis).
CHECK_PLAYBOOKS: Mapping[str, tuple[str, str]] = {
    "consumer_lag": ("consumer-lag-warning", "consumer-lag"),
    "latency": ("p50-latency", "p99-latency"),
    "error_rate": ("error-rate", "error-rate"),
    "model_staleness": ("model-staleness", "model-staleness"),
    "model_reload": ("model-staleness", "model-staleness"),
    "models_loaded": ("model-compilation", "model-compilation"),
    "circuit_breaker": ("breaker-open", "breaker-open"),
    "model_confidence": ("low-confidence", "low-confidence"),
    "event_rate": ("event-rate", "event-rate"),
    # No playbook of its own: which check moved the state (Redis's round trip is one of health-stuck's probes).
    "redis": ("health-transitions", "health-stuck"),
}


def playbook_for_check(name: str, status: str) -> str:
    """The triage for a health check failing at `status` (warn or critical)."""
    on_warn, on_critical = CHECK_PLAYBOOKS.get(name, ("health-transitions", "health-stuck"))
    return on_critical if status == "critical" else on_warn


def probe_health_state(sources: Sources) -> list[Finding]:
    """curl /health/state | jq '.health_checks', '.recent_transitions'."""
    state = sources.state()
    now = sources.now()
    since = number(state.get("since"))
    code = int(state.get("state_code", 0))
    held = "" if since is None else f" for {max(0.0, now - since):.0f} s"
    text = f"health state {state.get('state')}{held}"
    findings = [(_critical if code >= 2 else _warn if code == 1 else _ok)(text, state_code=code, since=since)]
    failing = [check_doc for check_doc in state.get("health_checks") or []
               if check_doc.get("status") in ("warn", "critical")]
    for check_doc in failing:
        playbook = playbook_for_check(str(check_doc.get("name")), str(check_doc["status"]))
        message = f"check {check_doc.get('name')}: {check_doc.get('message')} — `tacticalctl triage {playbook}`"
        findings.append(Finding(Status(check_doc["status"]), message, dict(check_doc)))
    recovery = state.get("recovery")
    if isinstance(recovery, dict) and (next_step_at := number(recovery.get("next_step_at"))) is not None:
        still = "" if not failing else " (the checks above call for a better state than this one)"
        findings.append(_ok(f"recovering: the next step, to {recovery.get('to')}, is due in "
                            f"{max(0.0, next_step_at - now):.0f} s if the checks hold{still}", recovery=recovery))
    elif code >= 1 and not failing:
        findings.append(_ok("no check fails now: the state steps down once the checks have passed for the recovery "
                            "period (30 s by default)"))
    transitions = state.get("recent_transitions") or []
    recent = [t for t in transitions if (number(t.get("at")) or 0.0) >= now - FLAPPING_WINDOW_S]
    if state_flapping(recent):  # as market-check judges it: worse again after recovering (one round trip is not)
        # Flapping is one check moving the state again and again; different causes one after another are not.
        causes = Counter(name for t in recent for name in _moved_by(t))
        flapping = sorted(name for name, times in causes.items() if times >= 2)
        what = (f"{', '.join(flapping)} flapping around its threshold" if flapping else
                f"for different causes ({', '.join(sorted(causes)) or 'recoveries'}), none flapping")
        findings.append(_warn(f"{len(recent)} transitions in {FLAPPING_WINDOW_S / 60:g} min: {what}",
                              transitions=recent))
    elif transitions:
        last = transitions[-1]
        findings.append(_ok(f"last transition {last.get('from')} → {last.get('to')}: {last.get('reason')}",
                            transitions=transitions[-5:]))
    return findings


__all__ = [
    "CHECK_PLAYBOOKS",
    "THRESHOLDS",
    "Finding",
    "Probe",
    "number",
    "playbook_for_check",
    "probe_alert_history",
    "probe_breaker",
    "probe_bundle",
    "probe_confidence",
    "probe_duplicates",
    "probe_errors",
    "probe_fleet_latency",
    "probe_health_state",
    "probe_heartbeats",
    "probe_latency",
    "probe_model_staleness",
    "probe_pending",
    "probe_previous_bundles",
    "probe_redis",
    "probe_stream",
    "probe_worker_http",
    "probe_worker_process",
    "run_probe",
]
