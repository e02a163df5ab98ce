"""The Circuit Breaker's state machine (connectors/breaker.py): the failure-rate window, minimum calls, slow
calls, the open interval, half-open probes made by one instance only, closing, and agreement between
instances through the records they publish."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.breaker import CircuitBreaker, Outcome, Permit, Snapshot
from jetbridge.airlines import BreakerPolicy
from schemas.models import AirlineHealth, CircuitState

POLICY = BreakerPolicy(
    window_s=10.0, min_calls=4, failure_rate=0.5, slow_call_ms=1000, slow_call_rate=0.8, open_s=5.0, half_open_calls=2
)


class Wall:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Wall, instance: str = "w1", changes: list[Snapshot] | None = None) -> CircuitBreaker:
    on_change = changes.append if changes is not None else None
    return CircuitBreaker("ZZ", POLICY, instance=instance, clock=clock, on_change=on_change)


def state(b: CircuitBreaker) -> CircuitState:
    """Read afresh: the state changes behind mypy's back, through calls."""
    return b.state


def call(b: CircuitBreaker, outcome: Outcome = Outcome.FAILED, duration_s: float = 0.05) -> Permit:
    permit = b.permit()
    assert permit is not None, f"the breaker refused a call in state {b.state}"
    b.record(permit, outcome, duration_s, "airline_unavailable" if outcome is Outcome.FAILED else None)
    return permit


def published(snap: Snapshot, clock: Wall) -> AirlineHealth:
    """What an instance writes to the health topic for ``snap`` (as AirlineGuard does)."""
    return AirlineHealth(
        airline=snap.airline,
        state=snap.state,
        since=datetime.fromtimestamp(snap.since, UTC),
        until=datetime.fromtimestamp(snap.until, UTC) if snap.until is not None else None,
        reason=snap.reason,
        failure_rate=snap.failure_rate,
        slow_rate=snap.slow_rate,
        calls=snap.calls,
        reporter=snap.owner,
        reported_at=datetime.fromtimestamp(clock.now, UTC),
    )


def test_failures_below_the_minimum_number_of_calls_never_open_it() -> None:
    clock = Wall()
    b = breaker(clock)
    for _ in range(POLICY.min_calls - 1):
        call(b)
    assert state(b) is CircuitState.CLOSED


def test_a_failure_rate_at_the_threshold_opens_it_once_there_are_enough_calls() -> None:
    clock, changes = Wall(), list[Snapshot]()
    b = breaker(clock, changes=changes)
    call(b, Outcome.OK)
    call(b, Outcome.OK)
    call(b)
    assert state(b) is CircuitState.CLOSED
    call(b)  # 2 of 4 failed: 0.5
    assert state(b) is CircuitState.OPEN
    assert b.until == pytest.approx(clock.now + POLICY.open_s, abs=0.001)
    assert "failure_rate 0.50 >= 0.50 over 4 calls" in b.reason
    assert [c.state for c in changes] == [CircuitState.OPEN]
    assert changes[0].failure_rate == 0.5
    assert changes[0].calls == 4


def test_a_failure_rate_under_the_threshold_keeps_it_closed() -> None:
    clock = Wall()
    b = breaker(clock)
    for outcome in [Outcome.FAILED, Outcome.OK, Outcome.OK, Outcome.OK, Outcome.FAILED, Outcome.OK]:
        call(b, outcome)
    assert state(b) is CircuitState.CLOSED


def test_calls_older_than_the_window_no_longer_count() -> None:
    clock = Wall()
    b = breaker(clock)
    for _ in range(3):
        call(b)
    clock.now += POLICY.window_s + 1
    call(b)
    assert state(b) is CircuitState.CLOSED, "three old failures and one new: one call in the window"
    assert b.window_rates() == (1.0, 0.0, 1)


def test_slow_calls_open_it_even_when_they_succeed() -> None:
    clock = Wall()
    b = breaker(clock)
    for _ in range(4):
        call(b, Outcome.OK, duration_s=1.2)
    assert state(b) is CircuitState.OPEN
    assert "slow_call_rate 1.00 >= 0.80" in b.reason


def test_answers_that_say_nothing_about_the_airlines_health_are_not_counted() -> None:
    clock = Wall()
    b = breaker(clock)
    for _ in range(10):
        call(b, Outcome.IGNORED)
    assert state(b) is CircuitState.CLOSED
    assert b.window_rates() == (0.0, 0.0, 0)


def test_open_fails_fast_until_the_open_interval_is_over_then_lets_only_the_probes_through() -> None:
    clock, changes = Wall(), list[Snapshot]()
    b = breaker(clock, changes=changes)
    for _ in range(4):
        call(b)
    assert not b.allows()
    assert b.permit() is None
    clock.now += POLICY.open_s - 0.01
    assert b.permit() is None
    clock.now += 0.02
    assert b.allows()
    probes = [b.permit(), b.permit()]
    assert all(p is not None and p.probe for p in probes)
    assert state(b) is CircuitState.HALF_OPEN
    assert b.permit() is None, "no more than half_open_calls probes at once"
    assert [c.state for c in changes] == [CircuitState.OPEN, CircuitState.HALF_OPEN]


def test_probes_that_all_succeed_close_it() -> None:
    clock, changes = Wall(), list[Snapshot]()
    b = breaker(clock, changes=changes)
    for _ in range(4):
        call(b)
    clock.now += POLICY.open_s
    first, second = b.permit(), b.permit()
    assert first is not None
    assert second is not None
    b.record(first, Outcome.OK, 0.05)
    assert state(b) is CircuitState.HALF_OPEN
    b.record(second, Outcome.OK, 0.05)
    assert state(b) is CircuitState.CLOSED
    assert b.permit() is not None
    assert changes[-1].state is CircuitState.CLOSED
    assert b.window_rates() == (0.0, 0.0, 0), "a closed circuit starts with a fresh window"


@pytest.mark.parametrize(
    ("outcome", "duration_s", "reason"),
    [(Outcome.FAILED, 0.05, "probe failed"), (Outcome.OK, 1.5, "probe slow")],
    ids=["failed", "slow"],
)
def test_one_bad_probe_opens_it_again_for_another_interval(outcome: Outcome, duration_s: float, reason: str) -> None:
    clock = Wall()
    b = breaker(clock)
    for _ in range(4):
        call(b)
    clock.now += POLICY.open_s
    probe = b.permit()
    assert probe is not None
    b.record(probe, outcome, duration_s, "airline_unavailable")
    assert state(b) is CircuitState.OPEN
    assert b.until == pytest.approx(clock.now + POLICY.open_s, abs=0.001)
    assert reason in b.reason


def test_a_probe_given_back_unused_frees_its_place() -> None:
    clock = Wall()
    b = breaker(clock)
    for _ in range(4):
        call(b)
    clock.now += POLICY.open_s
    probes = [b.permit(), b.permit()]
    assert b.permit() is None
    assert probes[0] is not None
    b.release(probes[0])
    assert b.permit() is not None


def test_another_instances_open_circuit_is_adopted_and_only_its_owner_probes() -> None:
    clock, changes = Wall(), list[Snapshot]()
    owner = breaker(clock, "w1", changes)
    other = breaker(clock, "w2")
    assert other.permit() is not None
    for _ in range(4):
        call(owner)
    assert other.adopt(published(changes[-1], clock))
    assert state(other) is CircuitState.OPEN
    assert other.permit() is None, "fails fast at once, without a call of its own"
    clock.now += POLICY.open_s
    assert not other.allows(), "the owner makes the probes"
    assert owner.permit() is not None
    assert state(owner) is CircuitState.HALF_OPEN
    assert other.adopt(published(changes[-1], clock))
    assert state(other) is CircuitState.HALF_OPEN
    assert other.permit() is None, "still failing fast while the owner probes"


def test_an_owner_silent_for_one_more_open_interval_is_taken_over() -> None:
    clock, changes = Wall(), list[Snapshot]()
    owner = breaker(clock, "w1", changes)
    other = breaker(clock, "w2")
    for _ in range(4):
        call(owner)
    other.adopt(published(changes[-1], clock))
    clock.now += 2 * POLICY.open_s
    probe = other.permit()
    assert probe is not None
    assert probe.probe
    assert state(other) is CircuitState.HALF_OPEN
    assert other.owner == "w2"
    assert "taken over from silent w1" in other.reason


def test_a_closed_state_from_the_prober_closes_every_instance() -> None:
    clock, changes = Wall(), list[Snapshot]()
    owner = breaker(clock, "w1", changes)
    other = breaker(clock, "w2")
    for _ in range(4):
        call(owner)
    other.adopt(published(changes[-1], clock))
    clock.now += POLICY.open_s
    for probe in [owner.permit(), owner.permit()]:
        assert probe is not None
        owner.record(probe, Outcome.OK, 0.05)
    assert state(owner) is CircuitState.CLOSED
    assert other.adopt(published(changes[-1], clock))
    assert state(other) is CircuitState.CLOSED
    assert other.permit() is not None


def test_older_records_and_our_own_coming_back_change_nothing() -> None:
    clock, changes = Wall(), list[Snapshot]()
    b = breaker(clock, "w1", changes)
    for _ in range(4):
        call(b)
    opened = changes[-1]
    assert not b.adopt(published(opened, clock)), "our own record read back"
    clock.now += POLICY.open_s
    b.permit()
    stale = published(opened, clock).model_copy(update={"reporter": "w2"})
    assert not b.adopt(stale)
    assert state(b) is CircuitState.HALF_OPEN


def test_states_entered_within_one_millisecond_are_still_told_apart() -> None:
    clock, changes = Wall(), list[Snapshot]()
    b = breaker(clock, "w1", changes)
    for _ in range(4):
        call(b)
    clock.now += POLICY.open_s
    probes = [b.permit(), b.permit()]
    for probe in probes:
        assert probe is not None
        b.record(probe, Outcome.OK, 0.0)  # half-open and closed in the same instant
    sinces = [c.since for c in changes]
    assert [c.state for c in changes] == [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]
    assert sinces == sorted(set(sinces)), "each state begins strictly after the one before"
    other = breaker(clock, "w2")
    for change in changes:
        assert other.adopt(published(change, clock))
    assert state(other) is CircuitState.CLOSED
