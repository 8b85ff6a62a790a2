from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from models.bars import Bars, read_bars_csv
from models.features import FEATURE_INDEX, average_true_range, build_features, track_fair_value_gaps
from models.simulator import SimulatorConfig, simulate_bars
from models.synergy import (
    COOLDOWN_BARS,
    MOMENTUM_ATR_MULTIPLE,
    PULLBACK_ATR_MULTIPLE,
    VOLUME_SPIKE_RATIO,
    Synergy,
    correlation_id,
    detect_synergies,
    synergy_events,
)
from worker.events import validate_event
from worker.records import MATRIX_SHAPE, SynergyType

SAMPLE_CSV = Path(__file__).resolve().parents[2] / "models" / "data" / "sample_bars.csv"

FLAT = (100.0, 100.5, 99.5, 100.0)


def make_bars(ohlc: list[tuple[float, float, float, float]], volume: list[float], symbol: str = "T") -> Bars:
    columns = np.array(ohlc)
    start = np.datetime64("2026-01-05T00:05:00", "s")
    return Bars(
        timestamps=start + np.arange(len(ohlc)) * np.timedelta64(300, "s"),
        open=columns[:, 0],
        high=columns[:, 1],
        low=columns[:, 2],
        close=columns[:, 3],
        volume=np.array(volume, dtype=np.float64),
        symbol=symbol,
    )


def steady_rally(flat_bars: int = 70, spike_at: int | None = None, *more_spikes: int) -> Bars:
    """Flat bars, then overlapping rising bars (no fair value gap) from bar `flat_bars` on."""
    ohlc = [FLAT] * flat_bars
    close = 100.0
    for _ in range(6):
        ohlc.append((close, close + 1.2, close - 1.0, close + 1.0))
        close += 1.0
    ohlc += [(close, close + 0.5, close - 0.5, close)] * 10
    volume = [100.0] * len(ohlc)
    for spike in (spike_at, *more_spikes):
        if spike is not None:
            volume[spike] = 400.0
    return make_bars(ohlc, volume)


def gap_rally(spike_at: int | None = None) -> Bars:
    """Flat bars, then an impulse whose next bar leaves a bullish gap [100.5, 101] on bar 71."""
    ohlc = [FLAT] * 70
    ohlc += [(100.0, 102.2, 99.8, 102.0), (102.0, 103.2, 101.0, 103.0), (103.0, 104.2, 102.0, 104.0)]
    ohlc += [(104.0, 104.5, 102.9, 104.0)] * 10
    volume = [100.0] * len(ohlc)
    if spike_at is not None:
        volume[spike_at] = 400.0
    return make_bars(ohlc, volume)


def mirrored(bars: Bars) -> Bars:
    return make_bars(
        list(zip(200 - bars.open, 200 - bars.low, 200 - bars.high, 200 - bars.close, strict=True)),
        bars.volume.tolist(),
    )


def detect(bars: Bars) -> list[Synergy]:
    return detect_synergies(bars, build_features(bars))


def test_momentum_with_a_volume_spike_is_type_2() -> None:
    bars = steady_rally(spike_at=71)
    [synergy] = detect(bars)
    assert (synergy.index, synergy.synergy_type, synergy.direction) == (71, SynergyType.TYPE_2, 1)
    atr = average_true_range(bars)[71]
    momentum_strength = min(1.0, 2.0 / (2 * MOMENTUM_ATR_MULTIPLE * atr))
    volume_strength = build_features(bars)[71, FEATURE_INDEX["volume_ratio"]]
    assert synergy.confidence == pytest.approx((momentum_strength + volume_strength) / 2, abs=1e-4)


def test_the_mirror_image_is_a_short() -> None:
    [synergy] = detect(mirrored(steady_rally(spike_at=71)))
    assert (synergy.index, synergy.synergy_type, synergy.direction) == (71, SynergyType.TYPE_2, -1)


def test_one_move_triggers_once() -> None:
    bars = steady_rally(70, 71, 73)
    assert build_features(bars)[73, FEATURE_INDEX["volume_ratio"]] >= VOLUME_SPIKE_RATIO
    assert [s.index for s in detect(bars)] == [71]


def test_momentum_alone_is_not_a_synergy() -> None:
    assert detect(steady_rally()) == []


def test_a_fresh_gap_with_momentum_is_type_1_and_with_a_volume_spike_type_4() -> None:
    [plain] = detect(gap_rally())
    assert (plain.index, plain.synergy_type, plain.direction) == (71, SynergyType.TYPE_1, 1)
    [loud] = detect(gap_rally(spike_at=71))
    assert (loud.index, loud.synergy_type, loud.direction) == (71, SynergyType.TYPE_4, 1)
    [short] = detect(mirrored(gap_rally(spike_at=71)))
    assert (short.index, short.synergy_type, short.direction) == (71, SynergyType.TYPE_4, -1)


def test_a_pullback_into_a_gap_that_is_rejected_is_type_3() -> None:
    ohlc = [FLAT] * 60
    ohlc += [(100.0, 102.2, 99.8, 102.0), (102.0, 103.2, 101.0, 103.0)]  # bullish gap [100.5, 101] on bar 61
    ohlc += [(103.0, 103.5, 102.0, 103.0)] * 8
    ohlc += [(103.0, 103.2, 101.8, 102.0), (102.0, 102.1, 101.2, 101.4)]  # the pullback
    ohlc += [(101.4, 101.9, 100.6, 101.6)]  # bar 72 trades to the gap's level 100.75 and closes near its high
    ohlc += [(101.6, 102.0, 101.2, 101.6)] * 3
    synergies = detect(make_bars(ohlc, [100.0] * len(ohlc)))
    assert [(s.index, s.synergy_type, s.direction) for s in synergies] == [
        (61, SynergyType.TYPE_1, 1),
        (72, SynergyType.TYPE_3, 1),
    ]
    assert 0.5 <= synergies[1].confidence <= 1.0


def test_bars_without_a_full_window_are_never_flagged() -> None:
    early = steady_rally(flat_bars=30, spike_at=31)
    padded = make_bars(
        [*zip(early.open, early.high, early.low, early.close, strict=True)] + [FLAT] * 40, [100.0] * (len(early) + 40)
    )
    assert detect(padded) == []
    assert detect(steady_rally(flat_bars=58, spike_at=59))[0].index == 59


def test_features_that_do_not_match_the_bars_are_refused() -> None:
    bars = steady_rally()
    with pytest.raises(ValueError, match="build_features"):
        detect_synergies(bars, build_features(bars)[:-1])


@pytest.fixture(scope="module")
def simulated() -> tuple[Bars, np.ndarray, list[Synergy]]:
    bars = simulate_bars(SimulatorConfig(seed=0))
    features = build_features(bars)
    return bars, features, detect_synergies(bars, features)


def test_a_simulated_day_count_of_synergies_is_realistic(simulated: tuple[Bars, np.ndarray, list[Synergy]]) -> None:
    _, _, synergies = simulated
    assert 300 <= len(synergies) <= 2_500
    counts = Counter(s.synergy_type for s in synergies)
    assert set(counts) == {SynergyType.TYPE_1, SynergyType.TYPE_2, SynergyType.TYPE_3, SynergyType.TYPE_4}
    assert {s.direction for s in synergies} == {1, -1}
    indices = [s.index for s in synergies]
    assert indices == sorted(set(indices)) and indices[0] >= 59
    assert all(0.0 <= s.confidence <= 1.0 for s in synergies)


def test_every_simulated_synergy_meets_its_documented_rule(
    simulated: tuple[Bars, np.ndarray, list[Synergy]],
) -> None:
    bars, features, synergies = simulated
    atr = average_true_range(bars)
    track = track_fair_value_gaps(bars)
    volume_ratio = features[:, FEATURE_INDEX["volume_ratio"]]
    for s in synergies:
        i, d = s.index, s.direction
        move = (bars.close[i] - bars.close[i - 5]) / atr[i]
        if s.synergy_type is SynergyType.TYPE_3:
            mitigated = track.mitigated_bullish[i] if d > 0 else track.mitigated_bearish[i]
            close_location = (bars.close[i] - bars.low[i]) / (bars.high[i] - bars.low[i])
            assert mitigated and move * d <= -PULLBACK_ATR_MULTIPLE
            assert (close_location >= 0.5) if d > 0 else (close_location <= 0.5)
            continue
        assert move * d >= MOMENTUM_ATR_MULTIPLE, s
        spike = volume_ratio[i] >= VOLUME_SPIKE_RATIO
        assert spike == (s.synergy_type in (SynergyType.TYPE_2, SynergyType.TYPE_4)), s
        if s.synergy_type in (SynergyType.TYPE_1, SynergyType.TYPE_4):
            recent = track.formed_direction[i - 2 : i + 1]
            assert d in recent.tolist(), s
    for direction in (1, -1):
        same_way = [s.index for s in synergies if s.direction == direction]
        assert min(np.diff(same_way)) > COOLDOWN_BARS


def test_events_are_valid_and_carry_the_synergy_bar(simulated: tuple[Bars, np.ndarray, list[Synergy]]) -> None:
    bars, features, synergies = simulated
    events = list(synergy_events(bars, features))
    atr = average_true_range(bars)
    assert len(events) == len(synergies)
    for event, synergy in zip(events, synergies, strict=True):
        validate_event(event)
        i = synergy.index
        assert event.matrix.shape == MATRIX_SHAPE and event.matrix.dtype == np.float32
        np.testing.assert_array_equal(event.matrix, features[i - 59 : i + 1])
        assert (event.synergy_type, event.direction, event.confidence) == (
            synergy.synergy_type,
            synergy.direction,
            synergy.confidence,
        )
        assert event.price == bars.close[i] and event.atr == atr[i] and event.atr > 0
        assert event.timestamp == np.datetime_as_string(bars.timestamps[i], unit="s") + "Z"
        assert event.symbol == "SIM"
    assert len({event.correlation_id for event in events}) == len(events)


def test_replaying_the_same_bars_gives_the_same_ids_and_a_prefix_gives_new_ones() -> None:
    bars = read_bars_csv(SAMPLE_CSV, symbol="SAMPLE")
    first = [event.correlation_id for event in synergy_events(bars)]
    again = [event.correlation_id for event in synergy_events(read_bars_csv(SAMPLE_CSV, symbol="SAMPLE"))]
    prefixed = [event.correlation_id for event in synergy_events(bars, id_prefix="run7-")]
    assert first and first == again
    assert prefixed == [f"run7-{cid}" for cid in first]
    assert first[0].startswith("SAMPLE-2026")


def test_the_sample_csv_yields_every_synergy_type() -> None:
    events = list(synergy_events(read_bars_csv(SAMPLE_CSV)))
    assert {event.synergy_type for event in events} == {
        SynergyType.TYPE_1,
        SynergyType.TYPE_2,
        SynergyType.TYPE_3,
        SynergyType.TYPE_4,
    }
    for event in events:
        validate_event(event)


def test_correlation_ids_are_readable_and_safe() -> None:
    bar_time = np.datetime64("2026-01-05T14:35:00", "s")
    assert correlation_id("ES", bar_time) == "ES-20260105T143500Z"
    assert correlation_id("ES H6", bar_time, "r1-") == "r1-ES_H6-20260105T143500Z"
    with pytest.raises(ValueError, match="at most 128"):
        correlation_id("X" * 120, bar_time)
