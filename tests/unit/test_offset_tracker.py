"""The connector worker commits only offsets whose calls were all answered, and only on partitions it owns."""

from __future__ import annotations

from connectors.worker import Commit, OffsetTracker


def offsets(t: OffsetTracker) -> dict[int, int]:
    return {c.partition: c.offset for c in t.committable()}


def test_commit_stops_below_the_lowest_call_in_flight() -> None:
    t = OffsetTracker()
    t.assign([0])
    epochs = [t.started(0, offset) for offset in (10, 11, 12)]
    assert epochs[0] is not None
    assert epochs == [epochs[0]] * 3
    t.finished(0, 12, epochs[0])
    t.finished(0, 11, epochs[0])
    assert offsets(t) == {0: 10}, "offset 10 is still in flight: nothing past it may be committed"
    t.mark_committed(t.committable())
    assert t.committable() == [], "nothing new to commit"
    t.finished(0, 10, epochs[0])
    assert offsets(t) == {0: 13}


def test_partitions_are_tracked_independently_and_revocation_forgets() -> None:
    t = OffsetTracker()
    t.assign([0, 1])
    e0, e1 = t.started(0, 5), t.started(1, 7)
    assert e0 is not None
    assert e1 is not None
    t.finished(1, 7, e1)
    assert offsets(t) == {1: 8}
    t.revoke([0, 1])
    assert t.committable() == []
    assert t.owned() == []


def test_call_finishing_after_revoke_neither_recreates_the_partition_nor_commits() -> None:
    t = OffsetTracker()
    t.assign([0, 1])
    epoch = t.started(0, 40)
    assert epoch is not None
    t.revoke([0])
    assert t.finished(0, 40, epoch) is False
    assert t.owned() == [1], "the late call must not bring partition 0 back"
    assert t.committable() == []


def test_call_from_an_earlier_assignment_is_ignored_after_reassignment() -> None:
    t = OffsetTracker()
    t.assign([0])
    old = t.started(0, 40)
    assert old is not None
    t.revoke([0])
    t.assign([0])  # the partition comes back: the group replays from the committed offset
    new = t.started(0, 38)
    assert new is not None
    assert new != old
    assert t.finished(0, 40, old) is False, "the call of the earlier assignment is not counted"
    assert t.committable() == [], "38 is in flight; 40 finishing under the old epoch must not let 41 through"
    assert t.finished(0, 38, new) is True
    assert offsets(t) == {0: 39}


def test_commit_chosen_under_an_earlier_epoch_is_not_recorded() -> None:
    t = OffsetTracker()
    t.assign([0])
    epoch = t.started(0, 3)
    assert epoch is not None
    t.finished(0, 3, epoch)
    stale = t.committable()
    t.revoke([0])
    t.assign([0])
    t.mark_committed(stale)
    again = t.started(0, 3)
    assert again is not None
    t.finished(0, 3, again)
    assert t.committable() == [Commit(0, 4, again)], "the new owner's progress is its own"


def test_a_partition_not_owned_is_not_tracked() -> None:
    t = OffsetTracker()
    assert t.started(2, 1) is None
    assert t.committable() == []
    assert t.owned() == []


def test_committable_can_be_limited_to_some_partitions() -> None:
    t = OffsetTracker()
    t.assign([0, 1])
    for p in (0, 1):
        epoch = t.started(p, 0)
        assert epoch is not None
        t.finished(p, 0, epoch)
    assert {c.partition for c in t.committable([1, 5])} == {1}
