"""The router: Content-Based Router, then Scatter (one call per airline topic).

For each search request it decides who is called (``jetbridge/routing.py``: route coverage, the agent's
requested subset, open circuits), tells the aggregator whom to expect (the plan, on the control topic),
then sends one call to each airline's own topic. The plan goes first and every produce is awaited before
the request is acknowledged, so a crash re-routes the request rather than losing it. Nothing here knows
faust: the app hands each event's bytes and headers in, and the events out through ``Send``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import structlog

from jetbridge.airlines import Airline
from jetbridge.kafka import HEADER_TRACEPARENT, event_headers, new_traceparent
from jetbridge.log import get_logger
from jetbridge.metrics import REQUESTS_ROUTED
from jetbridge.routing import Route, route
from schemas.models import AggregatorControl, AirlineCall, ControlKind, SearchRequest, now_utc
from streams.context import Send, StreamContext

__all__ = ["Router", "call_for", "plan_for"]

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


class Router:
    """Routes one request at a time; the caller dead-letters whatever it raises."""

    def __init__(self, ctx: StreamContext, send: Send) -> None:
        self._ctx = ctx
        self._send = send

    async def route(self, value: bytes, headers: dict[str, str]) -> None:
        ctx, names = self._ctx, self._ctx.names
        codec = await ctx.codec()
        request = await codec.decode(value, SearchRequest)
        with structlog.contextvars.bound_contextvars(
            request_id=request.request_id, correlation_id=request.correlation_id
        ):
            criteria = request.criteria
            chosen = route(
                ctx.airlines,
                criteria.origin,
                criteria.destination,
                request.airlines,
                deadline=request.deadline,
                skip_reason=ctx.skip_reason(codec),
            )
            out_headers = event_headers(
                request_id=request.request_id,
                correlation_id=request.correlation_id,
                client_id=request.client_id,
                deadline_ms=int(request.deadline.timestamp() * 1000),
                traceparent=headers.get(HEADER_TRACEPARENT) or new_traceparent(),
            )
            key = request.request_id.encode()
            now = now_utc()
            # The plan first: the aggregator must know whom to wait for.
            plan = plan_for(request, chosen, now)
            await self._send(names.control, key, codec.encode(names.control, plan), out_headers)
            if now >= request.deadline:
                log.warning("request arrived past its deadline; no airline is called")
                return
            # Scatter: each airline's topic is its own bulkhead, so the sends go out together.
            await asyncio.gather(
                *(
                    self._send(
                        names.calls(a.code),
                        key,
                        codec.encode(names.calls(a.code), call_for(request, a, now)),
                        out_headers,
                    )
                    for a in chosen.expected
                )
            )
            REQUESTS_ROUTED.inc()
            log.info("request routed", airlines=chosen.codes, not_served=chosen.not_served, skipped=chosen.skipped)
