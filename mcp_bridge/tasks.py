"""MCP tasks at the bridge: the ``io.modelcontextprotocol/tasks`` extension (SEP-2663, spec 2026-07-28).

A client that declares the extension in a request's capabilities may get, for a tool that opted in, a task
handle at once instead of the tool's result (``resultType: "task"``); the tool runs in the background and the
client polls ``tasks/get`` until the task is ``completed`` (the tool's ``CallToolResult`` inlined), ``failed``
(a JSON-RPC error) or ``cancelled`` (``tasks/cancel``). Clients that do not declare it, and every client on a
handshake-era protocol (2025-11-25 and before), get the tool's result as always.

Task state is not one process's memory: every change is a record on ``jb.tasks.v1`` (compacted, key = task id,
`TaskState`), written before it is shown, and every bridge instance reads the topic whole at start and follows it
(`TaskLog`, the pattern of `jetbridge.health_board`). So any instance answers ``tasks/get`` and a task's result
survives a restart; a task whose instance died is finished by another (`TaskTool.resume`).

The state machine (`accepts`): ``working`` and ``input_required`` may become anything; ``failed`` and ``cancelled``
are final; ``completed`` is final unless its record says ``final = false``: a result that later answers may still
replace (a search whose airlines answer after the agent's deadline), until ``changing_until``.

Tasks are their caller's own: the client id (`mcp_bridge.boundary.client_id`) is the scope; another client is told
the task does not exist. Task ids are 128 random bits. A task is kept for ``TASK_TTL_MS`` after its creation.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver.server import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolRequestParams, CallToolResult, InputRequiredResult, RequestParams
from mcp_types.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

from jetbridge.errors import JetbridgeError
from jetbridge.kafka import AsyncConsumer, AsyncProducer, read_whole_and_follow
from jetbridge.log import get_logger
from mcp_bridge.boundary import client_id
from schemas.codec import AvroCodec
from schemas.models import TaskState, TaskStatus, now_utc

__all__ = [
    "POLL_INTERVAL_MS",
    "TASKS_EXTENSION",
    "TASK_TTL_MS",
    "TaskHandle",
    "TaskLog",
    "TaskParams",
    "TaskTool",
    "TasksExtension",
    "UpdateTaskParams",
    "accepts",
    "caller_of",
    "created_wire",
    "current_task",
    "declared_tasks",
    "task_wire",
    "tool_result_json",
]

log = get_logger(__name__)

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
# How long a task is kept after its creation (its result stays readable that long): an hour.
TASK_TTL_MS = 3_600_000
# How often a client should poll a task.
POLL_INTERVAL_MS = 1_000
# How often an instance looks for tasks whose own instance stopped before finishing them.
SWEEP_S = 5.0
# Past a task's changing_until, how long its own instance still has to finish it before another one does.
ADOPT_AFTER = timedelta(seconds=3)
_FINAL = (TaskStatus.FAILED, TaskStatus.CANCELLED)

_current: contextvars.ContextVar[TaskHandle | None] = contextvars.ContextVar("jetbridge_task", default=None)


def current_task() -> TaskHandle | None:
    """The task the running tool call is, if it runs as one (set for the tool's whole background run)."""
    return _current.get()


class TaskParams(RequestParams):
    """``tasks/get`` and ``tasks/cancel``: the task's id."""

    task_id: str = Field(alias="taskId")


class UpdateTaskParams(TaskParams):
    """``tasks/update``: responses to the task's outstanding ``inputRequests``."""

    input_responses: dict[str, Any] = Field(default_factory=dict, alias="inputResponses")


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def task_wire(state: TaskState) -> dict[str, Any]:
    """The SEP-2663 ``DetailedTask`` of a state: the ``Task`` fields and, per status, result, error or inputRequests."""
    body: dict[str, Any] = {
        "taskId": state.task_id,
        "status": state.status.value.lower(),
        "createdAt": _iso(state.created_at),
        "lastUpdatedAt": _iso(state.updated_at),
        "ttlMs": state.ttl_ms,
        "pollIntervalMs": state.poll_interval_ms,
    }
    if state.status_message is not None:
        body["statusMessage"] = state.status_message
    if state.status is TaskStatus.COMPLETED and state.result is not None:
        body["result"] = json.loads(state.result)
    elif state.status is TaskStatus.FAILED and state.error is not None:
        body["error"] = json.loads(state.error)
    elif state.status is TaskStatus.INPUT_REQUIRED and state.input_requests is not None:
        body["inputRequests"] = json.loads(state.input_requests)
    return body


def created_wire(state: TaskState) -> dict[str, Any]:
    """The ``CreateTaskResult`` answering a ``tools/call``: the task without result, error or inputRequests."""
    body = {k: v for k, v in task_wire(state).items() if k not in ("result", "error", "inputRequests")}
    return {"resultType": "task", **body}


def tool_result_json(result: CallToolResult) -> str:
    return json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":"))


def accepts(old: TaskState | None, new: TaskState) -> bool:
    """Whether ``new`` replaces ``old`` (records of one task, in the order they were read or written)."""
    if old is None:
        return True
    if old.status in _FINAL or (old.status is TaskStatus.COMPLETED and old.final):
        return False
    if new.status in _FINAL:
        return True  # a cancellation wins over the running instance's clock
    if old.status is TaskStatus.COMPLETED and new.status is not TaskStatus.COMPLETED:
        return False  # a result already shown never goes back to working
    return new.updated_at >= old.updated_at  # an older record read back after a newer one was applied


def is_settled(state: TaskState) -> bool:
    """Nothing will change it any more."""
    return state.status in _FINAL or (state.status is TaskStatus.COMPLETED and state.final)


def expired(state: TaskState, now: datetime) -> bool:
    return state.ttl_ms is not None and now >= state.created_at + timedelta(milliseconds=state.ttl_ms)


def caller_of(ctx: ServerRequestContext[Any, Any]) -> str:
    """Who sent this request (its HTTP request's client, `mcp_bridge.boundary.client_id`); in memory, anonymous."""
    scope = getattr(ctx.request, "scope", None)
    return client_id(scope) if isinstance(scope, dict) else "anonymous"


def declared_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request may be answered with a task: a 2026-era request declaring the extension."""
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return False
    capabilities = ctx.session.client_capabilities
    return bool(capabilities is not None and capabilities.extensions and TASKS_EXTENSION in capabilities.extensions)


Listener = Callable[[TaskState], None]


class TaskLog:
    """Every task's latest state, from ``jb.tasks.v1`` (read whole at start, then followed), and its writer.

    ``write`` returns once the broker acknowledged the record and this instance shows it: a task is durable
    before its handle is given out (SEP-2663: ``tasks/get`` must resolve as soon as the handle is returned).
    """

    def __init__(
        self, topic: str, codec: AvroCodec, producer: AsyncProducer, consumer_config: dict[str, Any], instance_id: str
    ) -> None:
        self.topic = topic
        self.instance_id = instance_id
        self._codec = codec
        self._producer = producer
        self._consumer = AsyncConsumer(
            consumer_config
            | {
                "group.id": f"jb.tasks.{instance_id}",  # required by librdkafka; never joined or committed
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 200,
            }
        )
        self._latest: dict[str, TaskState] = {}
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self.caught_up = asyncio.Event()

    def listen(self, listener: Listener) -> None:
        """``listener`` is called with every state this log takes (read or written)."""
        self._listeners.append(listener)

    async def start(self, catch_up_s: float = 10.0) -> None:
        """Read the topic to its end (up to ``catch_up_s``), then follow it in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"task-log-{self.topic}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.caught_up.wait(), catch_up_s)
        if not self.caught_up.is_set():
            log.warning("task topic not read to its end yet; going on", topic=self.topic, waited_s=catch_up_s)

    def get(self, task_id: str) -> TaskState | None:
        return self._latest.get(task_id)

    def all(self) -> list[TaskState]:
        return list(self._latest.values())

    async def write(self, state: TaskState) -> TaskState:
        """Publish ``state`` and apply it here; raises `JetbridgeError` when the broker did not take it."""
        value = self._codec.encode(self.topic, state)
        headers = [("task_id", state.task_id.encode()), ("client_id", state.client_id.encode())]
        await self._producer.send(self.topic, key=state.task_id, value=value, headers=headers)
        self.apply(state)
        return self._latest.get(state.task_id, state)

    def apply(self, state: TaskState) -> bool:
        if not accepts(self._latest.get(state.task_id), state):
            return False
        self._latest[state.task_id] = state
        for listener in self._listeners:
            try:
                listener(state)
            except Exception as exc:  # noqa: BLE001 - one listener's bug must not stop the log
                log.error("task listener failed", task_id=state.task_id, error=repr(exc))
        return True

    def purge(self, now: datetime, keep: timedelta = timedelta(hours=1)) -> int:
        """Forget tasks expired for longer than ``keep`` (until then tasks/get says they expired)."""
        gone = [
            t
            for t, s in self._latest.items()
            if s.ttl_ms is not None and now >= s.created_at + timedelta(milliseconds=s.ttl_ms) + keep
        ]
        for task_id in gone:
            del self._latest[task_id]
        return len(gone)

    async def _run(self) -> None:
        def done() -> None:
            log.info("task topic read", topic=self.topic, tasks=len(self._latest))

        await read_whole_and_follow(
            self._consumer, self.topic, self._read, self.caught_up, what="task", batch=500, on_caught_up=done
        )

    async def _read(self, value: bytes | None) -> None:
        if value is None:
            return  # a tombstone; tasks are forgotten by their TTL, never by deletion
        try:
            state = await self._codec.decode(value, TaskState)
        except JetbridgeError as exc:
            log.warning("undecodable task record skipped", error=exc.message)
            return
        self.apply(state)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.close()


class TaskHandle:
    """One task as the tool running it sees it: what it may say while it runs. Writes are in order, each after
    the previous one was acknowledged, and never after the task settled."""

    def __init__(self, task_log: TaskLog, state: TaskState) -> None:
        self._log = task_log
        self._lock = asyncio.Lock()
        self.task_id = state.task_id
        self.client_id = state.client_id
        self.created_at = state.created_at

    @property
    def state(self) -> TaskState | None:
        return self._log.get(self.task_id)

    async def update(self, **changes: Any) -> TaskState | None:
        """Write the task's current state with ``changes`` (TaskState fields); None once it settled."""
        async with self._lock:
            current = self._log.get(self.task_id)
            if current is None or is_settled(current):
                return None
            now = now_utc()
            updated_at = max(now, current.updated_at + timedelta(milliseconds=1))
            state = current.model_copy(update={"updated_at": updated_at, "instance": self._log.instance_id, **changes})
            return await self._log.write(TaskState.model_validate(state.model_dump()))

    async def working(self, message: str | None = None, **changes: Any) -> TaskState | None:
        return await self.update(status=TaskStatus.WORKING, status_message=message, **changes)

    async def partial(self, result: CallToolResult, message: str, *, until: datetime) -> TaskState | None:
        """Show ``result`` as the task's result now, one that may still be replaced until ``until``."""
        return await self.update(
            status=TaskStatus.COMPLETED,
            status_message=message,
            result=tool_result_json(result),
            final=False,
            changing_until=until,
        )

    async def complete(self, result: CallToolResult, message: str | None = None) -> TaskState | None:
        return await self.update(
            status=TaskStatus.COMPLETED, status_message=message, result=tool_result_json(result), final=True
        )

    async def fail(self, code: int, message: str) -> TaskState | None:
        error = json.dumps({"code": code, "message": message}, separators=(",", ":"))
        return await self.update(status=TaskStatus.FAILED, status_message=message, error=error)


class TaskTool(Protocol):
    """What a tool implements to run as a task (a tool opts in by being given to `TasksExtension`)."""

    def deferrable(self, params: CallToolRequestParams) -> bool:
        """Whether this call may run as a task (False: answered synchronously, e.g. arguments it will refuse, or a
        call that must first ask the person something: its input-required rounds come before any task)."""
        ...

    def running(
        self, ctx: ServerRequestContext[Any, Any], task: TaskHandle | None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """What surrounds one call of the tool: ``task`` is None for a synchronous call."""
        ...

    def changing_until(self, created_at: datetime) -> datetime:
        """By when a task of this tool is settled at the latest (past it, another instance may finish it)."""
        ...

    async def resume(self, state: TaskState) -> CallToolResult:
        """Finish a task whose instance stopped before it settled (on another instance, or after a restart)."""
        ...


class TasksExtension(Extension):
    """``io.modelcontextprotocol/tasks`` on the SDK's Extension API: ``tools/call`` intercepted for the tools
    that opted in, and ``tasks/get``, ``tasks/update``, ``tasks/cancel`` (2026-07-28 requests only)."""

    identifier = TASKS_EXTENSION

    def __init__(
        self,
        task_log: TaskLog,
        tools: Mapping[str, TaskTool],
        *,
        ttl_ms: int = TASK_TTL_MS,
        poll_interval_ms: int = POLL_INTERVAL_MS,
    ) -> None:
        self.log = task_log
        self.task_tools = dict(tools)
        self.ttl_ms = ttl_ms
        self.poll_interval_ms = poll_interval_ms
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        task_log.listen(self._on_state)

    # ---- the extension's surface ----
    def methods(self) -> Sequence[MethodBinding]:
        versions = frozenset(MODERN_PROTOCOL_VERSIONS)
        return (
            MethodBinding("tasks/get", TaskParams, self._get, protocol_versions=versions),
            MethodBinding("tasks/update", UpdateTaskParams, self._update, protocol_versions=versions),
            MethodBinding("tasks/cancel", TaskParams, self._cancel, protocol_versions=versions),
        )

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        tool = self.task_tools.get(params.name)
        if tool is None:
            return await call_next(ctx)
        if not declared_tasks(ctx) or not tool.deferrable(params):
            async with tool.running(ctx, None):
                return await call_next(ctx)
        now = now_utc()
        state = TaskState(
            task_id=secrets.token_hex(16),
            client_id=caller_of(ctx),
            tool=params.name,
            status=TaskStatus.WORKING,
            status_message="started",
            created_at=now,
            updated_at=now,
            ttl_ms=self.ttl_ms,
            poll_interval_ms=self.poll_interval_ms,
            changing_until=tool.changing_until(now),
            instance=self.log.instance_id,
        )
        try:
            state = await self.log.write(state)
        except JetbridgeError as exc:
            # No durable task, no handle: the call is answered as if tasks were not offered.
            log.warning("task not created; answering synchronously", tool=params.name, error=str(exc))
            async with tool.running(ctx, None):
                return await call_next(ctx)
        handle = TaskHandle(self.log, state)
        self._start(state.task_id, self._run(tool, handle, ctx, call_next))
        log.info("task created", task_id=state.task_id, tool=params.name, client_id=state.client_id)
        return created_wire(state)

    async def _run(
        self, tool: TaskTool, handle: TaskHandle, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> None:
        _current.set(handle)
        try:
            async with tool.running(ctx, handle):
                result = await call_next(ctx)
        except MCPError as exc:
            await self._settle(handle.fail(exc.error.code, exc.error.message))
            return
        except asyncio.CancelledError:
            raise  # cancelled (the state says why) or the bridge is stopping (another instance finishes it)
        except Exception as exc:  # a task must settle whatever went wrong
            log.exception("task failed", task_id=handle.task_id)
            await self._settle(handle.fail(INTERNAL_ERROR, f"the tool failed: {type(exc).__name__}"))
            return
        if isinstance(result, CallToolResult):
            await self._settle(handle.complete(result))
        elif isinstance(result, InputRequiredResult):
            # Elicitation inside a task (input_required, tasks/update) is not offered yet: see the module docs.
            await self._settle(handle.fail(INTERNAL_ERROR, "the tool asked for input, which its task cannot relay"))
        else:
            await self._settle(handle.fail(INTERNAL_ERROR, "the tool returned no tool result"))

    async def _settle(self, write: Any) -> None:
        try:
            await write
        except JetbridgeError as exc:
            log.error("task state not written; another instance will settle it", error=str(exc))

    def _start(self, task_id: str, work: Any) -> None:
        job: asyncio.Task[None] = asyncio.create_task(work, name=f"task-{task_id[:8]}")
        self._jobs[task_id] = job
        job.add_done_callback(lambda _: self._jobs.pop(task_id, None))

    def _on_state(self, state: TaskState) -> None:
        # Settled, here or elsewhere (its own last write, a cancellation from any instance, a recovery that finished
        # it): nothing more to do for it. A job cancelled by its own last write has nothing left to run anyway.
        job = self._jobs.get(state.task_id)
        if job is not None and is_settled(state):
            job.cancel()

    # ---- tasks/get, tasks/update, tasks/cancel ----
    def _owned(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> TaskState:
        require_client_extension(ctx, TASKS_EXTENSION)
        state = self.log.get(task_id)
        # Another client's task is reported exactly like one that does not exist.
        if state is None or state.client_id != caller_of(ctx):
            raise MCPError(code=INVALID_PARAMS, message="Failed to retrieve task: Task not found")
        if expired(state, now_utc()):
            raise MCPError(code=INVALID_PARAMS, message="Failed to retrieve task: Task has expired")
        return state

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> HandlerResult:
        return {"resultType": "complete", **task_wire(self._owned(ctx, params.task_id))}

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams) -> HandlerResult:
        self._owned(ctx, params.task_id)
        # No tool asks for input inside a task yet, so no key is outstanding: responses are ignored (SEP-2663).
        return {"resultType": "complete"}

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> HandlerResult:
        state = self._owned(ctx, params.task_id)
        if is_settled(state):
            return {"resultType": "complete"}  # too late: it ends as it ended (cancellation is cooperative)
        handle = TaskHandle(self.log, state)
        try:
            if state.status is TaskStatus.COMPLETED:
                # A result was shown: it stays, and nothing replaces it any more.
                await handle.update(final=True, status_message="cancelled: later answers are no longer added")
            else:
                await handle.update(status=TaskStatus.CANCELLED, status_message="cancelled by the client")
        except JetbridgeError as exc:
            raise MCPError(code=INTERNAL_ERROR, message="the cancellation could not be recorded; try again") from exc
        log.info("task cancelled", task_id=state.task_id, client_id=state.client_id)
        return {"resultType": "complete"}

    # ---- tasks whose instance stopped ----
    async def start(self) -> None:
        """Finish the tasks other instances left unsettled, then keep looking for such tasks."""
        self._adopt(self.log.all(), now_utc(), at_start=True)
        self._sweeper = asyncio.create_task(self._sweep(), name="task-sweeper")

    def _adopt(self, states: list[TaskState], now: datetime, *, at_start: bool) -> int:
        adopted = 0
        for state in states:
            if is_settled(state) or expired(state, now) or state.task_id in self._jobs:
                continue
            tool = self.task_tools.get(state.tool)
            if tool is None:
                continue
            late = state.changing_until is not None and now >= state.changing_until + ADOPT_AFTER
            if (at_start and state.instance != self.log.instance_id) or late:
                self._start(state.task_id, self._resume(tool, state))
                adopted += 1
        return adopted

    async def _resume(self, tool: TaskTool, state: TaskState) -> None:
        log.info("finishing a task its instance left", task_id=state.task_id, instance=state.instance)
        handle = TaskHandle(self.log, state)
        try:
            result = await tool.resume(state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a task must settle whatever went wrong
            log.exception("task resume failed", task_id=state.task_id)
            await self._settle(handle.fail(INTERNAL_ERROR, f"the task could not be finished: {type(exc).__name__}"))
            return
        await self._settle(handle.complete(result))

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            now = now_utc()
            self._adopt(self.log.all(), now, at_start=False)
            self.log.purge(now)

    @property
    def running(self) -> int:
        return len(self._jobs)

    async def close(self) -> None:
        """Stop every job without a word on the topic: another instance (or this one restarted) finishes them."""
        jobs = [*self._jobs.values(), *([self._sweeper] if self._sweeper is not None else [])]
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
