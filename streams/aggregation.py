"""The Aggregator with completion timeout, as pure state transitions (no Kafka, no faust).

One ``Aggregation`` per open request id. It learns the plan (which airlines were asked) from the router,
collects one response per airline (an Idempotent Consumer: a duplicate for the same airline counts
once), and completes when every expected airline answered or the deadline passed. A completed
aggregation ignores everything after, so each request gets one reply. Airlines the router skipped (circuit
open) count as asked but are not waited for; they, and airlines whose connector failed fast on an open
circuit, are reported with status ``CIRCUIT_OPEN``.

Each airline's status says where its offers came from (``source``: live, cache, stale) and, from the offer
cache, how old they were at the reply (``age_ms``). A stale answer (the airline could not answer live) is an
answer: status ``OK``, with the code of why live failed. Offers past their own expiry never reach a reply,
whichever way they came.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from schemas.models import (
    AggregatorControl,
    AirlineOutcome,
    AirlineResponse,
    AirlineStatus,
    Offer,
    OfferSource,
    ReplyStatus,
    ResponseStatus,
    SearchReply,
)

__all__ = ["PLAN_WAIT", "Aggregation", "Due", "Plan", "TimerIndex", "merge_offers"]

# Responses whose plan has not come are kept this long, then dropped as orphans (a request is always
# routed before its calls exist, so only a request that was itself dead-lettered leaves responses waiting).
PLAN_WAIT = timedelta(seconds=60)


class Plan(BaseModel):
    correlation_id: str
    reply_to: str
    expected: list[str]
    not_served: list[str]
    max_offers: int
    deadline: datetime
    skipped: dict[str, str] = Field(default_factory=dict)


class Aggregation(BaseModel):
    """The state of one request's scatter-gather while it is open (in memory, rebuilt from its inputs)."""

    request_id: str
    plan: Plan | None = None
    responses: dict[str, AirlineResponse] = Field(default_factory=dict)
    done: bool = False
    first_seen: datetime
    completed_at: datetime | None = None

    def add_response(self, response: AirlineResponse) -> bool:
        """Record one airline's answer; False if it is a duplicate or comes too late."""
        if self.done or response.airline in self.responses:
            return False
        self.responses[response.airline] = response
        return True

    def add_plan(self, control: AggregatorControl) -> bool:
        if self.done or self.plan is not None:
            return False
        self.plan = Plan(
            correlation_id=control.correlation_id,
            reply_to=control.reply_to,
            expected=list(control.expected_airlines),
            not_served=list(control.not_served),
            max_offers=control.max_offers,
            deadline=control.deadline,
            skipped=dict(control.skipped),
        )
        return True

    def is_due(self, now: datetime) -> bool:
        """Whether the reply should be sent now."""
        if self.done or self.plan is None:
            return False
        if all(code in self.responses for code in self.plan.expected):
            return True
        return now >= self.plan.deadline

    def reply(self, now: datetime) -> SearchReply:
        """The one reply, as it stands now (the state is unchanged until ``mark_done``)."""
        plan = self.plan
        assert plan is not None, "reply() needs a plan"
        statuses: list[AirlineStatus] = []
        ok_offers: list[Offer] = []
        for code in plan.expected:
            response = self.responses.get(code)
            if response is None:
                statuses.append(AirlineStatus(airline=code, status=AirlineOutcome.TIMEOUT, error_code="no_response"))
            elif response.status is ResponseStatus.OK:
                statuses.append(
                    AirlineStatus(
                        airline=code,
                        status=AirlineOutcome.OK,
                        error_code=response.error.code if response.error else None,  # stale: why not live
                        offer_count=len(response.offers),
                        latency_ms=response.latency_ms,
                        source=response.source.value.lower() if response.offers else None,
                        age_ms=_age_ms(response, now),
                    )
                )
                ok_offers.extend(response.offers)
            else:
                outcome = AirlineOutcome.TIMEOUT if response.status is ResponseStatus.TIMEOUT else AirlineOutcome.ERROR
                if response.error is not None and response.error.code == _CIRCUIT_OPEN:
                    outcome = AirlineOutcome.CIRCUIT_OPEN
                statuses.append(
                    AirlineStatus(
                        airline=code,
                        status=outcome,
                        error_code=response.error.code if response.error else None,
                        latency_ms=response.latency_ms,
                    )
                )
        answered = [s for s in statuses if s.status is AirlineOutcome.OK]
        statuses += [_skipped(code, reason) for code, reason in plan.skipped.items()]
        statuses += [AirlineStatus(airline=code, status=AirlineOutcome.NOT_SERVED) for code in plan.not_served]
        asked = len(plan.expected) + len(plan.skipped)
        if not asked:
            status = ReplyStatus.NO_AIRLINES
        elif not answered:
            status = ReplyStatus.UNANSWERED
        elif len(answered) == asked:
            status = ReplyStatus.COMPLETE
        else:
            status = ReplyStatus.PARTIAL
        return SearchReply(
            request_id=self.request_id,
            correlation_id=plan.correlation_id,
            reply_to=plan.reply_to,
            status=status,
            offers=merge_offers(ok_offers, plan.max_offers, now),
            airlines=statuses,
            deadline=plan.deadline,
            completed_at=now,
        )

    def mark_done(self, now: datetime) -> None:
        """The reply is durable: nothing changes this aggregation any more."""
        self.done = True
        self.completed_at = now

    def complete(self, now: datetime) -> SearchReply:
        """Build the one reply and mark the aggregation done."""
        reply = self.reply(now)
        self.mark_done(now)
        return reply


_CIRCUIT_OPEN = "circuit_open"


def _age_ms(response: AirlineResponse, now: datetime) -> int | None:
    """How old a cached (or stale) answer's offers are at ``now``; None for a live one."""
    if response.source is OfferSource.LIVE or response.cached_at is None or not response.offers:
        return None
    return max(0, int((now - response.cached_at).total_seconds() * 1000))


def _skipped(code: str, reason: str) -> AirlineStatus:
    """An airline the router did not call: circuit open, or (another reason) an error with that code."""
    outcome = AirlineOutcome.CIRCUIT_OPEN if reason == _CIRCUIT_OPEN else AirlineOutcome.ERROR
    return AirlineStatus(airline=code, status=outcome, error_code=reason)


def merge_offers(offers: list[Offer], max_offers: int, now: datetime) -> list[Offer]:
    """Drop expired offers, dedupe the same trip at the same price, sort by total price, cap."""
    live = sorted((o for o in offers if o.expires_at > now), key=lambda o: (o.total_amount, o.airline, o.offer_id))
    seen: set[tuple[str, ...]] = set()
    merged: list[Offer] = []
    for offer in live:
        key = offer.itinerary_key()
        if key in seen:
            continue
        seen.add(key)
        merged.append(offer)
        if len(merged) >= max_offers:
            break
    return merged


@dataclass(frozen=True, slots=True)
class Due:
    """The next moment one open aggregation needs attention: its deadline, or (with no plan yet) the end
    of the wait for one."""

    phase: str  # "deadline" | "expire" | "retry"
    at: datetime


def next_due(state: Aggregation) -> Due:
    if state.plan is None:
        return Due("expire", state.first_seen + PLAN_WAIT)
    return Due("deadline", state.plan.deadline)


class TimerIndex:
    """When each open aggregation next needs the timer, kept as a heap so a tick costs O(due)."""

    def __init__(self) -> None:
        self._due: dict[str, Due] = {}
        self._heap: list[tuple[datetime, str]] = []

    def __len__(self) -> int:
        return len(self._due)

    def track(self, state: Aggregation) -> None:
        due = next_due(state)
        if self._due.get(state.request_id) == due:
            return
        self._due[state.request_id] = due
        heapq.heappush(self._heap, (due.at, state.request_id))

    def forget(self, request_id: str) -> None:
        self._due.pop(request_id, None)

    def clear(self) -> None:
        self._due.clear()
        self._heap.clear()

    def schedule(self, request_id: str, at: datetime) -> None:
        """Ask at ``at`` whatever the state says (a reply the broker refused is sent again then)."""
        due = Due("retry", at)
        self._due[request_id] = due
        heapq.heappush(self._heap, (at, request_id))

    def retry(self, request_id: str, due: Due, at: datetime) -> None:
        """Ask again at ``at`` (a reply that could not be sent yet)."""
        if self._due.get(request_id) == due:
            retried = Due(due.phase, at)
            self._due[request_id] = retried
            heapq.heappush(self._heap, (at, request_id))

    def pop_due(self, now: datetime) -> list[tuple[str, Due]]:
        """Every aggregation whose moment has come, once per (aggregation, due time)."""
        found: list[tuple[str, Due]] = []
        while self._heap and self._heap[0][0] <= now:
            at, request_id = heapq.heappop(self._heap)
            due = self._due.get(request_id)
            if due is not None and due.at == at:  # stale heap entries (state moved on) are skipped
                found.append((request_id, due))
        return found
