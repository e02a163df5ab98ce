"""The connector worker commits only offsets whose calls were all answered."""

from __future__ import annotations

from connectors.worker import OffsetTracker


def test_commit_stops_below_the_lowest_call_in_flight() -> None:
    t = OffsetTracker()
    for offset in (10, 11, 12):
        t.started(0, offset)
    t.finished(0, 12)
    t.finished(0, 11)
    assert t.committable() == {0: 10}, "offset 10 is still in flight: nothing past it may be committed"
    t.mark_committed(t.committable())
    t.finished(0, 10)
    assert t.committable() == {0: 13}


def test_partitions_are_tracked_independently_and_revocation_forgets() -> None:
    t = OffsetTracker()
    t.started(0, 5)
    t.started(1, 7)
    t.finished(1, 7)
    assert t.committable() == {1: 8}
    t.forget([0, 1])
    assert t.committable() == {}
