"""The router: Content-Based Router, then Scatter (one call per airline topic).

For each search request it decides who is called (``jetbridge/routing.py``: route coverage, the agent's
requested subset, open circuits) and queues one call on each airline's own topic. The decision is also the
aggregator's plan (whom to wait for, whom to report as not called): router and aggregator run in the same
agent over the same request, so the plan is handed over in memory, not as an event. The request itself is
the durable record: it stays unacknowledged until its reply is durable (``joining.py``), so a worker that
dies is replaced by one that routes it again. Nothing here knows faust.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jetbridge.airlines import Airline
from jetbridge.kafka import HEADER_TRACEPARENT, event_headers, new_traceparent
from jetbridge.log import get_logger
from jetbridge.metrics import REQUESTS_ROUTED
from jetbridge.routing import Route, route
from schemas.codec import AvroCodec
from schemas.models import AggregatorControl, AirlineCall, ControlKind, SearchRequest, now_utc
from streams.context import Produce, StreamContext

__all__ = ["Routed", "Router", "call_for", "plan_for"]

log = get_logger(__name__)


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
    )


@dataclass
class Routed:
    """What routing one request decided and queued."""

    plan: AggregatorControl
    headers: dict[str, str]  # the envelope every event of this request carries (calls, reply)
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
        """Decide who is called and queue the calls; ``answered`` are airlines whose answer is already in
        (a request routed again after a crash: those are not asked twice)."""
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
        out: Sequence[tuple[str, bytes]] = event_headers(
            request_id=request.request_id,
            correlation_id=request.correlation_id,
            client_id=request.client_id,
            deadline_ms=int(request.deadline.timestamp() * 1000),
            traceparent=headers.get(HEADER_TRACEPARENT) or new_traceparent(),
        )
        now = now_utc()
        routed = Routed(plan_for(request, chosen, now), {k: v.decode() for k, v in out})
        if now >= request.deadline:
            log.warning("request arrived past its deadline; no airline is called")
            return routed
        key = request.request_id.encode()
        # Scatter: each airline's topic is its own bulkhead. Queued together, acknowledged together.
        for airline in chosen.expected:
            if airline.code in answered:
                continue
            topic = names.calls(airline.code)
            routed.deliveries.append(
                await self._produce(topic, key, codec.encode(topic, call_for(request, airline, now)), out)
            )
        REQUESTS_ROUTED.inc()
        log.debug("request routed", airlines=chosen.codes, not_served=chosen.not_served, skipped=chosen.skipped)
        return routed
