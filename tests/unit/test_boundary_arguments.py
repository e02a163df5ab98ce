"""What an agent sends is checked at the bridge's edge: unknown arguments and tools are refused naming them,
errors quote at most a short, printable excerpt of the input, and a search's deadline counts from its
arrival at the bridge (regressions measured on main: extras silently dropped, a 1 MB origin echoed whole)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import uvicorn
from mcp import Client
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jetbridge.errors import DeadlineExceeded
from jetbridge.settings import Settings
from mcp_bridge.boundary import ARRIVED
from mcp_bridge.server import _deadline_from_arrival, build_server, http_app
from mcp_bridge.validation import EXCERPT_CHARS, SearchArguments, excerpt
from tests.unit.test_search_arguments import RULES, RecordingBackend, real_soon

ERROR = re.compile(r"Invalid argument '(?P<field>[^']*)': (?P<reason>.*) \(code invalid_input\)$", re.DOTALL)


def good() -> dict[str, object]:
    return {"origin": "LHR", "destination": "JFK", "departure_date": real_soon()}


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def test_every_tool_schema_closes_its_arguments_with_additional_properties_false() -> None:
    with anyio.fail_after(10):
        async with Client(build_server(RecordingBackend(RULES))) as client:
            tools = (await client.list_tools()).tools
    assert {t.name for t in tools} == {"search_offers", "list_airlines"}
    assert all(t.input_schema.get("additionalProperties") is False for t in tools)


async def test_an_unknown_argument_is_refused_naming_it_and_reaches_no_backend() -> None:
    backend = RecordingBackend(RULES)
    with anyio.fail_after(10):
        async with Client(build_server(backend)) as client:
            search = await client.call_tool("search_offers", good() | {"passengers": 3})
            listing = await client.call_tool("list_airlines", {"verbose": True})
    assert search.is_error
    assert listing.is_error
    assert "Invalid argument 'passengers': is not an argument of search_offers (code invalid_input)" in text_of(search)
    assert "Invalid argument 'verbose': is not an argument of list_airlines (code invalid_input)" in text_of(listing)
    assert backend.calls == []


async def test_a_megabyte_of_input_is_quoted_as_a_short_excerpt_saying_how_long_it_was() -> None:
    backend = RecordingBackend(RULES)
    huge = "X" * 1_000_000
    with anyio.fail_after(20):
        async with Client(build_server(backend)) as client:
            by_value = await client.call_tool("search_offers", good() | {"origin": huge})
            by_name = await client.call_tool("search_offers", good() | {huge: 1})
            by_tool = await client.call_tool(huge, {})
    for result in (by_value, by_name, by_tool):
        text = text_of(result)
        assert result.is_error
        assert len(text) < 300, text[:300]
        assert "…(1000000 characters)" in text
    assert ERROR.search(text_of(by_value))["field"] == "origin"  # type: ignore[index]  # asserted to match
    assert backend.calls == []


async def test_a_type_error_reads_like_every_other_refusal_not_like_pydantic() -> None:
    backend = RecordingBackend(RULES)
    with anyio.fail_after(10):
        async with Client(build_server(backend)) as client:
            results = [
                await client.call_tool("search_offers", good() | {"adults": {"a": 1}}),
                await client.call_tool("search_offers", good() | {"origin": ["LHR"]}),
                await client.call_tool("search_offers", good() | {"children": 10**5000}),
            ]
    for result in results:
        text = text_of(result)
        assert ERROR.search(text), text
        assert "validation error" not in text
        assert "pydantic" not in text
        assert "input_value" not in text


def test_an_excerpt_is_printable_short_and_says_it_was_cut() -> None:
    assert excerpt("LONDON") == "'LONDON'"
    assert excerpt("a\x1b[31mb\nc\u202ed") == "'a[31mbcd'"
    cut = excerpt("Y" * 5000)
    assert cut == "'" + "Y" * EXCERPT_CHARS + "…(5000 characters)'"
    assert len(excerpt(list(range(10_000)))) <= EXCERPT_CHARS + 1
    assert "bits" in excerpt(10**6000)


def test_the_deadline_counts_from_arrival_and_a_search_queued_past_it_is_not_published() -> None:
    arguments = SearchArguments.parse(good() | {"deadline_ms": 3000}, RULES)
    assert _deadline_from_arrival(arguments, time.monotonic() + 1).deadline_ms == 3000
    left = _deadline_from_arrival(arguments, time.monotonic() - 1.0).deadline_ms
    assert 1900 <= left <= 2000
    with pytest.raises(DeadlineExceeded, match=r"waited .* ms in the bridge"):
        _deadline_from_arrival(arguments, time.monotonic() - 2.9)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110  # uvicorn offers no event to wait on
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            server.should_exit = True


def held_inside(app: ASGIApp, seconds: float) -> ASGIApp:
    """``app`` behind a queue: each tools/call request waits ``seconds`` after the bridge stamped it."""

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ARRIVED in scope and scope["method"] == "POST":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            if b"tools/call" in body:
                await anyio.sleep(seconds)
            sent = False

            async def replay() -> Message:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await app(scope, replay, send)
            return
        await app(scope, receive, send)

    return slow


def bridge_app_with_a_queue(server: MCPServer, seconds: float) -> ASGIApp:
    """The bridge's real app (`http_app`) with a queue placed right after the arrival stamp."""
    app = http_app(server, Settings())
    app.app = held_inside(app.app, seconds)
    return app


async def test_time_queued_in_the_bridge_over_http_is_taken_from_the_searchs_deadline() -> None:
    backend = RecordingBackend(RULES)
    async with serving(bridge_app_with_a_queue(build_server(backend), 0.6)) as url:
        with anyio.fail_after(20):
            async with Client(url) as client:
                result = await client.call_tool("search_offers", good() | {"deadline_ms": 3000})
                late = await client.call_tool("search_offers", good() | {"deadline_ms": 700})
    assert not result.is_error, text_of(result)
    (received,) = backend.calls
    assert 2300 <= received.deadline_ms <= 2400
    assert late.is_error
    assert "(code deadline_exceeded)" in text_of(late)
