"""The Circuit Breaker of one airline, as pure state transitions (no Kafka, no asyncio; the clock is given).

    CLOSED ── failure rate or slow-call rate at its threshold ──▶ OPEN ── open_s passed (owner) ──▶ HALF_OPEN
      ▲          over the last window_s, once min_calls were made     ▲                                  │
      │                                                               └──────── a probe bad ◀────────────┤
      └────────────────────────────── half_open_calls probes all good ◀────────────────────────────────┘

Every connector worker instance has one breaker per airline, and they agree through ``jb.airline-health.v1``:
each instance judges its own calls, publishes every transition it makes (``on_change``), and adopts any newer
state another instance published (``adopt``; a state is identified by when it began, ``since``). The instance
whose transition opened the circuit owns it: only the owner makes the half-open probes, the others fail fast
until the state closes, and take over the probing only when the owner has been silent for one more open
interval (it may have died).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from jetbridge.airlines import BreakerPolicy
from schemas.models import AirlineHealth, CircuitState

__all__ = ["CircuitBreaker", "Outcome", "Permit", "Snapshot"]


class Outcome(StrEnum):
    """How one attempt ended, as the breaker counts it."""

    OK = "ok"
    FAILED = "failed"
    IGNORED = "ignored"  # an answer that says nothing about the airline's health (a refusal, a throttle)


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to make one attempt, given under the state that began at ``since``."""

    since: float
    probe: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The breaker's state as it is shared (and shown on /health)."""

    airline: str
    state: CircuitState
    since: float
    until: float | None
    owner: str
    reason: str
    failure_rate: float
    slow_rate: float
    calls: int


def _ms(seconds: float) -> float:
    # States are identified by their start, which travels as Avro timestamp-millis: keep what survives that.
    return math.floor(seconds * 1000) / 1000


class CircuitBreaker:
    """One airline's breaker in one worker instance; ``instance`` names this instance in what it publishes."""

    def __init__(
        self,
        airline: str,
        policy: BreakerPolicy,
        *,
        instance: str,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.airline = airline
        self.policy = policy
        self.instance = instance
        self._clock = clock
        self._on_change = on_change
        self.state = CircuitState.CLOSED
        self.since = 0.0
        self.until: float | None = None
        self.owner = instance
        self.reason = ""
        self._rates = (0.0, 0.0, 0)
        # (finished at, failed, slow) of the calls made while closed, oldest first.
        self._window: deque[tuple[float, bool, bool]] = deque()
        self._probes_started = 0
        self._probes_ok = 0

    # ---- questions ----
    def allows(self) -> bool:
        """Whether ``permit`` would give leave now (no state changes)."""
        now = self._clock()
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            return self.until is not None and now >= self.until and (self._mine() or self._overdue(now))
        if not self._mine():
            return self._overdue(now)
        return self._probes_started < self.policy.half_open_calls

    def snapshot(self) -> Snapshot:
        failure_rate, slow_rate, calls = self._rates
        return Snapshot(
            self.airline,
            self.state,
            self.since,
            self.until,
            self.owner,
            self.reason,
            failure_rate,
            slow_rate,
            calls,
        )

    def window_rates(self) -> tuple[float, float, int]:
        """Failure rate, slow-call rate and calls over the current window (closed state)."""
        self._prune(self._clock())
        calls = len(self._window)
        if not calls:
            return 0.0, 0.0, 0
        failed = sum(1 for _, f, _ in self._window if f)
        slow = sum(1 for _, _, s in self._window if s)
        return failed / calls, slow / calls, calls

    # ---- the call path ----
    def permit(self) -> Permit | None:
        """Leave to make one attempt, or None: fail fast. Past the open interval the owner turns half-open."""
        now = self._clock()
        if self.state is CircuitState.CLOSED:
            return Permit(self.since, probe=False)
        if self.state is CircuitState.OPEN:
            if self.until is None or now < self.until:
                return None
            if self._mine():
                self._enter(CircuitState.HALF_OPEN, now, reason="open interval over: probing")
            elif self._overdue(now):
                self._enter(CircuitState.HALF_OPEN, now, reason=f"probing taken over from silent {self.owner}")
            else:
                return None
        elif not self._mine():
            if not self._overdue(now):
                return None
            self._enter(CircuitState.HALF_OPEN, now, reason=f"probing taken over from silent {self.owner}")
        if self._probes_started >= self.policy.half_open_calls:
            return None
        self._probes_started += 1
        return Permit(self.since, probe=True)

    def record(self, permit: Permit, outcome: Outcome, duration_s: float, code: str | None = None) -> None:
        """Count one attempt made under ``permit``; attempts from an earlier state are ignored."""
        if permit.since != self.since:
            return
        now = self._clock()
        slow = duration_s * 1000 >= self.policy.slow_call_ms
        if self.state is CircuitState.CLOSED:
            if outcome is Outcome.IGNORED:
                return
            self._window.append((now, outcome is Outcome.FAILED, slow))
            self._judge(now)
        elif self.state is CircuitState.HALF_OPEN and permit.probe and self._mine():
            if outcome is Outcome.FAILED:
                self._open(now, f"probe failed: {code or 'error'}", (1.0, 1.0 if slow else 0.0, 1))
            elif slow:
                self._open(now, f"probe slow: {duration_s * 1000:.0f} ms", (0.0, 1.0, 1))
            else:
                self._probes_ok += 1
                if self._probes_ok >= self.policy.half_open_calls:
                    self._enter(CircuitState.CLOSED, now, reason=f"{self._probes_ok} probes succeeded")

    def release(self, permit: Permit) -> None:
        """Give back a probe's leave when its attempt was never made."""
        if permit.probe and permit.since == self.since and self._probes_started > 0:
            self._probes_started -= 1

    # ---- agreement with the other instances ----
    def adopt(self, health: AirlineHealth) -> bool:
        """Take the state another instance published when it is newer than ours; True when it was taken."""
        since = health.since.timestamp()
        if round(since * 1000) <= round(self.since * 1000):
            return False  # older, or our own record coming back
        self.state = health.state
        self.since = since
        self.until = health.until.timestamp() if health.until is not None else None
        if self.state is CircuitState.OPEN and self.until is None:
            self.until = since + self.policy.open_s
        self.owner = health.reporter
        self.reason = health.reason
        self._rates = (health.failure_rate, health.slow_rate, health.calls)
        self._window.clear()
        self._probes_started = self._probes_ok = 0
        return True

    # ---- internals ----
    def _mine(self) -> bool:
        return self.owner == self.instance

    def _overdue(self, now: float) -> bool:
        """Another instance's open or half-open state that should have moved on an open interval ago."""
        due = self.until if self.state is CircuitState.OPEN and self.until is not None else self.since
        return now >= due + self.policy.open_s

    def _prune(self, now: float) -> None:
        horizon = now - self.policy.window_s
        while self._window and self._window[0][0] < horizon:
            self._window.popleft()

    def _judge(self, now: float) -> None:
        failure_rate, slow_rate, calls = self.window_rates()
        if calls < self.policy.min_calls:
            return
        why = []
        if failure_rate >= self.policy.failure_rate:
            why.append(f"failure_rate {failure_rate:.2f} >= {self.policy.failure_rate:.2f}")
        if slow_rate >= self.policy.slow_call_rate:
            why.append(f"slow_call_rate {slow_rate:.2f} >= {self.policy.slow_call_rate:.2f}")
        if why:
            self._open(now, f"{' and '.join(why)} over {calls} calls", (failure_rate, slow_rate, calls))

    def _open(self, now: float, reason: str, rates: tuple[float, float, int]) -> None:
        self._rates = rates
        self._enter(CircuitState.OPEN, now, reason=reason)

    def _enter(self, state: CircuitState, now: float, *, reason: str) -> None:
        self.state = state
        # Strictly after the state it follows, even within one millisecond: a state is known by its start.
        self.since = max(_ms(now), round(self.since + 0.001, 3))
        self.until = self.since + self.policy.open_s if state is CircuitState.OPEN else None
        self.owner = self.instance
        self.reason = reason
        if state is CircuitState.CLOSED:
            self._rates = (0.0, 0.0, 0)
        self._window.clear()
        self._probes_started = self._probes_ok = 0
        if self._on_change is not None:
            self._on_change(self.snapshot())
