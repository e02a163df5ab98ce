"""How one airline is protected from us: Retry, Circuit Breaker and Throttler around every call to it.

``AirlineGuard.call`` runs one call (a search now; order operations later) as a series of attempts:

    before each attempt   the breaker must allow it (else fail fast: circuit_open), a token of the airline's
                          rate limit must come before the budget ends (else rate_limited, or airline_throttled
                          while the airline's Retry-After holds), and at least ``min_attempt_ms`` must be left
    after a failure       retried only when the error tree calls it retriable and the operation's policy does
                          not exclude its code, after exponential backoff with jitter, or after the airline's
                          Retry-After when that is longer, and never when the wait would pass the budget
    every attempt         counted by the breaker (ok, failed, or ignored), with its duration (slow calls)

``AirlineGuard.admit`` is the worker's question before it takes a call off the topic: start it now (a token
was taken), start it to fail fast (no token will come in its budget), or wait (backpressure: the worker
stops consuming the airline's partitions meanwhile).

The breaker's transitions and the airline's Retry-After holds are published to ``jb.airline-health.v1``
(``publish``), and those of the other instances are adopted from it (``adopt``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from connectors.breaker import CircuitBreaker, Outcome, Permit, Snapshot
from connectors.throttle import TokenBucket
from jetbridge import tracing
from jetbridge.airlines import Airline, RetryPolicy
from jetbridge.errors import (
    AirlineError,
    AirlineThrottled,
    CircuitOpen,
    DeadlineExceeded,
    JetbridgeError,
    RateLimited,
)
from jetbridge.log import get_logger
from jetbridge.metrics import AIRLINE_RETRIES, CIRCUIT_STATE, RATE_LIMIT_WAIT_SECONDS, RATE_LIMIT_WAITS
from jetbridge.routing import attempt_timeout_s
from schemas.models import AirlineHealth, CircuitState, now_utc

__all__ = ["Admission", "AirlineGuard", "CallOutcome", "Clock", "SystemClock"]

log = get_logger(__name__)

T = TypeVar("T")

_GAUGE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


class Clock(Protocol):
    """Time for the guard: a monotonic clock for budgets, the wall clock for states shared between processes."""

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class CallOutcome(Generic[T]):
    """What a protected call came to: its result or its error, and how many attempts reached the airline."""

    result: T | None
    error: JetbridgeError | None
    attempts: int
    first_failed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """The worker's answer for the next call: start it (with a token taken, or to fail fast), or wait."""

    start: bool
    prepaid: bool = False
    wait_s: float = 0.0


class AirlineGuard:
    """Retry + Circuit Breaker + Throttler for one airline in one worker instance."""

    def __init__(
        self,
        airline: Airline,
        *,
        instance: str,
        clock: Clock | None = None,
        publish: Callable[[AirlineHealth], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.airline = airline
        self.instance = instance
        self._clock = clock or SystemClock()
        self._publish = publish
        # Jitter needs independence between instances, not reproducibility.
        self._rng = rng or random.Random()  # noqa: S311 - not cryptography
        self.breaker = CircuitBreaker(
            airline.code, airline.breaker, instance=instance, clock=self._clock.wall, on_change=self._changed
        )
        self.bucket = TokenBucket(airline.rate_limit, clock=self._clock.monotonic)
        self.throttled_until: float | None = None  # wall clock, as published
        CIRCUIT_STATE.labels(airline.code).set(0)

    # ---- the worker's questions ----
    def admit(self, budget_s: float | None, operation: str = "search") -> Admission:
        """Whether the worker may start a call with ``budget_s`` left (None: not known before decoding)."""
        floor = self.airline.retry_policy(operation).min_attempt_ms / 1000
        if budget_s is not None and budget_s < floor:
            return Admission(start=True)  # it fails fast on its deadline: no token needed
        if not self.breaker.allows():
            return Admission(start=True)  # it fails fast: circuit open
        if self.bucket.try_take():
            return Admission(start=True, prepaid=True)
        wait = self.bucket.wait_s()
        if budget_s is not None and wait > budget_s - floor:
            return Admission(start=True)  # no token in its budget: it fails fast saying why
        return Admission(start=False, wait_s=wait)

    def snapshot(self) -> dict[str, Any]:
        """The airline's protection as /health shows it."""
        snap = self.breaker.snapshot()
        failure_rate, slow_rate, calls = self.breaker.window_rates()
        return {
            "state": snap.state.value.lower(),
            "since": _iso(snap.since) if snap.since else None,
            "until": _iso(snap.until) if snap.until else None,
            "owner": snap.owner,
            "reason": snap.reason or None,
            "window": {"calls": calls, "failure_rate": round(failure_rate, 3), "slow_rate": round(slow_rate, 3)},
            "throttled_until": _iso(self.throttled_until)
            if self.throttled_until and self.throttled_until > self._clock.wall()
            else None,
            "tokens": round(self.bucket.tokens(), 1),
        }

    # ---- the call ----
    async def call(
        self,
        attempt: Callable[[float], Awaitable[T]],
        *,
        budget_s: float,
        operation: str = "search",
        prepaid: bool = False,
    ) -> CallOutcome[T]:
        """Run ``attempt(timeout_s)`` under the operation's retry policy within ``budget_s``."""
        policy = self.airline.retry_policy(operation)
        clock = self._clock
        budget_end = clock.monotonic() + budget_s
        floor = policy.min_attempt_ms / 1000
        attempts = 0
        last: AirlineError | None = None
        first_failed: datetime | None = None
        token = prepaid

        def stop(error: JetbridgeError, reason: str) -> CallOutcome[T]:
            # The decision that ended the call, on the airline call's span (jetbridge/tracing.py).
            tracing.event("call stopped", reason=reason, attempts=attempts, **{"error.type": error.code})
            return CallOutcome(None, error, attempts, first_failed)

        try:
            while True:
                if attempts:
                    if not self.breaker.allows():
                        # our failures opened it: no point waiting
                        return stop(last or self._circuit_open(), "circuit_open")
                    wait = self._wait_before_retry(policy, attempts, last)
                    if clock.monotonic() + wait + floor > budget_end:
                        return stop(self._past_budget(last, wait), "past_deadline")
                    tracing.event("retry", attempt=attempts + 1, wait_s=round(wait, 3))
                    await clock.sleep(wait)
                    AIRLINE_RETRIES.labels(self.airline.code).inc()
                if budget_end - clock.monotonic() < floor:
                    return stop(last or _no_time(budget_end - clock.monotonic()), "past_deadline")
                if not self.breaker.allows():
                    return stop(last or self._circuit_open(), "circuit_open")
                if not token and not await self._take_token(budget_end - floor):
                    return stop(last or self._no_token(), "rate_limited")
                token = False
                permit = self.breaker.permit()
                if permit is None:
                    self.bucket.refund()
                    return stop(last or self._circuit_open(), "circuit_open")
                attempts += 1
                try:
                    result, error = await self._attempt(attempt, permit, budget_end)
                except BaseException:
                    self.breaker.release(permit)
                    raise
                if error is None:
                    return CallOutcome(result, None, attempts, first_failed)
                first_failed = first_failed or now_utc()
                tracing.event("attempt failed", attempt=attempts, **{"error.type": error.code})
                if not policy.retries(error):
                    return stop(error, "not_retriable")
                if attempts >= policy.max_attempts:
                    return stop(error, "attempts_exhausted")
                last = error
        finally:
            if token:
                self.bucket.refund()

    async def _attempt(
        self, attempt: Callable[[float], Awaitable[T]], permit: Permit, budget_end: float
    ) -> tuple[T | None, AirlineError | None]:
        started = self._clock.monotonic()
        timeout_s = attempt_timeout_s(self.airline, budget_end - started)
        try:
            result = await attempt(timeout_s)
        except AirlineError as exc:
            duration = self._clock.monotonic() - started
            # A quarantine (a CircuitOpen) says the airline's tools changed, not that it is failing.
            ignored = exc.code in self.airline.breaker.ignored_codes or isinstance(exc, CircuitOpen)
            self.breaker.record(permit, Outcome.IGNORED if ignored else Outcome.FAILED, duration, exc.code)
            if isinstance(exc, AirlineThrottled) and exc.retry_after_s:
                self.hold(self._clock.wall() + exc.retry_after_s, publish=True)
            return None, exc
        self.breaker.record(permit, Outcome.OK, self._clock.monotonic() - started)
        return result, None

    def _wait_before_retry(self, policy: RetryPolicy, attempts: int, last: AirlineError | None) -> float:
        wait = policy.backoff_s(attempts)
        if policy.jitter:
            wait *= 1 + self._rng.uniform(-policy.jitter, policy.jitter)
        if isinstance(last, AirlineThrottled) and last.retry_after_s:
            wait = max(wait, last.retry_after_s)
        return max(0.0, wait)

    async def _take_token(self, latest_start: float) -> bool:
        """A token before ``latest_start`` (monotonic), waiting for it when it comes in time."""
        waited = 0.0
        try:
            while True:
                if self.bucket.try_take():
                    return True
                wait = self.bucket.wait_s()
                if self._clock.monotonic() + wait > latest_start:
                    return False
                await self._clock.sleep(max(wait, 0.001))
                waited += wait
        finally:
            if waited:
                RATE_LIMIT_WAITS.labels(self.airline.code).inc()
                RATE_LIMIT_WAIT_SECONDS.labels(self.airline.code).inc(waited)

    # ---- why a call stops ----
    def _past_budget(self, last: AirlineError | None, wait: float) -> JetbridgeError:
        if isinstance(last, AirlineThrottled) and last.retry_after_s and wait >= last.retry_after_s:
            # Waiting out the airline's Retry-After is what would pass the deadline: say so.
            return AirlineThrottled(
                f"{self.airline.code} asks to wait {last.retry_after_s:g} s (Retry-After), past the deadline",
                retry_after_s=last.retry_after_s,
            )
        assert last is not None, "a retry always follows a failed attempt"
        return last

    def _circuit_open(self) -> CircuitOpen:
        snap = self.breaker.snapshot()
        probe = f", next probe at {_iso(snap.until)}" if snap.state is CircuitState.OPEN and snap.until else ""
        return CircuitOpen(f"{self.airline.code} circuit {snap.state.value.lower()} ({snap.reason}){probe}")

    def _no_token(self) -> JetbridgeError:
        if self.bucket.held:
            ra = max(0.0, (self.throttled_until or 0.0) - self._clock.wall())
            return AirlineThrottled(
                f"{self.airline.code} asked for no calls for {ra:.1f} s more (Retry-After), past the deadline",
                retry_after_s=ra,
            )
        limit = self.airline.rate_limit
        return RateLimited(
            f"{self.airline.code} rate limit ({limit.rate_per_s:g}/s, burst {limit.burst}) has no room before "
            "the deadline"
        )

    # ---- shared state ----
    def hold(self, until_wall: float, *, publish: bool = False) -> None:
        """No call before ``until_wall`` (the airline's Retry-After); published for the other instances."""
        now_wall = self._clock.wall()
        if until_wall <= now_wall or (self.throttled_until is not None and until_wall <= self.throttled_until):
            return
        holding = self.throttled_until is not None and self.throttled_until > now_wall
        self.throttled_until = until_wall
        self.bucket.hold(self._clock.monotonic() + (until_wall - now_wall))
        if not holding:
            wait_s = round(until_wall - now_wall, 2)
            log.warning("airline asked us to wait (Retry-After)", airline=self.airline.code, for_s=wait_s)
        if publish:
            self._emit(self.breaker.snapshot())

    def adopt(self, health: AirlineHealth) -> None:
        """Take what another instance (or an earlier run of this one) published about this airline."""
        if health.throttled_until is not None:
            self.hold(health.throttled_until.timestamp())
        if self.breaker.adopt(health):
            CIRCUIT_STATE.labels(self.airline.code).set(_GAUGE[self.breaker.state])
            log.info(
                "circuit state adopted",
                airline=self.airline.code,
                state=self.breaker.state.value,
                reporter=health.reporter,
                reason=health.reason,
            )
        elif (
            health.reporter != self.instance
            and health.state is not self.breaker.state
            and health.since.timestamp() < self.breaker.since
            and self.breaker.owner == self.instance
        ):
            # Another instance's record, older than the state we own, came after ours (two instances reported at
            # once): say ours again, so the compacted topic ends on the current state.
            self._emit(self.breaker.snapshot())

    def _changed(self, snap: Snapshot) -> None:
        CIRCUIT_STATE.labels(self.airline.code).set(_GAUGE[snap.state])
        log.warning(
            "circuit state changed",
            airline=self.airline.code,
            state=snap.state.value,
            reason=snap.reason,
            failure_rate=round(snap.failure_rate, 3),
            slow_rate=round(snap.slow_rate, 3),
            calls=snap.calls,
        )
        self._emit(snap)

    def _emit(self, snap: Snapshot) -> None:
        if self._publish is None:
            return
        self._publish(
            AirlineHealth(
                airline=snap.airline,
                state=snap.state,
                since=_dt(snap.since),
                until=_dt(snap.until) if snap.until is not None else None,
                reason=snap.reason[:500],
                failure_rate=snap.failure_rate,
                slow_rate=snap.slow_rate,
                calls=snap.calls,
                throttled_until=_dt(self.throttled_until)
                if self.throttled_until is not None and self.throttled_until > self._clock.wall()
                else None,
                reporter=self.instance,
                reported_at=now_utc(),
            )
        )


def _no_time(left_s: float) -> DeadlineExceeded:
    return DeadlineExceeded(f"{max(0.0, left_s) * 1000:.0f} ms of the budget left: too little for an attempt")


def _dt(seconds: float) -> datetime:
    ms = round(seconds * 1000)  # what Avro timestamp-millis keeps
    return datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)


def _iso(seconds: float) -> str:
    return _dt(seconds).isoformat(timespec="milliseconds")
