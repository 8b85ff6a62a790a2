"""What a stream lost since it began, from XINFO STREAM's figures: one reading for the lag (was anything the group
had not been delivered removed?) and the dead-letter replay (from where is the decisions stream whole?)."""

from __future__ import annotations

from worker.stream_entries import Removal, StreamRemovals


def test_a_stream_nothing_was_removed_from_is_whole_from_the_start() -> None:
    removals = StreamRemovals(removed=0, first_entry_id=(5, 0), last_generated_id=(9, 0), max_deleted_id=(0, 0))
    assert removals.whole_from() == ((0, 0), None)
    assert not removals.removed_after((0, 0))


def test_a_trimmed_stream_is_whole_from_its_first_entry() -> None:
    removals = StreamRemovals(removed=4, first_entry_id=(5, 0), last_generated_id=(9, 0), max_deleted_id=(0, 0))
    assert removals.whole_from() == ((5, 0), Removal.TRIMMED)
    assert removals.removed_after((3, 0)), "entries between the group's position and the first entry are gone"
    assert not removals.removed_after((6, 0))
    right_after = StreamRemovals(removed=4, first_entry_id=(4, 8), last_generated_id=(9, 0), max_deleted_id=(0, 0))
    assert not right_after.removed_after((4, 7)), "the trim stopped right after the position: nothing past it is gone"


def test_an_emptied_stream_is_whole_only_past_its_last_id() -> None:
    removals = StreamRemovals(removed=9, first_entry_id=None, last_generated_id=(9, 0), max_deleted_id=(0, 0))
    assert removals.whole_from() == ((9, 1), Removal.TRIMMED)
    assert removals.removed_after((8, 0)) and not removals.removed_after((9, 0))


def test_a_deletion_from_the_middle_counts_past_its_id() -> None:
    removals = StreamRemovals(removed=1, first_entry_id=(1, 0), last_generated_id=(9, 0), max_deleted_id=(6, 0))
    assert removals.whole_from() == ((6, 1), Removal.DELETED)
    assert removals.removed_after((5, 0))
    assert not removals.removed_after((6, 0)), "the deleted entry itself had been delivered"


def test_a_trim_past_the_greatest_deletion_is_what_counts() -> None:
    removals = StreamRemovals(removed=5, first_entry_id=(8, 0), last_generated_id=(9, 0), max_deleted_id=(6, 0))
    assert removals.whole_from() == ((8, 0), Removal.TRIMMED)


def test_a_server_that_does_not_say_leaves_nothing_known_whole_and_flags_nothing() -> None:
    removals = StreamRemovals(removed=None, first_entry_id=(5, 0), last_generated_id=(9, 0), max_deleted_id=None)
    assert removals.whole_from() == ((9, 1), Removal.UNKNOWN)
    assert not removals.removed_after((0, 0))
