"""The Throttler (token bucket per airline credential), the worker's admission of calls (backpressure), and
the guard failing fast on an open circuit and sharing it."""

from __future__ import annotations

import pytest

from connectors.resilience import AirlineGuard
from connectors.throttle import TokenBucket
from jetbridge.airlines import BreakerPolicy, RateLimit
from jetbridge.errors import AirlineUnavailable
from schemas.models import AirlineHealth, CircuitState
from tests.unit.test_retry_policy import FakeClock, ScriptedAirline, airline


def test_a_full_bucket_gives_its_burst_at_once_then_tokens_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(rate_per_s=10, burst=3), clock=clock.monotonic)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s() == pytest.approx(0.1)
    clock.advance(0.1)
    assert bucket.try_take()
    assert not bucket.try_take()


def test_a_bucket_never_banks_more_than_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(rate_per_s=10, burst=3), clock=clock.monotonic)
    clock.advance(60)
    assert sum(bucket.try_take() for _ in range(10)) == 3


def test_a_hold_gives_no_token_until_it_ends_and_is_never_shortened() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(rate_per_s=10, burst=3), clock=clock.monotonic)
    bucket.hold(clock.now + 2.0)
    bucket.hold(clock.now + 1.0)
    assert not bucket.try_take()
    assert bucket.wait_s() == pytest.approx(2.0)
    clock.advance(2.0)
    assert bucket.try_take()


def test_a_refunded_token_can_be_taken_again() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(rate_per_s=1, burst=1), clock=clock.monotonic)
    assert bucket.try_take()
    bucket.refund()
    assert bucket.try_take()


def test_the_worker_starts_a_call_with_a_token_waits_without_one_and_lets_doomed_calls_fail_fast() -> None:
    clock = FakeClock()
    guard = AirlineGuard(airline(rate_limit=RateLimit(rate_per_s=2, burst=1)), instance="w1", clock=clock)
    first = guard.admit(budget_s=3.0)
    assert first.start
    assert first.prepaid
    waiting = guard.admit(budget_s=3.0)
    assert not waiting.start, "no token: the worker stops taking calls (and pauses its partitions)"
    assert waiting.wait_s == pytest.approx(0.5)
    doomed = guard.admit(budget_s=0.4)
    assert doomed.start, "no token within its budget: started at once to fail fast"
    assert not doomed.prepaid
    unknown = guard.admit(budget_s=None)
    assert not unknown.start


async def test_an_open_circuit_fails_fast_without_calling_or_taking_a_token() -> None:
    clock = FakeClock()
    published: list[AirlineHealth] = []
    policy = BreakerPolicy(min_calls=2, open_s=5.0)
    guard = AirlineGuard(airline(breaker=policy), instance="w1", clock=clock, publish=published.append)
    failing = ScriptedAirline(clock, [(0.01, AirlineUnavailable("ZZ: HTTP 500"))])
    await guard.call(failing, budget_s=3.0)
    assert guard.breaker.state is CircuitState.OPEN
    assert failing.attempts == 2, "the retry's failure opened it"
    assert [r.state for r in published] == [CircuitState.OPEN]
    assert published[0].reporter == "w1"
    assert published[0].until is not None

    admission = guard.admit(budget_s=3.0)
    assert admission.start
    assert not admission.prepaid
    tokens = guard.bucket.tokens()
    healthy = ScriptedAirline(clock, [(0.01, None)])
    outcome = await guard.call(healthy, budget_s=3.0)
    assert healthy.attempts == 0
    assert outcome.attempts == 0
    assert outcome.error is not None
    assert outcome.error.code == "circuit_open"
    assert "next probe at" in outcome.error.message
    assert guard.bucket.tokens() == pytest.approx(tokens)
    assert clock.slept == [pytest.approx(0.1)], "only the first call's backoff: nothing waited for the open circuit"
