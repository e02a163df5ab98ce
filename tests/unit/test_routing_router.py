"""The router (``streams/router.py``) against an in-memory registry and a recording producer: one call per
airline the shared rule picks, queued (not awaited one by one), headers carried, and the plan handed to the
aggregator in memory: no plan event, so a search costs request, calls, responses, reply and audit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from schemas.codec import AvroCodec
from schemas.models import AirlineCall, SearchRequest, now_utc
from streams.router import Routed
from tests.support import factories as f
from tests.support.router_context import TRACE, Context, Sent, route_recorded, router_codec


@pytest.fixture
async def codec() -> AsyncIterator[AvroCodec]:
    async with router_codec() as avro:
        yield avro


async def route(
    codec: AvroCodec,
    request: SearchRequest,
    skips: dict[str, str] | None = None,
    answered: frozenset[str] = frozenset(),
) -> tuple[Context, list[Sent], Routed]:
    ctx = Context(codec, skips or {})
    sent, routed = await route_recorded(ctx, codec, request, answered)
    return ctx, sent, routed


async def test_router_queues_one_call_per_airline_serving_the_route_and_hands_the_plan_over(
    codec: AvroCodec,
) -> None:
    request = f.search_request(request_id="req-r1", correlation_id="req-r1")
    ctx, sent, routed = await route(codec, request)
    names = ctx.names
    serving = [a.code for a in ctx.airlines.serving("LHR", "JFK")]
    assert [s.topic for s in sent] == [names.calls(c) for c in serving], "no plan event: calls only"
    assert routed.plan.expected_airlines == serving
    assert len(routed.deliveries) == len(serving)
    assert not any(d.done() for d in routed.deliveries), "returned before the broker answered"
    assert routed.headers["traceparent"] == TRACE
    for s in sent:
        call = await codec.decode(s.value, AirlineCall)
        assert (call.request_id, call.deadline) == ("req-r1", request.deadline)
    assert {s.key for s in sent} == {b"req-r1"}
    assert {s.headers["traceparent"] for s in sent} == {TRACE}
    assert {s.headers["deadline_ms"] for s in sent} == {str(int(request.deadline.timestamp() * 1000))}


async def test_router_names_skipped_and_not_served_airlines_in_the_plan_and_does_not_call_them(
    codec: AvroCodec,
) -> None:
    request = f.search_request(airlines=["BA", "AA", "ZZ"])
    ctx, sent, routed = await route(codec, request, skips={"AA": "circuit_open"})
    plan = routed.plan
    assert (plan.expected_airlines, plan.not_served, plan.skipped) == (["BA"], ["ZZ"], {"AA": "circuit_open"})
    assert [s.topic for s in sent] == [ctx.names.calls("BA")]


async def test_router_calls_nobody_for_a_request_already_past_its_deadline(codec: AvroCodec) -> None:
    request = f.search_request(deadline=now_utc() - timedelta(milliseconds=1))
    _, sent, routed = await route(codec, request)
    assert sent == []
    assert routed.plan.expected_airlines, "the aggregator still answers it, with every airline timed out"


async def test_a_request_routed_again_does_not_ask_airlines_whose_answer_is_in(codec: AvroCodec) -> None:
    request = f.search_request(airlines=["BA", "AA"])
    ctx, sent, routed = await route(codec, request, answered=frozenset({"BA"}))
    assert [s.topic for s in sent] == [ctx.names.calls("AA")]
    assert routed.plan.expected_airlines == ["BA", "AA"], "BA is still expected: its answer is in the join"
