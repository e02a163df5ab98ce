"""MCP tasks on a real broker: real ``python -m mcp_bridge`` processes, a real stream worker (router and
aggregator), the SDK's own client over streamable HTTP. The test plays the airlines: it reads each search
request off ``jb.requests.v1`` and answers on ``jb.airline-responses.v1`` when it chooses, as a connector would.

A task search returns a task at once and its result later; a synchronous call with a progress token gets one
progress notification per airline; an airline answering past the agent's deadline reaches the task's result;
a task's result survives its bridge being killed (another bridge, started after, answers tasks/get); a
2025-11-25 client gets a plain result; another client's task is not found; tasks/cancel cancels."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from jetbridge.settings import REPO_ROOT, Settings
from mcp_bridge.task_client import CreateTaskResult, TasksClient, cancel_task, get_task, wait_for_task
from schemas.models import SearchRequest
from tests.support import factories as f
from tests.support.streams_worker import StreamsWorker, TopicSpace, free_port

pytestmark = pytest.mark.kafka

AIRLINES = ["BA", "AA", "VS"]
# The long deadline a task's search is published with: short here, so a test waits seconds, not the default 15.
MAX_DEADLINE_MS = 6000


class BridgeProcess:
    def __init__(self, space: TopicSpace, home: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log_path = home / "logs" / f"{space.prefix}{name}.log"
        self.env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=space.settings.kafka_bootstrap_servers,
            SCHEMA_REGISTRY_URL=space.settings.schema_registry_url,
            REDIS_URL=space.settings.redis_url,
            JB_HOME=str(home),
            JB_AUTH="off",
            JB_TOPIC_PREFIX=space.prefix,
            JB_BRIDGE_HOST="127.0.0.1",
            JB_BRIDGE_PORT=str(self.port),
            JB_MAX_DEADLINE_MS=str(MAX_DEADLINE_MS),
            JB_LOG_FORMAT="json",
            JB_LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.launch()
        await self.up()

    def launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mcp_bridge"],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    async def up(self) -> None:
        assert self.proc is not None
        give_up = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as http:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"bridge exited with {self.proc.returncode}: {self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{self.port}/health")).status_code == 200:
                        return
                assert time.monotonic() < give_up, f"bridge not up after 60 s: {self.tail()}"
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """kill -9: no shutdown, nothing written on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class World:
    """A topic space with a stream worker and one bridge; the test answers for the airlines."""

    def __init__(self, space: TopicSpace, home: Path) -> None:
        self.space = space
        self.home = home
        self.bridge = BridgeProcess(space, home, "bridge-a")

    @contextlib.asynccontextmanager
    async def agent(
        self, client: str, *, url: str | None = None, mode: str = "2026-07-28", tasks: bool = True
    ) -> AsyncIterator[Client]:
        headers = {"x-client-id": client}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0), trust_env=False) as http,
            Client(
                streamable_http_client(url or self.bridge.url, http_client=http),
                mode=mode,
                extensions=[TasksClient()] if tasks else None,
            ) as session,
        ):
            yield session

    async def request_of(self, client: str, timeout_s: float = 15.0) -> SearchRequest:
        """The search request ``client`` made, read off the request topic (each test uses its own client id)."""
        found: list[SearchRequest] = []
        assert self.space.codec is not None
        codec, loop = self.space.codec, asyncio.get_running_loop()

        def until(messages: list[Any]) -> bool:
            for message in messages:
                request = asyncio.run_coroutine_threadsafe(codec.decode(message.value(), SearchRequest), loop).result(5)
                if request.client_id == client:
                    found.append(request)
                    return True
            return False

        await asyncio.to_thread(self.space.read_all, self.space.names.requests, until=until, timeout_s=timeout_s)
        assert found, f"no search request of {client}: {self.bridge.tail()}"
        return found[0]

    async def answer(self, request: SearchRequest, airline: str, amount: str = "500.00") -> None:
        rid = request.request_id
        offer = f.offer(airline, amount)
        await self.space.respond(f.response(airline, request_id=rid, correlation_id=rid, offers=[offer]))


@pytest.fixture(scope="module")
async def world(settings: Settings, test_home: Path) -> AsyncIterator[World]:
    space = TopicSpace(settings)
    await space.open()
    worker = StreamsWorker(space, test_home, "streams-tasks")
    made = World(space, test_home)
    try:
        worker.start()
        await worker.healthy()
        await made.bridge.start()
        yield made
    finally:
        made.bridge.stop()
        worker.stop()
        await space.close()


def search(deadline_ms: int = 3000, **overrides: Any) -> dict[str, Any]:
    day = (datetime.now(UTC).date() + timedelta(days=21)).isoformat()
    values = {"origin": "LHR", "destination": "JFK", "departure_date": day, "airlines": AIRLINES, "fresh": True}
    return values | {"deadline_ms": deadline_ms} | overrides


def airlines_of(result: dict[str, Any]) -> dict[str, str]:
    return {a["airline"]: a["status"] for a in result["airlines"]}


async def test_a_task_search_returns_a_task_at_once_and_its_result_later(world: World) -> None:
    async with world.agent("agent-task") as agent:
        started = time.monotonic()
        created = await agent.session.call_tool("search_offers", search(), allow_claimed=True)
        assert isinstance(created, CreateTaskResult), created
        assert time.monotonic() - started < 1.5, "the task is handed out at once"
        request = await world.request_of("agent-task")
        for code in AIRLINES:
            await world.answer(request, code)
        done = await asyncio.wait_for(wait_for_task(agent.session, created.task_id, poll_ms=100), 20)
    assert done.status == "completed"
    assert done.result is not None
    result = done.result["structuredContent"]
    assert result["status"] == "complete"
    assert airlines_of(result) == dict.fromkeys(AIRLINES, "ok")
    assert result["request_id"] == request.request_id


async def test_progress_notifications_arrive_as_airlines_answer(world: World) -> None:
    notes: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append((progress, total, message))

    async with world.agent("agent-progress", tasks=False) as agent:
        call = asyncio.create_task(agent.call_tool("search_offers", search(5000), progress_callback=on_progress))
        request = await world.request_of("agent-progress")
        for code in AIRLINES:
            await world.answer(request, code)
            await asyncio.sleep(0.3)
        result = await asyncio.wait_for(call, 20)
    assert isinstance(result, CallToolResult)
    assert not result.is_error
    assert [(p, t) for p, t, _ in notes] == [(1, 3), (2, 3), (3, 3)], notes
    assert [m for _, _, m in notes] == [f"{c} answered ({i} of 3 airlines)" for i, c in enumerate(AIRLINES, 1)]


async def test_a_late_airlines_offers_reach_the_tasks_result(world: World) -> None:
    async with world.agent("agent-late") as agent:
        created = await agent.session.call_tool("search_offers", search(1000), allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        request = await world.request_of("agent-late")
        await world.answer(request, "BA", "700.00")
        await world.answer(request, "AA", "650.00")
        await asyncio.sleep(1.5)  # past the agent's deadline, well within the long one
        partial = await get_task(agent.session, created.task_id)
        assert partial.status == "completed", partial
        assert partial.result is not None
        assert partial.result["_meta"]["jetbridge/final"] is False
        assert airlines_of(partial.result["structuredContent"]) == {"BA": "ok", "AA": "ok", "VS": "pending"}
        await world.answer(request, "VS", "300.00")  # the late airline, cheapest of all
        done = await asyncio.wait_for(wait_for_task(agent.session, created.task_id, poll_ms=100), 20)
    assert done.result is not None
    result = done.result["structuredContent"]
    assert airlines_of(result) == dict.fromkeys(AIRLINES, "ok")
    assert result["offers"][0]["airline"] == "VS", "its offer is merged and ranked first"
    assert result["status"] == "complete"


async def test_a_tasks_result_survives_its_bridge_being_killed(world: World) -> None:
    first = BridgeProcess(world.space, world.home, "bridge-dies")
    second = BridgeProcess(world.space, world.home, "bridge-after")
    await first.start()
    try:
        async with world.agent("agent-restart", url=first.url) as agent:
            created = await agent.session.call_tool("search_offers", search(2000), allow_claimed=True)
            assert isinstance(created, CreateTaskResult)
            request = await world.request_of("agent-restart")
            for _ in range(100):  # its record names the backbone request before the bridge dies
                if ((await get_task(agent.session, created.task_id)).status_message or "").startswith("searching"):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the task never named its search")
        first.kill()
        for code in AIRLINES:  # the aggregator's reply now goes to a bridge that is gone
            await world.answer(request, code)
        await second.start()
        async with world.agent("agent-restart", url=second.url) as agent:
            done = await asyncio.wait_for(wait_for_task(agent.session, created.task_id, poll_ms=200), 30)
    finally:
        first.kill()
        second.stop()
    assert done.status == "completed"
    assert done.result is not None
    assert airlines_of(done.result["structuredContent"]) == dict.fromkeys(AIRLINES, "ok")


async def test_a_2025_11_25_client_still_gets_a_plain_result(world: World) -> None:
    async with world.agent("agent-legacy", mode="legacy") as agent:
        call = asyncio.create_task(agent.session.call_tool("search_offers", search(), allow_claimed=True))
        request = await world.request_of("agent-legacy")
        for code in AIRLINES:
            await world.answer(request, code)
        result = await asyncio.wait_for(call, 20)
    assert isinstance(result, CallToolResult)
    assert result.structured_content is not None
    assert airlines_of(result.structured_content) == dict.fromkeys(AIRLINES, "ok")


async def test_another_clients_task_is_not_found_and_cancel_cancels(world: World) -> None:
    async with world.agent("agent-owner") as owner, world.agent("agent-other") as other:
        created = await owner.session.call_tool("search_offers", search(3000), allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        request = await world.request_of("agent-owner")
        with pytest.raises(MCPError) as refused:
            await get_task(other.session, created.task_id)
        assert refused.value.error.code == -32602
        assert "not found" in refused.value.error.message
        await cancel_task(owner.session, created.task_id)
        cancelled = await get_task(owner.session, created.task_id)
        assert cancelled.status == "cancelled"
        for code in AIRLINES:  # answers after the cancellation change nothing
            await world.answer(request, code)
        await asyncio.sleep(1.0)
        still = await get_task(owner.session, created.task_id)
    assert still.status == "cancelled"
    assert still.result is None
