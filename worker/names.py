"""Every Redis name the system uses. Operators, dashboards and alerts depend on them: nothing else spells them."""

from __future__ import annotations

DEFAULT_DB = 2

INPUT_STREAM = "synergy_events"
CONSUMER_GROUP = "tactical_group"
DEAD_LETTER_STREAM = "synergy_events:dead"
DECISIONS_STREAM = "tactical_decisions"
COMMANDS_STREAM = "execution_commands"
ALERTS_STREAM = "tactical_alerts"
ALL_STREAMS: tuple[str, ...] = (INPUT_STREAM, DECISIONS_STREAM, COMMANDS_STREAM, DEAD_LETTER_STREAM, ALERTS_STREAM)

PROCESSING_PREFIX = "tactical:processing:"
COMPLETED_PREFIX = "tactical:completed:"
HEARTBEAT_PREFIX = "tactical:heartbeat:"
LAST_BEAT_PREFIX = "tactical:lastbeat:"  # + consumer: its last heartbeat, kept a day after the live one expired
BREAKER_PREFIX = "tactical:breaker:"
BACKUP_COPY_PREFIX = "tactical:backup:"  # + backup token + ":" + stream: a backup's copies, while it reads them

EVENT_TYPE = "SYNERGY_DETECTED"


def processing_key(correlation_id: str) -> str:
    return PROCESSING_PREFIX + correlation_id


def completed_key(correlation_id: str) -> str:
    return COMPLETED_PREFIX + correlation_id


def heartbeat_key(consumer: str) -> str:
    return HEARTBEAT_PREFIX + consumer


def last_beat_key(consumer: str) -> str:
    return LAST_BEAT_PREFIX + consumer


# Circuit breaker: operator actions the CLI writes and every worker honours (see worker/breaker.py).
BREAKER_RESTARTS_KEY = BREAKER_PREFIX + "restarts"  # ZSET member "{consumer}@{time}", score = restart time
BREAKER_RESET_SEQUENCE_KEY = BREAKER_PREFIX + "reset:sequence"  # INCR: id of the latest reset request
BREAKER_RESET_REQUEST_KEY = BREAKER_PREFIX + "reset:request"  # HASH id, actor, requested_at (short TTL)
BREAKER_RESET_HONOURED_PREFIX = BREAKER_PREFIX + "reset:honoured:"  # + consumer: last request id it honoured
BREAKER_STATE_PREFIX = BREAKER_PREFIX + "state:"  # + consumer: HASH of that worker's breaker


def breaker_state_key(consumer: str) -> str:
    return BREAKER_STATE_PREFIX + consumer


def breaker_reset_honoured_key(consumer: str) -> str:
    return BREAKER_RESET_HONOURED_PREFIX + consumer


# The field `tacticalctl dead-letter replay` adds to an event it puts back on the input stream: the entry id of the
# copy that was dead-lettered. The duplicate checks do not take a replay for an upstream resending.
REPLAYED_FROM_FIELD = "replayed_from"
