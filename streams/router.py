"""The router: Content-Based Router, then Scatter (one call per airline topic), answering from the offer cache
where it can.

For each search request it decides who is called (``jetbridge/routing.py``: route coverage, the agent's
requested subset, open circuits) and queues one call on each airline's own topic. The decision is also the
aggregator's plan (whom to wait for, whom to report as not called): router and aggregator run in the same
agent over the same request, so the plan is handed over in memory, not as an event. The request itself is
the durable record: it stays unacknowledged until its reply is durable (``joining.py``), so a worker that
dies is replaced by one that routes it again. Nothing here knows faust.

Cache decision (``jetbridge/offer_cache.py``; one Redis round trip per request, none when the agent asked
for ``fresh``): an airline with a *fresh* cached answer is not called; the router publishes that answer on
the responses topic itself (``CACHE``), where the aggregator meets it like a connector's. An airline skipped
as unavailable (circuit open, throttled past the deadline) whose policy allows it is answered from its
*stale* entry instead (``STALE``, the reason kept as its error code), offer by offer while each offer lives,
and moves from the plan's skipped airlines to those it waits for. Anything else is called as before. Those
answers are deliveries of the request like its calls: it is acknowledged only once they are durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from jetbridge import tracing
from jetbridge.airlines import Airline, AirlineRegistry
from jetbridge.kafka import HEADER_TRACEPARENT, event_headers
from jetbridge.log import get_logger
from jetbridge.metrics import CACHE_CALLS_SAVED, CACHE_LOOKUPS, CACHE_STALE_SERVES, REQUESTS_ROUTED
from jetbridge.offer_cache import CachedAnswer
from jetbridge.routing import Route, route
from schemas.codec import AvroCodec
from schemas.models import (
    AggregatorControl,
    AirlineCall,
    AirlineResponse,
    ControlKind,
    ErrorInfo,
    OfferSource,
    ResponseStatus,
    SearchRequest,
    now_utc,
)
from streams.context import Produce, StreamContext

__all__ = ["CACHE_KIND", "Routed", "Router", "call_for", "from_cache", "plan_for"]

log = get_logger(__name__)

# The connector kind of an answer the router gave from the offer cache (airline_response.avsc).
CACHE_KIND = "cache"

# Why an airline was skipped, when its stale answers may stand in: it cannot answer live now. (Any other
# reason, should one be added, is not a failure the cache should hide.)
UNAVAILABLE = frozenset({"circuit_open", "airline_throttled"})


def plan_for(request: SearchRequest, chosen: Route, now: datetime) -> AggregatorControl:
    """The aggregator's plan for ``request``: whom to wait for, and whom to report as not called."""
    return AggregatorControl(
        request_id=request.request_id,
        correlation_id=request.correlation_id,
        kind=ControlKind.PLAN,
        reply_to=request.reply_to,
        expected_airlines=chosen.codes,
        not_served=chosen.not_served,
        max_offers=request.max_offers,
        deadline=request.deadline,
        created_at=now,
        skipped=chosen.skipped,
    )


def call_for(request: SearchRequest, airline: Airline, now: datetime) -> AirlineCall:
    """The call ``airline``'s connector workers receive for ``request``."""
    return AirlineCall(
        request_id=request.request_id,
        correlation_id=request.correlation_id,
        client_id=request.client_id,
        airline=airline.code,
        criteria=request.criteria,
        deadline=request.deadline,
        created_at=now,
        # Live only: a connector whose call fails does not stand stale offers in for it either.
        fresh=request.fresh,
    )


def _cached_response(
    request: SearchRequest, answer: CachedAnswer, now: datetime, latency_ms: int, *, stale_because: str | None
) -> AirlineResponse:
    """``answer`` as this request's response from its airline: only its offers still alive at ``now``."""
    return AirlineResponse(
        request_id=request.request_id,
        correlation_id=request.correlation_id,
        airline=answer.response.airline,
        status=ResponseStatus.OK,
        offers=answer.live_offers(now).offers,
        error=(
            None
            if stale_because is None
            else ErrorInfo(
                code=stale_because,
                message=f"not called ({stale_because}): its cached offers of {answer.age_ms(now)} ms ago stand in",
                retriable=True,
            )
        ),
        connector_kind=CACHE_KIND,
        latency_ms=latency_ms,
        attempts=0,  # no airline call
        produced_at=now,
        source=OfferSource.CACHE if stale_because is None else OfferSource.STALE,
        cached_at=answer.fetched_at,
    )


def from_cache(
    request: SearchRequest,
    chosen: Route,
    found: Mapping[str, CachedAnswer],
    registry: AirlineRegistry,
    now: datetime,
    *,
    latency_ms: int = 0,
) -> tuple[Route, dict[str, AirlineResponse]]:
    """What the cache answers for ``request``: the route with the airlines answered from stale entries moved
    from skipped to expected, and the responses to publish, by airline (fresh: ``CACHE``; for an airline
    skipped as unavailable whose policy allows it: ``STALE``). Pure: the caller looked ``found`` up."""
    answers: dict[str, AirlineResponse] = {}
    for airline in chosen.expected:
        answer = found.get(airline.code)
        if answer is not None and answer.fresh(now) and answer.live_offers(now).offers:
            answers[airline.code] = _cached_response(request, answer, now, latency_ms, stale_because=None)
    stand_ins: list[str] = []
    for code, reason in chosen.skipped.items():
        answer = found.get(code)
        skipped = registry.get(code)
        if reason not in UNAVAILABLE or answer is None or skipped is None or not answer.live_offers(now).offers:
            continue
        if answer.fresh(now):  # as good as a live answer: what it gets when its circuit is closed too
            answers[code] = _cached_response(request, answer, now, latency_ms, stale_because=None)
        elif skipped.cache.serve_stale:
            answers[code] = _cached_response(request, answer, now, latency_ms, stale_because=reason)
        else:
            continue
        stand_ins.append(code)
    return _expect(chosen, stand_ins, registry), answers


def _expect(chosen: Route, codes: Collection[str], registry: AirlineRegistry) -> Route:
    """``chosen`` with the skipped airlines ``codes`` waited for instead, in registry order."""
    if not codes:
        return chosen
    moved = {c for c in codes if c in chosen.skipped and c in registry}
    waited = {a.code for a in chosen.expected} | moved
    return replace(
        chosen,
        expected=[a for a in registry if a.code in waited],
        skipped={c: r for c, r in chosen.skipped.items() if c not in moved},
    )


@dataclass
class Routed:
    """What routing one request decided and queued."""

    plan: AggregatorControl
    headers: dict[str, str]  # the envelope every event of this request carries (calls, answers, reply)
    deliveries: list[asyncio.Future[Any]] = field(default_factory=list)


class Router:
    """Routes one request at a time; the caller dead-letters whatever it raises."""

    def __init__(self, ctx: StreamContext, produce: Produce) -> None:
        self._ctx = ctx
        self._produce = produce

    async def route(
        self,
        codec: AvroCodec,
        request: SearchRequest,
        headers: dict[str, str],
        answered: Collection[str] = (),
    ) -> Routed:
        """Decide who is called, answer what the cache can and queue the rest as calls; ``answered`` are airlines
        whose answer is already in (a request routed again after a crash: those are neither asked nor
        answered for twice)."""
        # The router's span is the parent of each airline call's (its traceparent goes on the calls).
        with tracing.span(
            f"process {self._ctx.names.requests}",
            parent=headers.get(HEADER_TRACEPARENT),
            kind=tracing.SpanKind.CONSUMER,
            attributes=tracing.messaging(
                self._ctx.names.requests,
                "process",
                request.request_id,
                {tracing.REQUEST_ID: request.request_id, "jetbridge.stage": "router"},
            ),
        ) as span:
            routed = await self._route(codec, request, headers, answered, span)
            span.set_attributes(
                {
                    "jetbridge.airlines.called": list(routed.plan.expected_airlines),
                    "jetbridge.airlines.skipped": sorted(routed.plan.skipped),
                }
            )
            return routed

    async def _route(
        self,
        codec: AvroCodec,
        request: SearchRequest,
        headers: dict[str, str],
        answered: Collection[str],
        span: tracing.Span,
    ) -> Routed:
        ctx, names = self._ctx, self._ctx.names
        criteria = request.criteria
        chosen = route(
            ctx.airlines,
            criteria.origin,
            criteria.destination,
            request.airlines,
            deadline=request.deadline,
            skip_reason=ctx.skip_reason(codec),
        )
        # Skipped now, answered before the crash (its call went out, or the cache stood in): its answer counts.
        chosen = _expect(chosen, [c for c in chosen.skipped if c in answered], ctx.airlines)
        out: Sequence[tuple[str, bytes]] = event_headers(
            request_id=request.request_id,
            correlation_id=request.correlation_id,
            client_id=request.client_id,
            deadline_ms=int(request.deadline.timestamp() * 1000),
            traceparent=tracing.traceparent_of(span, headers.get(HEADER_TRACEPARENT)),
        )
        now = now_utc()
        envelope = {k: v.decode() for k, v in out}
        if now >= request.deadline:
            log.warning("request arrived past its deadline; no airline is called")
            return Routed(plan_for(request, chosen, now), envelope)
        chosen, cached = await self._answer_from_cache(request, chosen, answered)
        now = now_utc()
        routed = Routed(plan_for(request, chosen, now), envelope)
        key = request.request_id.encode()
        # Scatter: each airline's topic is its own bulkhead. Queued together, acknowledged together.
        for airline in chosen.expected:
            if airline.code in answered:
                continue
            response = cached.get(airline.code)
            if response is None:
                topic = names.calls(airline.code)
                value = codec.encode(topic, call_for(request, airline, now))
            else:
                topic = names.responses
                value = codec.encode(topic, response)
            routed.deliveries.append(await self._produce(topic, key, value, out))
        REQUESTS_ROUTED.inc()
        log.debug(
            "request routed",
            airlines=chosen.codes,
            from_cache={code: r.source.value for code, r in cached.items()} or None,
            not_served=chosen.not_served,
            skipped=chosen.skipped,
        )
        return routed

    async def _answer_from_cache(
        self, request: SearchRequest, chosen: Route, answered: Collection[str]
    ) -> tuple[Route, dict[str, AirlineResponse]]:
        """The cache decision: one lookup for every airline not answered yet that would be called or could be
        stood in for (none when the agent asked for fresh offers or the cache is off)."""
        cache = await self._ctx.offer_cache()
        if cache is None:
            return chosen, {}
        wanted = [a.code for a in chosen.expected if a.code not in answered]
        wanted += [code for code, reason in chosen.skipped.items() if reason in UNAVAILABLE]
        if not wanted:
            return chosen, {}
        if request.fresh:
            for code in wanted:
                CACHE_LOOKUPS.labels(code, "bypass").inc()
            return chosen, {}
        loop = asyncio.get_running_loop()
        started = loop.time()
        found = await cache.get_many(wanted, request.criteria)
        latency_ms = int((loop.time() - started) * 1000)
        decided, answers = from_cache(request, chosen, found, self._ctx.airlines, now_utc(), latency_ms=latency_ms)
        for code in wanted:
            response = answers.get(code)
            if response is None:
                CACHE_LOOKUPS.labels(code, "miss").inc()
            elif response.source is OfferSource.STALE:
                CACHE_LOOKUPS.labels(code, "stale").inc()
                CACHE_STALE_SERVES.labels(code).inc()
            else:
                CACHE_LOOKUPS.labels(code, "hit").inc()
                if code not in chosen.skipped:
                    CACHE_CALLS_SAVED.labels(code).inc()
        return decided, answers
