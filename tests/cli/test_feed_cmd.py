"""`tacticalctl emit | simulate | replay`: events in, exactly as the worker will read them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from models.bars import read_bars_csv
from models.features import build_features
from models.synergy import detect_synergies
from tests.cli.conftest import Ctl
from tests.integration.streams import wait_for
from worker.events import decode_event
from worker.names import INPUT_STREAM
from worker.stream_entries import entries

SAMPLE = Path(__file__).resolve().parents[2] / "models" / "data" / "sample_bars.csv"


def test_emit_publishes_one_valid_event(ctl: Ctl, redis_client: redis.Redis) -> None:
    result = ctl("emit", "--synergy-type", "TYPE_3", "--direction", "-1", "--correlation-id", "op-1", "--seed", "4",
                 "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["correlation_id"] == "op-1"
    [(entry_id, fields)] = entries(redis_client, INPUT_STREAM)
    assert entry_id.decode() == doc["entry_id"]
    event = decode_event(fields)
    assert (event.correlation_id, event.synergy_type.value, event.direction) == ("op-1", "TYPE_3", -1)


def test_emit_refuses_a_bad_direction_without_a_traceback(ctl: Ctl, redis_client: redis.Redis) -> None:
    result = ctl("emit", "--direction", "0")
    assert result.exit_code == 3
    assert "direction" in result.stderr and "Traceback" not in result.stderr
    assert redis_client.xlen(INPUT_STREAM) == 0


def test_simulate_sends_the_asked_number_of_distinct_valid_events(ctl: Ctl, redis_client: redis.Redis) -> None:
    result = ctl("simulate", "--count", "60", "--rate", "2000", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["sent"] == 60
    events = [decode_event(fields) for _, fields in entries(redis_client, INPUT_STREAM)]
    assert len(events) == 60 and len({e.correlation_id for e in events}) == 60
    again = ctl("simulate", "--count", "5", "--rate", "2000", "--json")
    ids = {decode_event(f).correlation_id for _, f in entries(redis_client, INPUT_STREAM)}
    assert again.exit_code == 0 and len(ids) == 65, "a second live feed gets ids of its own"


def test_replay_publishes_the_synergies_of_a_csv_with_deterministic_ids(ctl: Ctl, redis_client: redis.Redis) -> None:
    bars = read_bars_csv(SAMPLE)
    expected = len(detect_synergies(bars, build_features(bars)))
    first = ctl("replay", str(SAMPLE), "--json")
    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)["sent"] == expected > 0
    ids = [decode_event(fields).correlation_id for _, fields in entries(redis_client, INPUT_STREAM)]
    ctl("replay", str(SAMPLE), "--json")
    replayed = [decode_event(fields).correlation_id for _, fields in entries(redis_client, INPUT_STREAM)]
    assert replayed == ids + ids, "the same file gives the same ids: the worker sees duplicates"


def test_replay_of_a_file_too_short_for_a_feature_window_says_why_it_sent_nothing(
    ctl: Ctl, tmp_path: Path, redis_client: redis.Redis
) -> None:
    short = tmp_path / "short.csv"
    short.write_text("\n".join(SAMPLE.read_text().splitlines()[:41]) + "\n")  # the header and 40 bars
    result = ctl("replay", str(short), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["sent"] == 0 and redis_client.xlen(INPUT_STREAM) == 0
    assert "no synergy detected in its 40 bars: a synergy needs 60 bars of history" in result.stderr


def test_replay_of_a_bad_csv_names_the_line(ctl: Ctl, tmp_path: Path, redis_client: redis.Redis) -> None:
    bad = tmp_path / "bars.csv"
    lines = SAMPLE.read_text().splitlines()
    fields = lines[3].split(",")
    fields[2] = str(float(fields[3]) - 100)  # high below low
    bad.write_text("\n".join([*lines[:3], ",".join(fields), *lines[4:]]) + "\n")
    result = ctl("replay", str(bad))
    assert result.exit_code == 3
    assert ":4" in result.stderr and "Traceback" not in result.stderr
    assert redis_client.xlen(INPUT_STREAM) == 0


def test_a_feed_that_loses_redis_says_how_far_it_got(ctl: Ctl, private_redis) -> None:
    """Redis gone mid-feed: one line, exit 2, and the count in it is what landed (up to the batch in flight), so the
    operator knows where the feed stopped. Nothing is sent twice."""
    import re
    import threading

    stopper = threading.Timer(1.5, private_redis.stop)  # a clean shutdown: every XADD answered is on disk
    stopper.start()
    try:
        result = ctl("simulate", "--rate", "400", "--duration", "30", "--json", redis_url=private_redis.url())
    finally:
        stopper.join()
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    found = re.search(r"^tacticalctl: simulate: Redis unreachable after (\d+) events sent \((\d+) more in flight",
                      result.stderr)
    assert found, result.stderr
    sent, in_flight = map(int, found.groups())
    summary = json.loads(result.stdout)  # a script reads the same figures
    assert (summary["sent"], summary["in_flight"]) == (sent, in_flight) and "unreachable" in summary["error"]
    private_redis.start()
    client = redis.Redis.from_url(private_redis.url())
    try:
        landed = entries(client, INPUT_STREAM)
    finally:
        client.close()
    assert sent >= 100 and sent <= len(landed) <= sent + in_flight, (sent, in_flight, len(landed))
    ids = [decode_event(fields).correlation_id for _, fields in landed]
    assert len(set(ids)) == len(ids)


def test_a_feed_refused_writes_stops_the_same_way(ctl: Ctl, private_redis) -> None:
    """A failover that leaves the URL on a replica: writes refused, not a traceback."""
    import threading

    from worker.embedded_redis import free_port

    admin = redis.Redis.from_url(private_redis.url())
    demote = threading.Timer(1.0, lambda: admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port())))
    demote.start()
    try:
        result = ctl("simulate", "--rate", "200", "--duration", "30", redis_url=private_redis.url())
    finally:
        demote.join()
        admin.execute_command("REPLICAOF", "NO", "ONE")
        admin.close()
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr.startswith("tacticalctl: simulate: Redis refusing writes after "), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_replay_cut_short_names_the_command_that_finishes_it_with_the_same_ids(ctl: Ctl, private_redis) -> None:
    import re
    import shlex
    import threading

    stopper = threading.Timer(1.0, private_redis.stop)
    stopper.start()
    try:
        cut = ctl("replay", str(SAMPLE), "--rate", "10", "--symbol", "E S", "--id-prefix", "r1-",
                  redis_url=private_redis.url())
    finally:
        stopper.join()
    assert cut.exit_code == 2, cut.stdout + cut.stderr
    again = re.search(r"run `tacticalctl (replay [^`]+)` again", cut.stderr)
    assert again and "--symbol 'E S' --id-prefix r1-" in again.group(1), cut.stderr
    private_redis.start()
    client = redis.Redis.from_url(private_redis.url())
    try:
        landed = {decode_event(fields).correlation_id for _, fields in entries(client, INPUT_STREAM)}
        assert 0 < len(landed) < 22
        assert ctl(*shlex.split(again.group(1)), redis_url=private_redis.url()).exit_code == 0
        replayed = [decode_event(fields).correlation_id for _, fields in entries(client, INPUT_STREAM)][len(landed):]
    finally:
        client.close()
    assert len(replayed) == 22 and landed <= set(replayed), "the rerun makes the same ids: what landed is a duplicate"


def test_an_event_or_feed_the_worker_would_refuse_is_exit_3_before_anything_is_sent(
    ctl: Ctl, redis_client: redis.Redis
) -> None:
    for args in (["emit", "--price", "nan"], ["emit", "--correlation-id", ""], ["emit", "--atr", "-5"],
                 ["simulate", "--symbol", "", "--count", "3"], ["simulate", "--id-prefix", "x" * 200, "--count", "3"],
                 ["replay", str(SAMPLE), "--id-prefix", "x" * 200], ["simulate", "--rate", "inf", "--count", "3"],
                 ["emit", "--seed", "-1"]):
        result = ctl(*args)
        assert result.exit_code == 3, (args, result.output)
        assert "Traceback" not in result.output
    assert redis_client.xlen(INPUT_STREAM) == 0


@pytest.mark.parametrize("cid", ["ord[red]2", "ord[/x]1"])
def test_emit_says_the_id_it_sent_even_one_that_looks_like_markup(ctl: Ctl, redis_client: redis.Redis,
                                                                  cid: str) -> None:
    result = ctl("emit", "--correlation-id", cid)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"emitted {cid} as entry" in result.stdout


@contextmanager
def _sending_feed(redis_url: str, redis_client: redis.Redis, rate: int, *, sent: int,
                  **popen: Any) -> Iterator[subprocess.Popen]:
    """`tacticalctl simulate --rate RATE --json` in a process of its own, once Redis holds `sent` of its events;
    killed on the way out if the test left it running."""
    feed = subprocess.Popen([sys.executable, "-c", "from tacticalctl.app import main; main()", "--redis-url", redis_url,
                             "simulate", "--rate", str(rate), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)
    try:
        wait_for(lambda: redis_client.exists(INPUT_STREAM) and redis_client.xlen(INPUT_STREAM) >= sent, timeout_s=60,
                 what="the feed sending")
        yield feed
    finally:
        if feed.poll() is None:
            feed.kill()
            feed.communicate()


@pytest.mark.parametrize("rate", [20, 3000])
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_feed_says_what_it_sent_and_for_how_long(redis_url: str, redis_client: redis.Redis,
                                                          stop: signal.Signals, rate: int) -> None:
    # Ctrl-C, or a supervisor's SIGTERM (`timeout`): the counts are printed either way, with the time they took, and
    # they are what Redis holds, even when the signal lands while a pipeline's reply is being read (the fast feed).
    with _sending_feed(redis_url, redis_client, rate, sent=10) as feed:
        feed.send_signal(stop)
        stdout, stderr = feed.communicate(timeout=30)
    summary = json.loads(stdout)
    assert summary["sent"] >= 10 and summary["elapsed_s"] > 0, (summary, stderr)
    assert summary["sent"] == redis_client.xlen(INPUT_STREAM), stderr


def test_a_feed_stuck_on_redis_stops_on_a_second_signal_and_says_its_count_is_uncertain(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # The first signal waits for the batch in flight; a Redis that holds it (CLIENT PAUSE WRITE) must not hold the
    # operator too: the second stops at once, saying the last batch may have landed.
    with _sending_feed(redis_url, redis_client, 20, sent=5) as feed:
        try:
            redis_client.execute_command("CLIENT", "PAUSE", "30000", "WRITE")
            time.sleep(0.3)  # the feed's next XADD is now held by Redis
            feed.send_signal(signal.SIGTERM)
            with pytest.raises(subprocess.TimeoutExpired):
                feed.wait(timeout=0.5)
            feed.send_signal(signal.SIGTERM)
            stdout, stderr = feed.communicate(timeout=10)
        finally:
            redis_client.execute_command("CLIENT", "UNPAUSE")
    summary = json.loads(stdout)
    assert "stopped mid-batch" in stderr and "may have been written" in stderr, stderr
    assert 5 <= summary["sent"] <= redis_client.xlen(INPUT_STREAM)


def test_once_stopped_by_a_signal_a_feed_ignores_the_next_ones_until_it_exits() -> None:
    # An impatient double Ctrl-C: a second signal landing after the feed stopped sending — while it prints its counts,
    # or after — must not kill it (exit 130) with or without its summary. Two signals sent back to back reach a
    # process as one, so the handler is driven here, in this process, signal by signal.
    from tacticalctl.feed import _StopOnSignal

    original = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    stop = threading.Event()
    try:
        with _StopOnSignal(stop) as signals:
            os.kill(os.getpid(), signal.SIGINT)  # the first: stop after the batch in flight
            time.sleep(0.01)
            assert stop.is_set()
            signals.sending = False
            os.kill(os.getpid(), signal.SIGINT)  # while the counts are printed
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # after: the command is returning
        time.sleep(0.01)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN, "ignored by the OS: shutdown cannot undo it"
    except KeyboardInterrupt:
        pytest.fail("a signal after the feed stopped sending interrupted it")
    finally:
        for signum, handler in original.items():  # an ignored SIGTERM would be inherited by later tests' children
            signal.signal(signum, handler)


def test_a_second_signal_landing_while_the_stopped_feed_exits_still_exits_0(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The interpreter puts Python's own signal handlers back to the default while it shuts down: a second SIGTERM
    landing right after the counts were printed killed the process (exit -15) — a QA helper's 5 of 5. Once stopped,
    the feed has the signals ignored by the OS, which shutdown keeps."""
    for attempt in range(3):
        with _sending_feed(redis_url, redis_client, 200, sent=5 + attempt) as feed:
            feed.send_signal(signal.SIGTERM)
            assert feed.stdout is not None
            feed.stdout.readline()  # the counts: the feed has stopped sending
            feed.send_signal(signal.SIGTERM)
            _, stderr = feed.communicate(timeout=30)
        assert feed.returncode == 0, (attempt, feed.returncode, stderr)
        redis_client.delete(INPUT_STREAM)


def test_a_feed_that_ends_on_its_own_gives_ctrl_c_back() -> None:
    from tacticalctl.feed import _StopOnSignal

    original = signal.getsignal(signal.SIGINT)
    try:
        with _StopOnSignal(threading.Event()):
            assert signal.getsignal(signal.SIGINT) is not original
        assert signal.getsignal(signal.SIGINT) is original
    finally:
        signal.signal(signal.SIGINT, original)


def test_a_feed_started_ignoring_ctrl_c_keeps_ignoring_it(redis_url: str, redis_client: redis.Redis) -> None:
    # A background job of a script (`tacticalctl simulate &`): the terminal's Ctrl-C is not for it.
    ignore_ctrl_c = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    with _sending_feed(redis_url, redis_client, 20, sent=3, preexec_fn=ignore_ctrl_c) as feed:
        feed.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            feed.wait(timeout=1.0)
        feed.send_signal(signal.SIGTERM)
        stdout, _ = feed.communicate(timeout=30)
    assert json.loads(stdout)["sent"] == redis_client.xlen(INPUT_STREAM)
