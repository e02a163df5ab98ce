"""The client side of MCP tasks (``io.modelcontextprotocol/tasks``, SEP-2663) for the SDK's `mcp.Client`.

``Client(..., extensions=[TasksClient()])`` declares the extension on every 2026-era request; a ``tools/call``
answered with a task is then polled (``tasks/get``, at the task's ``pollIntervalMs``) until it settles, and
``call_tool`` returns the tool's result as if it had come at once. To hold the task handle instead (an agent
that polls later, or from another process), call ``client.session.call_tool(..., allow_claimed=True)``: it
returns a `CreateTaskResult`; then `get_task` and `cancel_task`. The SDK has no tasks client of its own (mcp 2.3.0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import anyio
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, ErrorData, Request, RequestParams, Result
from mcp_types.jsonrpc import INTERNAL_ERROR
from pydantic import Field

__all__ = [
    "CancelTaskRequest",
    "CreateTaskResult",
    "DetailedTask",
    "GetTaskRequest",
    "TaskRef",
    "TasksClient",
    "cancel_task",
    "get_task",
    "wait_for_task",
]

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
SETTLED = ("completed", "failed", "cancelled")


class TaskRef(RequestParams):
    task_id: str = Field(alias="taskId")


class GetTaskRequest(Request[TaskRef, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    name_param = "taskId"  # SEP-2663: Mcp-Name carries the task id, so a load balancer can route on it


class CancelTaskRequest(Request[TaskRef, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    name_param = "taskId"


class _Task(Result):
    task_id: str = Field(alias="taskId")
    status: Literal["working", "input_required", "completed", "failed", "cancelled"]
    status_message: str | None = Field(default=None, alias="statusMessage")
    created_at: str = Field(alias="createdAt")
    last_updated_at: str = Field(alias="lastUpdatedAt")
    ttl_ms: int | None = Field(alias="ttlMs")
    poll_interval_ms: int | None = Field(default=None, alias="pollIntervalMs")


class CreateTaskResult(_Task):
    """A ``tools/call`` answered with a task (``resultType: "task"``)."""

    result_type: Literal["task"] = Field(default="task", alias="resultType")


class DetailedTask(_Task):
    """What ``tasks/get`` answers: the task and, per status, its result or error."""

    result_type: Literal["complete"] = Field(default="complete", alias="resultType")
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class _Ack(Result):
    result_type: str | None = Field(default=None, alias="resultType")


async def get_task(session: ClientSession, task_id: str) -> DetailedTask:
    return await session.send_request(GetTaskRequest(params=TaskRef(taskId=task_id)), DetailedTask)


async def cancel_task(session: ClientSession, task_id: str) -> None:
    await session.send_request(CancelTaskRequest(params=TaskRef(taskId=task_id)), _Ack)


async def wait_for_task(session: ClientSession, task_id: str, *, poll_ms: int | None = None) -> DetailedTask:
    """Poll the task until it settles (a partial result that may still change counts as not settled)."""
    while True:
        task = await get_task(session, task_id)
        final = (task.result or {}).get("_meta", {}).get("jetbridge/final", True)
        if task.status in SETTLED and final:
            return task
        await anyio.sleep((poll_ms or task.poll_interval_ms or 1000) / 1000)


class TasksClient(ClientExtension):
    """Declares the tasks extension and finishes a task-answered ``tools/call`` by polling it."""

    identifier = TASKS_EXTENSION

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return (ResultClaim(result_type="task", model=CreateTaskResult, resolve=self._resolve),)

    async def _resolve(self, created: CreateTaskResult, ctx: ClaimContext) -> CallToolResult:
        while True:
            task = await get_task(ctx.session, created.task_id)
            if task.status == "completed" and task.result is not None:
                return CallToolResult.model_validate(task.result)
            if task.status == "failed":
                error = task.error or {"code": INTERNAL_ERROR, "message": task.status_message or "task failed"}
                raise MCPError.from_error_data(ErrorData.model_validate(error))
            if task.status == "cancelled":
                raise MCPError(code=INTERNAL_ERROR, message=f"task {created.task_id} was cancelled")
            await anyio.sleep((task.poll_interval_ms or created.poll_interval_ms or 1000) / 1000)
