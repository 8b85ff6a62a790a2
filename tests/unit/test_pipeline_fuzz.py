"""Garbage stream entries through the real pipeline against real Redis: every entry is decided, dead-lettered with the
decoder's own reason, or acked as a duplicate of a decided correlation id; the pipeline never raises and leaves nothing
pending. (`test_events_fuzz.py` fuzzes the decoder alone; this is the same garbage in batches, with the claim and
commit scripts, duplicate ids and redeliveries.)"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import cast

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker import stream_entries
from worker.aggregator import AggregatorConfig
from worker.delivery import DeliveryScripts, ensure_group
from worker.embedded_redis import EmbeddedRedis
from worker.events import MATRIX_BYTES, OPTIONAL_FIELDS, REQUIRED_FIELDS, InvalidEvent, decode_event, encode_event
from worker.inference import AgentEnsemble
from worker.names import COMMANDS_STREAM, CONSUMER_GROUP, DEAD_LETTER_STREAM, DECISIONS_STREAM, INPUT_STREAM
from worker.pipeline import EventPipeline, PipelineConfig, StreamEntry
from worker.producer import make_event
from worker.stream_entries import Entry

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CONFIG = PipelineConfig(
    consumer="fuzz-consumer", processing_lease_ms=30_000, completed_ttl_s=300, max_deliveries=3, max_event_bytes=8192
)
FIELD_NAMES = [name.encode() for name in (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)]
CORRELATION_IDS = [b"dup-a", b"dup-b", b"dup-c", b"unique-1", b"unique-2", b"unique-3", b"unique-4"]


def wire(fields: dict[str, bytes | str]) -> dict[bytes, bytes]:
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}


VALID_TEMPLATES = [
    wire(encode_event(make_event(rng=np.random.default_rng(seed), direction=1 - 2 * (seed % 2)), matrix_encoding=enc))
    for seed, enc in enumerate(["f32le", "f32le", "json", "f32le"])
]


@pytest.fixture(scope="module")
def client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server.url())
    yield connection
    connection.flushdb()
    connection.close()


garbage = st.one_of(
    st.binary(max_size=48),
    st.binary(min_size=MATRIX_BYTES - 4, max_size=MATRIX_BYTES + 4),
    st.text(max_size=24).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"nan", b"inf", b"-1", b"0", b"1", b"2", b"1e999", b"TYPE_9", b"manual", b"json", b"[]"]),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda x: repr(x).encode()),
)


@st.composite
def entry_fields(draw: st.DrawFn) -> dict[bytes, bytes]:
    fields = dict(draw(st.sampled_from(VALID_TEMPLATES)))
    fields[b"correlation_id"] = draw(st.sampled_from(CORRELATION_IDS))
    kind = draw(st.sampled_from(["valid", "replace", "delete", "extra", "oversize", "random"]))
    if kind == "replace":
        for name in draw(st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=3, unique=True)):
            fields[name] = draw(garbage)
    elif kind == "delete":
        del fields[draw(st.sampled_from([name for name in FIELD_NAMES if name in fields]))]
    elif kind == "extra":
        fields[draw(st.binary(min_size=1, max_size=12))] = draw(garbage)
    elif kind == "oversize":
        fields[b"padding"] = b"x" * draw(st.integers(min_value=CONFIG.max_event_bytes - 2000, max_value=20_000))
    elif kind == "random":
        fields = draw(st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.binary(min_size=1, max_size=12)),
                                      garbage, min_size=1, max_size=12))
    return fields


batches = st.lists(
    st.tuples(entry_fields(), st.one_of(st.just(1), st.integers(min_value=1, max_value=CONFIG.max_deliveries + 2))),
    min_size=1,
    max_size=12,
)


def read_new(client: redis.Redis, count: int) -> list[Entry]:
    """XREADGROUP of the input stream as CONFIG's consumer. redis-py types the reply as any reply; this client's is
    RESP2's list of [stream, entries], in bytes."""
    reply = client.xreadgroup(CONSUMER_GROUP, CONFIG.consumer, {INPUT_STREAM: ">"}, count=count)
    return cast(list[tuple[bytes, list[Entry]]], reply)[0][1]


def expected_outcome(fields: dict[bytes, bytes], delivery_count: int) -> tuple[str, str]:
    """('decide', correlation id) or ('dead', reason) — what the worker must do with this entry."""
    if delivery_count > CONFIG.max_deliveries:
        return "dead", f"max_deliveries: delivered {delivery_count} times (limit {CONFIG.max_deliveries})"
    try:
        event = decode_event(fields, max_event_bytes=CONFIG.max_event_bytes)
    except InvalidEvent as exc:
        return "dead", str(exc)
    return "decide", event.correlation_id


@FUZZ
@given(batch=batches)
def test_every_garbage_entry_is_decided_dead_lettered_or_a_duplicate(
    client: redis.Redis, ensemble: AgentEnsemble, batch: list[tuple[dict[bytes, bytes], int]]
) -> None:
    client.flushdb()
    ensure_group(client)
    for fields, _ in batch:
        client.xadd(INPUT_STREAM, fields)  # type: ignore[arg-type]
    delivered = read_new(client, len(batch))
    entries = [
        StreamEntry(entry_id, fields, delivery_count)
        for (entry_id, fields), (_, delivery_count) in zip(delivered, batch, strict=True)
    ]
    pipeline = EventPipeline(DeliveryScripts(client), ensemble, AggregatorConfig(), CONFIG)

    result = pipeline.process(entries)  # never raises: a StageError here is the failure

    expected = {entry.entry_id: expected_outcome(dict(entry.fields), entry.delivery_count) for entry in entries}
    to_decide = {value for kind, value in expected.values() if kind == "decide"}
    decisions = dict(stream_entries.entries(client, DECISIONS_STREAM))
    decided_by_cid = Counter(fields[b"correlation_id"].decode() for fields in decisions.values())
    assert decided_by_cid == Counter(to_decide), "each decodable correlation id decided exactly once"
    decided_entries = {fields[b"event_id"] for fields in decisions.values()}
    assert all(expected[entry_id][0] == "decide" for entry_id in decided_entries)

    dead = {fields[b"dead_entry_id"]: fields for _, fields in stream_entries.entries(client, DEAD_LETTER_STREAM)}
    assert client.xlen(DEAD_LETTER_STREAM) == len(dead), "one dead letter per entry"
    for entry in entries:
        kind, reason = expected[entry.entry_id]
        if kind == "dead":
            letter = dead[entry.entry_id]
            assert letter[b"dead_reason"].decode() == reason
            assert letter[b"dead_delivery_count"] == str(entry.delivery_count).encode()
            assert all(letter[k] == v for k, v in entry.fields.items() if not k.startswith(b"dead_"))
        else:
            assert entry.entry_id not in dead

    executed = {fields[b"correlation_id"] for fields in decisions.values() if fields[b"execute"] == b"1"}
    commands = Counter(fields[b"correlation_id"] for _, fields in stream_entries.entries(client, COMMANDS_STREAM))
    assert set(commands) == executed and all(n == 1 for n in commands.values())

    assert len(result.decisions) == len(to_decide)
    assert sorted(result.dead_reasons) == sorted(reason for kind, reason in expected.values() if kind == "dead")
    assert len(result.decisions) + len(result.dead_letters) + result.duplicates == len(entries)
    assert client.xpending(INPUT_STREAM, CONSUMER_GROUP)["pending"] == 0, "every entry acked"
    assert client.keys("tactical:processing:*") == [], "no lease left behind"


def test_a_stalled_owner_resuming_after_its_entries_were_taken_over_writes_nothing_twice(
    client: redis.Redis, ensemble: AgentEnsemble
) -> None:
    """The owner reads a batch, stalls past the idle time; another consumer reclaims and finishes it (decision and
    dead letter); the owner wakes up and commits the batch it still holds: no second decision, command or dead
    letter. (The chaos soak found the second dead letter before the commit script checked its XACK.)"""
    client.flushdb()
    ensure_group(client)
    valid = {**VALID_TEMPLATES[0], b"correlation_id": b"stalled-1"}
    invalid = {**VALID_TEMPLATES[1], b"correlation_id": b"stalled-2", b"matrix": b"\x00" * 7}
    for fields in (valid, invalid):
        client.xadd(INPUT_STREAM, fields)  # type: ignore[arg-type]
    stalled_owner = EventPipeline(DeliveryScripts(client), ensemble, AggregatorConfig(), CONFIG)
    delivered = read_new(client, 2)
    held = [StreamEntry(entry_id, fields) for entry_id, fields in delivered]

    rescuer = EventPipeline(DeliveryScripts(client), ensemble, AggregatorConfig(), replace(CONFIG, consumer="rescuer"))
    _, reclaimed, _ = client.xautoclaim(INPUT_STREAM, CONSUMER_GROUP, "rescuer", min_idle_time=0, start_id="0-0")
    rescued = rescuer.process([StreamEntry(entry_id, fields, 2) for entry_id, fields in reclaimed])
    assert len(rescued.decisions) == 1 and len(rescued.dead_letters) == 1

    late = stalled_owner.process(held)

    assert late.decisions == [] and late.dead_letters == []
    assert late.duplicates == 2
    assert client.xlen(DECISIONS_STREAM) == 1
    assert client.xlen(DEAD_LETTER_STREAM) == 1
    assert client.xlen(COMMANDS_STREAM) <= 1
    assert client.xpending(INPUT_STREAM, CONSUMER_GROUP)["pending"] == 0
