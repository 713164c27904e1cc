"""The pace of reads while printing (api/pacing.py), on a clock the test moves by hand; the
whole middleware through a real server is in test_api.py."""

from __future__ import annotations

import pytest

from lezerprintd.api.pacing import MAX_ADDRESSES, Pace
from lezerprintd.errors import UserError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_answered_at_once_then_reads_queue_at_the_pace_then_are_refused() -> None:
    clock = Clock()
    pace = Pace(2, clock)
    waits = [pace.wait_for("10.0.0.5") for _ in range(6)]
    assert waits == [0, 0, 0.5, 1.0, 1.5, 2.0]
    with pytest.raises(UserError) as refused:
        pace.wait_for("10.0.0.5")
    assert refused.value.status == 429
    assert refused.value.headers == {"Retry-After": "3"}
    # Another address has its own pace.
    assert pace.wait_for("10.0.0.6") == 0
    # A refused read is not counted: once the queue has drained, the pace starts again.
    clock.now += 2.0
    assert pace.wait_for("10.0.0.5") == 0.5
    clock.now += 60
    assert [pace.wait_for("10.0.0.5") for _ in range(3)] == [0, 0, 0.5]


def test_addresses_are_forgotten_before_they_grow_without_bound() -> None:
    clock = Clock()
    pace = Pace(5, clock)
    for number in range(MAX_ADDRESSES * 3):
        pace.wait_for(f"address {number}")
        clock.now += 0.001
    assert len(pace._buckets) <= MAX_ADDRESSES
