"""The Retry policy around airline calls (connectors/resilience.py): only retriable errors are retried, never
past the request's budget, and an airline's Retry-After is waited out or, when it would pass the deadline,
failed fast with that reason. Time is a fake clock: sleeping advances it, nothing really waits."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from connectors.resilience import AirlineGuard
from jetbridge.airlines import Airline, BreakerPolicy, RateLimit, RetryPolicy
from jetbridge.errors import (
    AirlineBadResponse,
    AirlineError,
    AirlineRejected,
    AirlineThrottled,
    AirlineTimeout,
    AirlineUnavailable,
)
from schemas.models import AirlineHealth

RESULT = ["offer"]


class FakeClock:
    """Monotonic and wall time that move only when slept on or advanced."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.offset = 1_800_000_000.0  # wall = monotonic + offset
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.offset

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


Step = tuple[float, AirlineError | None]  # how long the attempt takes, and what it raises (None: answers)


class ScriptedAirline:
    """An airline that answers each attempt as scripted (the last step repeats); records each attempt's timeout."""

    def __init__(self, clock: FakeClock, steps: Sequence[Step]) -> None:
        self.clock = clock
        self.steps = list(steps)
        self.timeouts: list[float] = []
        self.started_at: list[float] = []

    async def __call__(self, timeout_s: float) -> list[str]:
        self.timeouts.append(timeout_s)
        self.started_at.append(self.clock.now)
        duration, error = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if duration > timeout_s:
            self.clock.advance(timeout_s)
            raise AirlineTimeout(f"no answer within {timeout_s:.2f} s")
        self.clock.advance(duration)
        if error is not None:
            raise error
        return RESULT

    @property
    def attempts(self) -> int:
        return len(self.timeouts)


def airline(
    *,
    retry: RetryPolicy | None = None,
    breaker: BreakerPolicy | None = None,
    rate_limit: RateLimit | None = None,
    timeout_ms: int = 2500,
) -> Airline:
    return Airline(
        code="ZZ",
        name="Test Air",
        kind="fake",
        endpoint="http://127.0.0.1:9",
        timeout_ms=timeout_ms,
        retry={"search": retry or RetryPolicy(jitter=0.0, max_attempts=3)},
        breaker=breaker or BreakerPolicy(min_calls=100),
        rate_limit=rate_limit or RateLimit(rate_per_s=1000, burst=1000),
    )


def guard_for(entry: Airline, clock: FakeClock) -> AirlineGuard:
    return AirlineGuard(entry, instance="w1", clock=clock)


def unavailable() -> AirlineUnavailable:
    return AirlineUnavailable("ZZ: HTTP 500")


async def test_a_retriable_error_is_retried_and_the_answer_says_how_many_attempts_it_took() -> None:
    clock = FakeClock()
    attempt = ScriptedAirline(clock, [(0.05, unavailable()), (0.05, None)])
    outcome = await guard_for(airline(), clock).call(attempt, budget_s=3.0)
    assert outcome.result == RESULT
    assert outcome.error is None
    assert outcome.attempts == 2
    assert clock.slept == [pytest.approx(0.1)], "the first backoff of the policy, no jitter"


@pytest.mark.parametrize(
    "error",
    [AirlineRejected("ZZ: HTTP 400"), AirlineBadResponse("ZZ: not JSON")],
    ids=["rejected", "bad_response"],
)
async def test_an_error_the_error_tree_calls_not_retriable_is_not_retried(error: AirlineError) -> None:
    clock = FakeClock()
    attempt = ScriptedAirline(clock, [(0.05, error), (0.05, None)])
    outcome = await guard_for(airline(), clock).call(attempt, budget_s=3.0)
    assert outcome.error is error
    assert outcome.attempts == 1
    assert clock.slept == []


async def test_a_code_the_airlines_policy_excludes_is_not_retried_even_when_retriable() -> None:
    clock = FakeClock()
    policy = RetryPolicy(jitter=0.0, max_attempts=3, non_retriable=frozenset({"airline_unavailable"}))
    attempt = ScriptedAirline(clock, [(0.05, unavailable()), (0.05, None)])
    outcome = await guard_for(airline(retry=policy), clock).call(attempt, budget_s=3.0)
    assert outcome.error is not None
    assert outcome.error.code == "airline_unavailable"
    assert outcome.attempts == 1


async def test_attempts_stop_at_the_policys_maximum_with_exponential_backoff_between_them() -> None:
    clock = FakeClock()
    policy = RetryPolicy(jitter=0.0, max_attempts=4, initial_interval_ms=100, multiplier=2.0, max_interval_ms=300)
    attempt = ScriptedAirline(clock, [(0.01, unavailable())])
    outcome = await guard_for(airline(retry=policy), clock).call(attempt, budget_s=10.0)
    assert outcome.attempts == 4
    assert isinstance(outcome.error, AirlineUnavailable)
    assert clock.slept == [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3)], "capped at max_interval"
    assert outcome.first_failed_at is not None


async def test_jitter_spreads_each_wait_within_its_bounds() -> None:
    clock = FakeClock()
    policy = RetryPolicy(jitter=0.5, max_attempts=2, initial_interval_ms=200)
    for _ in range(20):
        attempt = ScriptedAirline(clock, [(0.01, unavailable()), (0.01, None)])
        await guard_for(airline(retry=policy), clock).call(attempt, budget_s=10.0)
    assert all(0.1 - 1e-9 <= wait <= 0.3 + 1e-9 for wait in clock.slept)
    assert len({round(wait, 6) for wait in clock.slept}) > 1


async def test_no_retry_is_started_when_its_backoff_and_shortest_attempt_would_pass_the_budget() -> None:
    clock = FakeClock()
    policy = RetryPolicy(jitter=0.0, max_attempts=3, initial_interval_ms=100, min_attempt_ms=150)
    # 0.3 s spent; 0.1 s backoff plus a 0.15 s attempt would end at 0.55 s, past the 0.5 s budget.
    attempt = ScriptedAirline(clock, [(0.3, unavailable()), (0.01, None)])
    outcome = await guard_for(airline(retry=policy), clock).call(attempt, budget_s=0.5)
    assert outcome.attempts == 1
    assert isinstance(outcome.error, AirlineUnavailable), "the call failed for good with its own error"
    assert clock.slept == []


async def test_each_attempt_gets_only_what_is_left_of_the_budget_and_never_more_than_the_airlines_timeout() -> None:
    clock = FakeClock()
    attempt = ScriptedAirline(clock, [(0.4, unavailable()), (0.01, None)])
    outcome = await guard_for(airline(timeout_ms=1000), clock).call(attempt, budget_s=1.2)
    assert outcome.result == RESULT
    assert attempt.timeouts[0] == pytest.approx(1.0), "the airline's own timeout"
    assert attempt.timeouts[1] == pytest.approx(1.2 - 0.4 - 0.1), "the rest of the budget"


async def test_a_timeout_that_used_the_whole_budget_is_not_retried() -> None:
    clock = FakeClock()
    attempt = ScriptedAirline(clock, [(10.0, None)])
    outcome = await guard_for(airline(), clock).call(attempt, budget_s=2.0)
    assert isinstance(outcome.error, AirlineTimeout)
    assert outcome.attempts == 1
    assert clock.now - 1000.0 == pytest.approx(2.0), "never past the budget"


async def test_no_attempt_is_made_with_less_than_the_shortest_attempt_left() -> None:
    clock = FakeClock()
    attempt = ScriptedAirline(clock, [(0.01, None)])
    outcome = await guard_for(airline(), clock).call(attempt, budget_s=0.1)
    assert attempt.attempts == 0
    assert outcome.attempts == 0
    assert outcome.error is not None
    assert outcome.error.code == "deadline_exceeded"


async def test_retry_after_is_waited_out_when_the_deadline_allows() -> None:
    clock = FakeClock()
    throttled = AirlineThrottled("ZZ: HTTP 429, Retry-After 1 s", retry_after_s=1.0)
    attempt = ScriptedAirline(clock, [(0.02, throttled), (0.02, None)])
    outcome = await guard_for(airline(), clock).call(attempt, budget_s=3.0)
    assert outcome.result == RESULT
    assert outcome.attempts == 2
    assert attempt.started_at[1] - attempt.started_at[0] >= 1.0, "the airline's Retry-After, not our backoff"


async def test_retry_after_past_the_deadline_fails_fast_saying_so() -> None:
    clock = FakeClock()
    throttled = AirlineThrottled("ZZ: HTTP 429, Retry-After 5 s", retry_after_s=5.0)
    attempt = ScriptedAirline(clock, [(0.02, throttled), (0.02, None)])
    outcome = await guard_for(airline(), clock).call(attempt, budget_s=3.0)
    assert outcome.attempts == 1
    assert isinstance(outcome.error, AirlineThrottled)
    assert outcome.error.code == "airline_throttled"
    assert "past the deadline" in outcome.error.message
    assert clock.now - 1000.0 == pytest.approx(0.02), "failed at once, not at the deadline"


async def test_after_a_retry_after_no_other_call_reaches_the_airline_until_it_ends() -> None:
    clock = FakeClock()
    guard = guard_for(airline(), clock)
    throttled = AirlineThrottled("ZZ: HTTP 429, Retry-After 2 s", retry_after_s=2.0)
    first = ScriptedAirline(clock, [(0.01, throttled)])
    await guard.call(first, budget_s=0.5)
    # A call with too little budget to wait 2 s fails fast without reaching the airline ...
    short = ScriptedAirline(clock, [(0.01, None)])
    outcome = await guard.call(short, budget_s=1.0)
    assert short.attempts == 0
    assert outcome.error is not None
    assert outcome.error.code == "airline_throttled"
    # ... one that can wait, waits it out.
    patient = ScriptedAirline(clock, [(0.01, None)])
    outcome = await guard.call(patient, budget_s=3.0)
    assert outcome.result == RESULT
    assert patient.started_at[0] >= first.started_at[0] + 2.0


async def test_a_retry_after_is_shared_with_the_airlines_other_workers() -> None:
    clock = FakeClock()
    published: list[AirlineHealth] = []
    guard = AirlineGuard(airline(), instance="w1", clock=clock, publish=published.append)
    throttled = AirlineThrottled("ZZ: HTTP 429, Retry-After 2 s", retry_after_s=2.0)
    await guard.call(ScriptedAirline(clock, [(0.01, throttled)]), budget_s=0.5)
    assert len(published) == 1
    assert published[0].throttled_until is not None
    assert published[0].throttled_until.timestamp() == pytest.approx(clock.wall() + 2.0 - 0.01, abs=0.01)

    other = AirlineGuard(airline(), instance="w2", clock=clock)
    other.adopt(published[0])
    attempt = ScriptedAirline(clock, [(0.01, None)])
    outcome = await other.call(attempt, budget_s=1.0)
    assert attempt.attempts == 0, "the other worker holds off too"
    assert outcome.error is not None
    assert outcome.error.code == "airline_throttled"
