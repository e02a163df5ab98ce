"""The router (``streams/router.py``) against an in-memory registry and a recording producer: the plan goes
to the aggregator before any call, one call per airline the shared rule picks, headers carried."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from jetbridge.kafka import decode_headers
from jetbridge.routing import SkipReason
from jetbridge.settings import Settings
from schemas.codec import AvroCodec
from schemas.models import AggregatorControl, AirlineCall, SearchRequest, now_utc
from schemas.registry import SchemaRegistryClient
from streams.context import StreamContext
from streams.router import Router
from tests.support import factories as f
from tests.support.registry_double import RegistryDouble

TRACE = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"


@dataclass
class Sent:
    topic: str
    key: bytes | str | None
    value: bytes
    headers: dict[str, str]


class Context(StreamContext):
    def __init__(self, codec: AvroCodec, skips: dict[str, str]) -> None:
        super().__init__(Settings())
        self._test_codec = codec
        self.skips = skips

    async def codec(self) -> AvroCodec:
        return self._test_codec

    def skip_reason(self, codec: AvroCodec) -> SkipReason:
        def reason(code: str, _deadline: datetime) -> str | None:
            return self.skips.get(code)

        return reason


@pytest.fixture
async def codec() -> AsyncIterator[AvroCodec]:
    async with RegistryDouble().client() as http:
        avro = AvroCodec(SchemaRegistryClient("http://registry.test", http))
        ctx = StreamContext(Settings())
        await avro.register(ctx.names.requests, SearchRequest)
        await avro.register(ctx.names.control, AggregatorControl)
        for a in ctx.airlines:
            await avro.register(ctx.names.calls(a.code), AirlineCall)
        yield avro


async def route(
    codec: AvroCodec, request: SearchRequest, skips: dict[str, str] | None = None
) -> tuple[Context, list[Sent]]:
    ctx = Context(codec, skips or {})
    sent: list[Sent] = []

    async def send(topic: str, key: bytes | str | None, value: bytes, headers: Sequence[tuple[str, bytes]]) -> None:
        sent.append(Sent(topic, key, value, decode_headers(list(headers))))

    await Router(ctx, send).route(codec.encode(ctx.names.requests, request), {"traceparent": TRACE})
    return ctx, sent


async def test_router_sends_the_plan_first_then_one_call_per_airline_serving_the_route(codec: AvroCodec) -> None:
    request = f.search_request(request_id="req-r1", correlation_id="req-r1")
    ctx, sent = await route(codec, request)
    names = ctx.names
    serving = [a.code for a in ctx.airlines.serving("LHR", "JFK")]
    assert [s.topic for s in sent] == [names.control, *(names.calls(c) for c in serving)]
    plan = await codec.decode(sent[0].value, AggregatorControl)
    assert plan.expected_airlines == serving
    for s in sent[1:]:
        call = await codec.decode(s.value, AirlineCall)
        assert (call.request_id, call.deadline) == ("req-r1", request.deadline)
    assert {s.key for s in sent} == {b"req-r1"}
    assert {s.headers["traceparent"] for s in sent} == {TRACE}
    assert {s.headers["deadline_ms"] for s in sent} == {str(int(request.deadline.timestamp() * 1000))}


async def test_router_names_skipped_and_not_served_airlines_in_the_plan_and_does_not_call_them(
    codec: AvroCodec,
) -> None:
    request = f.search_request(airlines=["BA", "AA", "ZZ"])
    ctx, sent = await route(codec, request, skips={"AA": "circuit_open"})
    plan = await codec.decode(sent[0].value, AggregatorControl)
    assert (plan.expected_airlines, plan.not_served, plan.skipped) == (["BA"], ["ZZ"], {"AA": "circuit_open"})
    assert [s.topic for s in sent[1:]] == [ctx.names.calls("BA")]


async def test_router_calls_nobody_for_a_request_already_past_its_deadline(codec: AvroCodec) -> None:
    request = f.search_request(deadline=now_utc() - timedelta(milliseconds=1))
    ctx, sent = await route(codec, request)
    assert [s.topic for s in sent] == [ctx.names.control]  # the aggregator still answers it
