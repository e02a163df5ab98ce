"""MCP tasks (io.modelcontextprotocol/tasks, SEP-2663) at the bridge, without a broker: the task state machine, the
wire shapes, the extension driven by the SDK's own client in memory (2026-07-28 and 2025-11-25), scoping, TTL,
cancellation, recovery of a task another instance left, and every state change written as a record."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from mcp import Client
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolRequestParams, CallToolResult, TextContent

from jetbridge.errors import KafkaError
from jetbridge.kafka import Delivery
from mcp_bridge.task_client import CreateTaskResult, TasksClient, cancel_task, get_task
from mcp_bridge.tasks import (
    TASKS_EXTENSION,
    TaskHandle,
    TaskLog,
    TasksExtension,
    accepts,
    created_wire,
    task_wire,
)
from schemas.codec import AvroCodec
from schemas.models import TaskState, TaskStatus, now_utc
from schemas.registry import SchemaRegistryClient
from tests.support.registry_double import RegistryDouble

TOPIC = "t.jb.tasks.v1"
MODERN = "2026-07-28"


class Producer:
    """Takes every record as the broker would, or refuses them all (``down``)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes]] = []
        self.down = False

    async def send(self, topic: str, *, key: str, value: bytes, headers: Any = None) -> Delivery:
        if self.down:
            raise KafkaError(f"produce to {topic} failed: broker down")
        self.sent.append((topic, key, value))
        return Delivery(topic, 0, len(self.sent) - 1)


class Tool:
    """A TaskTool around a test tool: records what surrounded each call, resumes with a fixed result."""

    def __init__(self) -> None:
        self.calls: list[bool] = []  # True: ran as a task
        self.resumed: list[str] = []

    def deferrable(self, params: CallToolRequestParams) -> bool:
        return (params.arguments or {}).get("x") != -1

    @contextlib.asynccontextmanager
    async def running(self, ctx: ServerRequestContext[Any, Any], task: TaskHandle | None) -> AsyncIterator[None]:
        self.calls.append(task is not None)
        yield

    def changing_until(self, created_at: datetime) -> datetime:
        return created_at + timedelta(seconds=5)

    async def resume(self, state: TaskState) -> CallToolResult:
        self.resumed.append(state.task_id)
        return CallToolResult(content=[TextContent(type="text", text="resumed")])


class Harness:
    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        self.producer = Producer()
        self.log = TaskLog(TOPIC, codec, self.producer, {"bootstrap.servers": "127.0.0.1:9"}, "bridge-a")  # type: ignore[arg-type]  # a stand-in producer
        self.tool = Tool()
        self.extension = TasksExtension(self.log, {"slow": self.tool})
        self.server = MCPServer("tasks-test", extensions=[self.extension])
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

        @self.server.tool()
        async def slow(ctx: Context, x: int) -> str:
            self.started.set()
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            if x == 13:
                raise MCPError(code=-32050, message="unlucky")
            return f"done {x}"

    def client(self, mode: str = MODERN, *, tasks: bool = True) -> Client:
        return Client(self.server, mode=mode, extensions=[TasksClient()] if tasks else None)

    async def records(self) -> list[TaskState]:
        return [await self.codec.decode(value, TaskState) for _, _, value in self.producer.sent]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    double = RegistryDouble()
    async with double.client() as http:
        codec = AvroCodec(SchemaRegistryClient("http://registry.test", http))
        await codec.register(TOPIC, TaskState)
        made = Harness(codec)
        try:
            yield made
        finally:
            await made.extension.close()


def state(status: TaskStatus = TaskStatus.WORKING, **overrides: Any) -> TaskState:
    now = now_utc()
    values: dict[str, Any] = {
        "task_id": "t1",
        "client_id": "agent-1",
        "tool": "slow",
        "status": status,
        "created_at": now,
        "updated_at": now,
        "ttl_ms": 60_000,
        "poll_interval_ms": 1000,
        "instance": "bridge-a",
    }
    return TaskState(**(values | overrides))


async def settled(harness: Harness, task_id: str, timeout_s: float = 5.0) -> TaskState:
    async with asyncio.timeout(timeout_s):
        while True:
            current = harness.log.get(task_id)
            if current is not None and current.status is not TaskStatus.WORKING:
                return current
            await asyncio.sleep(0.01)


# ---- the state machine and the wire ----


def test_a_working_task_takes_any_later_state() -> None:
    old = state()
    later = old.updated_at + timedelta(milliseconds=5)
    for status in TaskStatus:
        assert accepts(old, state(status, updated_at=later)), status


def test_failed_cancelled_and_final_completed_tasks_never_change() -> None:
    later = now_utc() + timedelta(seconds=1)
    for old in (state(TaskStatus.FAILED), state(TaskStatus.CANCELLED), state(TaskStatus.COMPLETED, result="{}")):
        for status in TaskStatus:
            assert not accepts(old, state(status, updated_at=later, result="{}")), (old.status, status)


def test_a_partial_result_is_replaced_by_a_later_one_but_never_goes_back_to_working() -> None:
    partial = state(TaskStatus.COMPLETED, result='{"n":1}', final=False)
    later = partial.updated_at + timedelta(milliseconds=5)
    assert accepts(partial, state(TaskStatus.COMPLETED, result='{"n":2}', final=False, updated_at=later))
    assert accepts(partial, state(TaskStatus.COMPLETED, result='{"n":3}', updated_at=later))
    assert not accepts(partial, state(TaskStatus.WORKING, updated_at=later))


def test_an_older_record_read_back_does_not_undo_a_newer_one_but_a_cancellation_always_lands() -> None:
    newer = state(TaskStatus.COMPLETED, result="{}", final=False)
    older = state(TaskStatus.COMPLETED, result="{}", final=False, updated_at=newer.updated_at - timedelta(seconds=1))
    assert not accepts(newer, older)
    skewed_cancel = state(TaskStatus.CANCELLED, updated_at=newer.updated_at - timedelta(seconds=10))
    assert accepts(state(), skewed_cancel)


def test_wire_shapes_follow_sep_2663() -> None:
    created = now_utc()
    working = state(created_at=created, updated_at=created, status_message="started")
    body = created_wire(working)
    assert body["resultType"] == "task"
    assert body["status"] == "working"
    assert body["ttlMs"] == 60_000
    assert body["pollIntervalMs"] == 1000
    assert body["createdAt"].endswith("Z")
    assert body["statusMessage"] == "started"
    assert not {"result", "error", "inputRequests"} & set(body)
    result = {"content": [{"type": "text", "text": "hi"}], "isError": False}
    completed = task_wire(state(TaskStatus.COMPLETED, result=json.dumps(result)))
    assert completed["status"] == "completed"
    assert completed["result"] == result
    failed = task_wire(state(TaskStatus.FAILED, error=json.dumps({"code": -32603, "message": "boom"})))
    assert failed["error"] == {"code": -32603, "message": "boom"}
    assert "result" not in failed
    assert task_wire(state(TaskStatus.CANCELLED))["status"] == "cancelled"
    assert task_wire(state(ttl_ms=None))["ttlMs"] is None


# ---- through the SDK's client, in memory ----


async def test_a_client_declaring_tasks_gets_a_task_at_once_and_its_result_later(harness: Harness) -> None:
    async with harness.client() as client:
        created = await client.session.call_tool("slow", {"x": 7}, allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        assert created.status == "working"
        await harness.started.wait()
        polled = await get_task(client.session, created.task_id)
        assert polled.status == "working"
        assert polled.result is None
        harness.gate.set()
        await settled(harness, created.task_id)
        done = await get_task(client.session, created.task_id)
    assert done.status == "completed"
    assert done.result is not None
    assert done.result["structuredContent"] == {"result": "done 7"}
    assert harness.tool.calls == [True]
    statuses = [r.status for r in await harness.records()]
    assert statuses == [TaskStatus.WORKING, TaskStatus.COMPLETED], "created, then completed: each one record"


async def test_the_sdk_client_with_the_extension_gets_the_tool_result_transparently(harness: Harness) -> None:
    harness.gate.set()
    async with harness.client() as client:
        result = await client.call_tool("slow", {"x": 3})
    assert result.structured_content == {"result": "done 3"}
    assert harness.tool.calls == [True], "it ran as a task, polled to its end by TasksClient"


async def test_clients_without_the_extension_and_legacy_clients_get_a_plain_result(harness: Harness) -> None:
    harness.gate.set()
    async with harness.client(tasks=False) as client:
        modern = await client.call_tool("slow", {"x": 1})
    async with harness.client("legacy") as client:
        legacy = await client.call_tool("slow", {"x": 2})
        with pytest.raises(MCPError) as refused:
            await get_task(client.session, "any")
    assert modern.structured_content == {"result": "done 1"}
    assert legacy.structured_content == {"result": "done 2"}
    assert refused.value.error.code == -32601, "tasks/* do not exist before 2026-07-28"
    assert harness.tool.calls == [False, False]
    assert harness.producer.sent == [], "no task was made"


async def test_a_call_the_tool_will_refuse_is_answered_at_once_not_as_a_task(harness: Harness) -> None:
    harness.gate.set()
    async with harness.client() as client:
        result = await client.session.call_tool("slow", {"x": -1}, allow_claimed=True)
    assert isinstance(result, CallToolResult)
    assert harness.producer.sent == []


async def test_tasks_get_needs_the_extension_declared(harness: Harness) -> None:
    async with harness.client(tasks=False) as client:
        with pytest.raises(MCPError) as refused:
            await get_task(client.session, "any")
    assert refused.value.error.code == -32021
    assert TASKS_EXTENSION in json.dumps(refused.value.error.data)


async def test_another_clients_task_and_an_unknown_one_are_not_found(harness: Harness) -> None:
    harness.log.apply(state(task_id="theirs", client_id="someone-else"))
    async with harness.client() as client:
        for task_id in ("theirs", "never-made"):
            with pytest.raises(MCPError) as refused:
                await get_task(client.session, task_id)
            assert refused.value.error.code == -32602
            assert refused.value.error.message == "Failed to retrieve task: Task not found"
        with pytest.raises(MCPError):
            await cancel_task(client.session, "theirs")
    assert harness.log.get("theirs") is not None
    assert harness.log.get("theirs").status is TaskStatus.WORKING  # type: ignore[union-attr]  # just checked


async def test_a_task_past_its_ttl_has_expired_and_is_forgotten_later(harness: Harness) -> None:
    old = now_utc() - timedelta(hours=3)
    harness.log.apply(state(task_id="old", client_id="anonymous", created_at=old, updated_at=old, ttl_ms=60_000))
    async with harness.client() as client:
        with pytest.raises(MCPError) as refused:
            await get_task(client.session, "old")
    assert refused.value.error.message == "Failed to retrieve task: Task has expired"
    assert harness.log.purge(now_utc()) == 1
    assert harness.log.get("old") is None


async def test_cancel_stops_the_running_tool_and_the_task_says_cancelled(harness: Harness) -> None:
    async with harness.client() as client:
        created = await client.session.call_tool("slow", {"x": 1}, allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        await harness.started.wait()
        await cancel_task(client.session, created.task_id)
        await asyncio.wait_for(harness.cancelled.wait(), 5)
        polled = await get_task(client.session, created.task_id)
    assert polled.status == "cancelled"
    assert harness.extension.running == 0
    assert [r.status for r in await harness.records()] == [TaskStatus.WORKING, TaskStatus.CANCELLED]


async def test_cancelling_a_task_showing_a_partial_result_keeps_it_and_ends_it(harness: Harness) -> None:
    harness.log.apply(state(TaskStatus.COMPLETED, client_id="anonymous", result='{"content":[]}', final=False))
    async with harness.client() as client:
        await cancel_task(client.session, "t1")
        polled = await get_task(client.session, "t1")
    assert polled.status == "completed"
    assert polled.result == {"content": []}
    assert harness.log.get("t1").final  # type: ignore[union-attr]  # it exists


async def test_a_json_rpc_error_in_the_tool_fails_the_task_with_that_error(harness: Harness) -> None:
    harness.gate.set()
    async with harness.client() as client:
        created = await client.session.call_tool("slow", {"x": 13}, allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        await settled(harness, created.task_id)
        polled = await get_task(client.session, created.task_id)
    assert polled.status == "failed"
    assert polled.error == {"code": -32050, "message": "unlucky"}


async def test_without_a_broker_no_task_is_promised_and_the_call_is_answered_synchronously(harness: Harness) -> None:
    harness.producer.down = True
    harness.gate.set()
    async with harness.client() as client:
        result = await client.session.call_tool("slow", {"x": 4}, allow_claimed=True)
    assert isinstance(result, CallToolResult)
    assert result.structured_content == {"result": "done 4"}


async def test_tasks_another_instance_left_unsettled_are_finished_here_at_start(harness: Harness) -> None:
    harness.log.apply(state(task_id="left", client_id="anonymous", instance="bridge-gone"))
    harness.log.apply(state(task_id="done", client_id="anonymous", instance="bridge-gone", status=TaskStatus.FAILED))
    await harness.extension.start()
    finished = await settled(harness, "left")
    assert finished.status is TaskStatus.COMPLETED
    assert json.loads(finished.result or "{}")["content"][0]["text"] == "resumed"
    assert harness.tool.resumed == ["left"], "a settled task is left as it is"


async def test_a_task_whose_instance_missed_its_time_is_adopted_by_the_sweep(harness: Harness) -> None:
    past = now_utc() - timedelta(seconds=30)
    mine = state(task_id="mine", instance="bridge-a", changing_until=past, created_at=past, updated_at=past)
    harness.log.apply(mine)
    fresh = state(task_id="fresh", instance="bridge-a", changing_until=now_utc() + timedelta(minutes=1))
    harness.log.apply(fresh)
    assert harness.extension._adopt(harness.log.all(), now_utc(), at_start=False) == 1
    assert (await settled(harness, "mine")).status is TaskStatus.COMPLETED
    assert harness.tool.resumed == ["mine"]
