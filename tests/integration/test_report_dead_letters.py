"""The daily report's dead-letter reasons: counted by reason code, whatever each event's own detail says."""

from __future__ import annotations

import redis

from worker.names import DEAD_LETTER_STREAM
from worker.ops.reports import read_dead_letters


def test_reasons_are_counted_by_their_code_and_the_rest_is_summed(redis_client: redis.Redis) -> None:
    reasons = ([f"matrix_not_finite: matrix[{i}][1] is nan" for i in range(6)] + ["missing_field: missing symbol"] * 2
               + [f"reason_{i}: x" for i in range(5)])
    for reason in reasons:
        redis_client.xadd(DEAD_LETTER_STREAM, {"dead_reason": reason})
    stats = read_dead_letters(redis_client, 0, 2**62)
    assert stats.count == len(reasons)
    assert stats.reasons[:2] == (("matrix_not_finite", 6), ("missing_field", 2))
    assert sum(n for _, n in stats.reasons) == len(reasons), "every dead letter is counted in some line"
    assert stats.reasons[-1] == ("2 other reason(s)", 2)
