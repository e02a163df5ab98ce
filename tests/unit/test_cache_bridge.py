"""The agent's side of the offer cache: ``fresh`` is a typed, documented argument of search_offers carried on
the request event, and each airline of a result says where its offers came from and how old cached ones are."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, cast

import anyio
import httpx
import pytest
from mcp import Client

from jetbridge.kafka import AsyncProducer
from jetbridge.runtime import Runtime
from jetbridge.settings import Settings
from mcp_bridge.correlator import ReplyCorrelator
from mcp_bridge.server import build_server
from mcp_bridge.service import SearchService, result_of, reusable_ms
from schemas.codec import AvroCodec
from schemas.models import AirlineOutcome, AirlineStatus, ReplyStatus, SearchReply, SearchRequest, now_utc
from tests.support import factories
from tests.unit.test_search_arguments import RULES, RecordingBackend, parse, real_soon


def test_fresh_is_false_unless_the_agent_asks_for_it() -> None:
    assert (parse().fresh, parse(fresh=None).fresh, parse(fresh=True).fresh) == (False, False, True)


async def test_the_tool_schema_documents_fresh_and_the_source_and_age_of_each_airline() -> None:
    with anyio.fail_after(10):
        async with Client(build_server(RecordingBackend(RULES))) as client:
            [tool] = [t for t in (await client.list_tools()).tools if t.name == "search_offers"]
    fresh = tool.input_schema["properties"]["fresh"]
    assert (fresh["type"], fresh["default"]) == ("boolean", False)
    assert "cache" in fresh["description"]
    assert tool.description is not None
    assert "fresh=true" in tool.description
    assert "stale" in tool.description
    assert tool.output_schema is not None
    airline = tool.output_schema["$defs"]["AirlineView"]["properties"]
    assert {"source", "age_ms"} <= set(airline)


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    async def send(self, topic: str, *, key: str, value: Any, headers: object = None) -> None:
        self.sent.append((topic, value))


class PassThroughCodec:
    def encode(self, topic: str, event: object) -> object:
        return event


class Correlator:
    """Answers every request at once with ``reply`` (its ids filled in)."""

    instance_id = "bridge-test"

    def __init__(self, reply: SearchReply) -> None:
        self.reply = reply

    def expect(self, request_id: str) -> asyncio.Future[SearchReply]:
        waiter: asyncio.Future[SearchReply] = asyncio.get_running_loop().create_future()
        waiter.set_result(self.reply.model_copy(update={"request_id": request_id, "correlation_id": request_id}))
        return waiter

    def forget(self, request_id: str) -> None:
        pass


def service_answering(reply: SearchReply, producer: object) -> SearchService:
    """The bridge's search service publishing on ``producer`` (a double), every request answered at once with
    ``reply``."""
    runtime = Runtime(
        Settings(),
        RULES.registry,
        cast(httpx.AsyncClient, None),
        cast(AvroCodec, PassThroughCodec()),
        cast(AsyncProducer, producer),
    )
    return SearchService(runtime, cast(ReplyCorrelator, Correlator(reply)))


async def test_fresh_travels_on_the_request_and_the_result_shows_each_airlines_source_and_age() -> None:
    now = now_utc()
    reply = SearchReply(
        request_id="-",
        correlation_id="-",
        reply_to="bridge-test",
        status=ReplyStatus.COMPLETE,
        offers=[],
        airlines=[
            AirlineStatus(airline="BA", status=AirlineOutcome.OK, offer_count=1, source="live"),
            AirlineStatus(airline="AA", status=AirlineOutcome.OK, offer_count=2, source="cache", age_ms=4_000),
        ],
        deadline=now + timedelta(seconds=3),
        completed_at=now,
    )
    producer = Producer()
    service = service_answering(reply, producer)
    arguments = {"origin": "LHR", "destination": "JFK", "departure_date": real_soon(), "fresh": True}
    result = await service.search(arguments, client_id="test")
    await service.drain()
    [request] = [value for _, value in producer.sent if isinstance(value, SearchRequest)]
    assert request.fresh is True
    assert [(a.airline, a.source, a.age_ms) for a in result.airlines] == [("BA", "live", None), ("AA", "cache", 4_000)]


def test_a_complete_result_says_how_long_it_may_be_reused_and_others_none() -> None:
    now = now_utc()
    soon = now + timedelta(seconds=45)
    reply = SearchReply(
        request_id="r",
        correlation_id="r",
        reply_to="bridge-1",
        status=ReplyStatus.COMPLETE,
        deadline=now,
        completed_at=now,
        offers=[factories.offer("BA", expires_at=now + timedelta(minutes=20)), factories.offer("AA", expires_at=soon)],
        airlines=[
            AirlineStatus(airline="BA", status=AirlineOutcome.OK, offer_count=1, source="live"),
            AirlineStatus(airline="AA", status=AirlineOutcome.OK, offer_count=1, source="cache", age_ms=50_000),
        ],
    )
    fresh = {"BA": 60.0, "AA": 60.0}.__getitem__
    assert reusable_ms(reply, fresh, now) == 10_000  # AA's answer is fresh 10 s more; before the offer expires
    assert result_of(reply, 5, fresh).ttl_ms == pytest.approx(10_000, abs=100)
    assert result_of(reply, 5, fresh).cache_scope == "private"
    assert reusable_ms(reply.model_copy(update={"status": ReplyStatus.PARTIAL}), fresh, now) == 0
    stale = [a.model_copy(update={"source": "stale"}) if a.airline == "AA" else a for a in reply.airlines]
    assert reusable_ms(reply.model_copy(update={"airlines": stale}), fresh, now) == 0


async def test_tools_list_may_be_kept_an_hour_by_its_caller_only() -> None:
    """Which tools a caller sees depends on its token's scopes: the list is private to it (MCP caching hints)."""
    with anyio.fail_after(10):
        async with Client(build_server(RecordingBackend(RULES))) as client:
            listed = await client.list_tools()
    assert (listed.ttl_ms, listed.cache_scope) == (3_600_000, "private")
