"""Who a search is sent to and how long each call may take: the rules the backbone and the benchmark's
direct baseline share, so the two differ only in the transport between them.

Content-Based Router: the airlines called are those the registry says fly the route, narrowed to the
agent's requested subset (the rest are ``not_served``), less those whose Circuit Breaker is open or that
asked not to be called before the deadline (``skipped``, with the reason). Time budget: a call has the
request's deadline minus the connector margin (so its answer can still reach the aggregator), and one
attempt never gets more than the airline's own ``timeout_ms``. Pure: no Kafka, no faust, no clock read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from jetbridge.airlines import Airline, AirlineRegistry

__all__ = ["Route", "SkipReason", "attempt_timeout_s", "call_budget_s", "route"]

# Why an airline should not be called before ``deadline``, or None (``HealthBoard.skip_reason``).
SkipReason = Callable[[str, datetime], str | None]


@dataclass(frozen=True, slots=True)
class Route:
    """The routing decision for one request: whom to call, and whom the reply names as not called and why."""

    expected: list[Airline]
    not_served: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def codes(self) -> list[str]:
        return [a.code for a in self.expected]


def route(
    registry: AirlineRegistry,
    origin: str,
    destination: str,
    requested: Sequence[str] | None,
    *,
    deadline: datetime,
    skip_reason: SkipReason | None = None,
) -> Route:
    """The airlines to call for origin→destination; ``requested`` narrows them (None: every one serving)."""
    serving = registry.serving(origin, destination)
    if requested is not None:
        wanted = set(requested)
        expected = [a for a in serving if a.code in wanted]
        served_codes = {a.code for a in expected}
        # In the agent's order, so the reply names them as asked.
        not_served = [c for c in requested if c not in served_codes]
    else:
        expected, not_served = serving, []
    if skip_reason is None:  # no shared health (the baseline has no breakers): everyone is called
        return Route(expected, not_served)
    # Asked, but not called: the aggregator reports them without waiting for them.
    skipped = {a.code: reason for a in expected if (reason := skip_reason(a.code, deadline)) is not None}
    return Route([a for a in expected if a.code not in skipped], not_served, skipped)


def call_budget_s(deadline: datetime, margin: timedelta, now: datetime) -> float:
    """Seconds a call (every attempt of it) may take: the deadline less the connector margin, from ``now``."""
    return (deadline - margin - now).total_seconds()


def attempt_timeout_s(airline: Airline, budget_s: float) -> float:
    """Seconds one attempt at ``airline`` may take: what is left of the budget, capped by its timeout."""
    return min(airline.timeout_ms / 1000, budget_s)
