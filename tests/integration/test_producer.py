"""The producer against a real Redis: what it XADDs is exactly what the worker will decode."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import redis

from worker import stream_entries
from worker.events import InvalidEvent, decode_event
from worker.names import INPUT_STREAM
from worker.producer import make_event, publish_event, publish_events
from worker.records import SynergyEvent, SynergyType

SYNERGY_TYPES = list(SynergyType)


def sample_events(n: int, *, seed: int = 11, prefix: str = "evt") -> list[SynergyEvent]:
    rng = np.random.default_rng(seed)
    return [
        make_event(
            correlation_id=f"{prefix}-{i}",
            synergy_type=SYNERGY_TYPES[i % len(SYNERGY_TYPES)],
            direction=1 if i % 2 else -1,
            confidence=round(float(rng.uniform(0.5, 1.0)), 4),
            price=4500.0 + i * 0.25,
            atr=4.0 + (i % 7),
            rng=rng,
        )
        for i in range(n)
    ]


def assert_same(decoded: list[SynergyEvent], published: list[SynergyEvent]) -> None:
    assert decoded == published
    for got, sent in zip(decoded, published, strict=True):
        assert got.matrix.tobytes() == sent.matrix.tobytes()


@pytest.mark.parametrize("matrix_encoding", ["f32le", "json"])
def test_published_events_read_back_and_decode_equal(redis_client: redis.Redis, matrix_encoding: str) -> None:
    events = sample_events(200)
    entry_ids = publish_events(redis_client, events, batch=64, matrix_encoding=matrix_encoding)

    entries = stream_entries.entries(redis_client, INPUT_STREAM)
    assert [entry_id for entry_id, _ in entries] == entry_ids
    assert_same([decode_event(fields) for _, fields in entries], events)


def test_publish_event_returns_the_entry_id_of_the_event(redis_client: redis.Redis) -> None:
    event = make_event(correlation_id="single", rng=np.random.default_rng(3))
    entry_id = publish_event(redis_client, event)
    [(read_id, fields)] = stream_entries.entries(redis_client, INPUT_STREAM)
    assert read_id == entry_id
    assert fields[b"correlation_id"] == b"single"
    assert_same([decode_event(fields)], [event])


def test_publishing_to_another_stream_leaves_the_input_stream_alone(redis_client: redis.Redis) -> None:
    publish_events(redis_client, sample_events(3), stream="synergy_events:test")
    assert redis_client.xlen("synergy_events:test") == 3
    assert redis_client.exists(INPUT_STREAM) == 0


def test_an_invalid_event_stops_publishing_before_its_batch(redis_client: redis.Redis) -> None:
    events = sample_events(10)
    broken = replace(make_event(correlation_id="bad", rng=np.random.default_rng(5)), atr=0.0)
    with pytest.raises(InvalidEvent) as caught:
        publish_events(redis_client, [*events[:8], broken, *events[8:]], batch=4)
    assert caught.value.reason == "bad_atr"
    published = [decode_event(fields).correlation_id
                 for _, fields in stream_entries.entries(redis_client, INPUT_STREAM)]
    assert published == [event.correlation_id for event in events[:8]]


def test_maxlen_trims_the_stream_approximately(redis_client: redis.Redis) -> None:
    publish_events(redis_client, sample_events(400), batch=50, maxlen=100)
    length = redis_client.xlen(INPUT_STREAM)
    assert 100 <= length < 400


def test_without_maxlen_nothing_is_trimmed(redis_client: redis.Redis) -> None:
    publish_events(redis_client, sample_events(300), batch=50)
    assert redis_client.xlen(INPUT_STREAM) == 300


def test_make_event_draws_a_repeatable_realistic_matrix_from_the_generator() -> None:
    first = make_event(rng=np.random.default_rng(21))
    again = make_event(rng=np.random.default_rng(21))
    other = make_event(rng=np.random.default_rng(22))
    assert first.matrix.tobytes() == again.matrix.tobytes()
    assert first.matrix.tobytes() != other.matrix.tobytes()
    assert first.correlation_id != again.correlation_id
    matrix = first.matrix
    assert matrix.shape == (60, 7) and matrix.dtype == np.float32
    assert np.isin(matrix[:, [0, 1, 4]], [0.0, 1.0]).all(), "FVG flags are 0/1"
    assert (np.abs(matrix[:, 2]) <= 1.0).all() and (np.abs(matrix[:, 5]) <= 1.0).all()
    assert ((matrix[:, 3] >= 0.0) & (matrix[:, 3] <= 1.0)).all(), "age is exp(-0.1 bars)"
    assert (np.abs(matrix[:, 6]) < 1.0).all(), "volume ratio is a tanh"


def test_make_event_refuses_arguments_that_make_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent) as caught:
        make_event(direction=0, rng=np.random.default_rng(1))
    assert caught.value.reason == "bad_direction"
