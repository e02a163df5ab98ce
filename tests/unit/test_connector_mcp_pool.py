"""The airline-MCP connector's session pool against the real simulated Finnair MCP server on a local port:
reuse, concurrency, a server that goes away and comes back, timeouts and cancellation, per-call attribution."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import anyio
import pytest
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.kinds.mcp import McpConnector
from infra.simulators import mcp_finnair
from infra.simulators.faults import AirlineState, FaultConfig
from infra.simulators.schedule import Schedule
from jetbridge.airlines import Airline
from jetbridge.errors import AirlineThrottled, AirlineTimeout, AirlineUnavailable
from schemas.models import Cabin, SearchCriteria

LHR_JFK = SearchCriteria(
    origin="LHR",
    destination="JFK",
    departure_date=date.today() + timedelta(days=21),
    adults=1,
    cabin=Cabin.ECONOMY,
    currency="USD",
)
THROTTLED_DESTINATION = "BOS"
HANDSHAKES = {"server/discover", "initialize"}


@dataclass
class Seen:
    """What the server saw: JSON-RPC methods of the POSTs, and the most tool calls in flight at once."""

    methods: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    most_in_flight: int = 0

    @property
    def handshakes(self) -> int:
        return sum(self.methods[m] for m in HANDSHAKES)


class Recorder:
    """Counts methods; answers a tool call for ``THROTTLED_DESTINATION`` with 503 + Retry-After."""

    def __init__(self, app: ASGIApp, seen: Seen) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        request: Any = json.loads(body) if body else {}
        method = request.get("method", "") if isinstance(request, dict) else ""
        self.seen.methods[method] += 1
        arguments = request.get("params", {}).get("arguments", {}) if method == "tools/call" else {}
        if arguments.get("destination") == THROTTLED_DESTINATION:
            await send({"type": "http.response.start", "status": 503, "headers": [(b"retry-after", b"7")]})
            await send({"type": "http.response.body", "body": b"busy"})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        tool_call = method == "tools/call"
        if tool_call:
            self.seen.in_flight += 1
            self.seen.most_in_flight = max(self.seen.most_in_flight, self.seen.in_flight)
        try:
            await self.app(scope, replay, send)
        finally:
            if tool_call:
                self.seen.in_flight -= 1


class Finnair:
    """The simulated Finnair on a fixed local port, which can be stopped and started again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.state = AirlineState("AY", FaultConfig())
        self.seen = Seen()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # A fresh app each time: its session manager runs once.
        app = Recorder(mcp_finnair.build_app(self.state, Schedule()), self.seen)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="on", log_level="warning")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        with anyio.fail_after(5):
            while not self._server.started:  # noqa: ASYNC110 - uvicorn exposes only this flag
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        assert self._server is not None
        assert self._task is not None
        self._server.should_exit = True
        await self._task


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def finnair() -> AsyncIterator[Finnair]:
    server = Finnair(free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def connector_for(server: Finnair, *, concurrency: int = 4, max_session_age_s: float = 300.0) -> McpConnector:
    airline = Airline(
        code="AY",
        name="Finnair",
        kind="mcp",
        endpoint=f"http://127.0.0.1:{server.port}/mcp",
        concurrency=concurrency,
    )
    return McpConnector(airline, max_session_age_s=max_session_age_s)


@pytest.fixture
async def connector(finnair: Finnair) -> AsyncIterator[McpConnector]:
    built = connector_for(finnair)
    try:
        yield built
    finally:
        await built.aclose()


async def shop(connector: McpConnector, *, timeout_s: float = 2.0, criteria: SearchCriteria = LHR_JFK) -> int:
    return len(await connector.search(criteria, request_id="req-pool", timeout_s=timeout_s))


async def test_sequential_searches_reuse_one_session(finnair: Finnair, connector: McpConnector) -> None:
    with anyio.fail_after(10):
        for _ in range(5):
            assert await shop(connector) > 0
    assert connector.sessions.opened_count == 1
    assert finnair.seen.methods["tools/call"] == 5
    # One handshake: a discovery probe, plus the initialize it falls back to on a legacy server.
    assert 1 <= finnair.seen.handshakes <= 2


async def test_concurrent_searches_open_at_most_the_airlines_concurrency(finnair: Finnair) -> None:
    finnair.state.config = FaultConfig(latency_ms=150)
    connector = connector_for(finnair, concurrency=3)
    try:
        with anyio.fail_after(10):
            counts = await asyncio.gather(*(shop(connector) for _ in range(9)))
            assert all(n > 0 for n in counts)
            assert connector.sessions.opened_count == 3
            assert finnair.seen.most_in_flight == 3
            await asyncio.gather(*(shop(connector) for _ in range(3)))
        assert connector.sessions.opened_count == 3
    finally:
        await connector.aclose()


async def test_a_server_that_goes_away_is_unavailable_and_its_return_is_served(
    finnair: Finnair, connector: McpConnector
) -> None:
    with anyio.fail_after(15):
        assert await shop(connector) > 0
        await finnair.stop()
        with pytest.raises(AirlineUnavailable):
            await shop(connector)
        await finnair.start()
        assert await shop(connector) > 0
        assert await shop(connector) > 0
    # The session that met the refused connection was replaced, once.
    assert connector.sessions.opened_count == 2


async def test_a_burst_of_tiny_budgets_times_out_and_leaves_the_pool_usable(
    finnair: Finnair, connector: McpConnector
) -> None:
    with anyio.fail_after(15):
        assert await shop(connector) > 0
        finnair.state.config = FaultConfig(latency_ms=200)
        outcomes = await asyncio.gather(
            *(shop(connector, timeout_s=0.01 + 0.005 * (n % 5)) for n in range(40)), return_exceptions=True
        )
        assert all(isinstance(outcome, AirlineTimeout) for outcome in outcomes)
        finnair.state.config = FaultConfig()
        for _ in range(3):
            assert await shop(connector, timeout_s=1.0) > 0
        assert all(n > 0 for n in await asyncio.gather(*(shop(connector, timeout_s=1.0) for _ in range(8))))
    assert connector.sessions.opened_count <= 4


async def test_cancelled_searches_leave_the_pool_usable(finnair: Finnair, connector: McpConnector) -> None:
    finnair.state.config = FaultConfig(latency_ms=300)
    with anyio.fail_after(15):
        for _ in range(3):
            tasks = [asyncio.create_task(shop(connector)) for _ in range(6)]
            await asyncio.sleep(0.05)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finnair.state.config = FaultConfig()
        assert all(n > 0 for n in await asyncio.gather(*(shop(connector, timeout_s=1.0) for _ in range(4))))
    assert connector.sessions.opened_count <= 4


async def test_a_throttled_call_is_told_apart_from_its_concurrent_neighbours(
    finnair: Finnair, connector: McpConnector
) -> None:
    finnair.state.config = FaultConfig(latency_ms=100)
    boston = LHR_JFK.model_copy(update={"destination": THROTTLED_DESTINATION})
    with anyio.fail_after(10):
        outcomes = await asyncio.gather(
            shop(connector), shop(connector, criteria=boston), shop(connector), return_exceptions=True
        )
    first, throttled, third = outcomes
    assert isinstance(first, int)
    assert isinstance(third, int)
    assert min(first, third) > 0
    assert isinstance(throttled, AirlineThrottled)
    assert throttled.retry_after_s == 7


async def test_old_sessions_are_replaced(finnair: Finnair) -> None:
    airline_connector = connector_for(finnair, max_session_age_s=0.0)
    try:
        with anyio.fail_after(10):
            for _ in range(3):
                assert await shop(airline_connector) > 0
        assert airline_connector.sessions.opened_count == 3
    finally:
        await airline_connector.aclose()


async def test_aclose_ends_every_session_task(finnair: Finnair) -> None:
    before = asyncio.all_tasks()
    connector = connector_for(finnair)
    with anyio.fail_after(10):
        await asyncio.gather(*(shop(connector) for _ in range(4)))
        assert asyncio.all_tasks() - before
        await connector.aclose()
    assert asyncio.all_tasks() - before == set()
