"""``search_offers`` as an MCP task, with progress and late airlines (the asynchronous pattern at the bridge).

Progress: a call with a progress token (``_meta.progressToken``) gets ``notifications/progress`` as each airline
answers: `ResponseWatcher` follows ``jb.airline-responses.v1`` for the call's request; the total is the airlines
the router will ask, worked out here the way the router does (`jetbridge.routing.route`, the registry and the
airlines' health). A task sends none (SEP-2663 defines no progress for tasks): its ``statusMessage`` counts instead.

Late airlines: a task's search is published with the process's longest deadline (``max_deadline_ms``) instead of
the agent's own, so airlines keep being waited for after it. What ``tasks/get`` shows meanwhile:

- ``working``, "n of m airlines answered", until every airline answered or the agent's deadline;
- at the agent's deadline, ``completed`` with the partial result the aggregator would have given then (merged and
  ranked by the aggregator's own code, `streams.aggregation`), each airline not heard from yet ``pending``, and
  the result's ``_meta`` ``jetbridge/final: false`` and ``jetbridge/changing_until``. An agent that stops polling
  there has what a synchronous call gives; one that polls on sees the result replaced
- each time a late airline answers (its offers merged in), and finally by the aggregator's reply at the long
  deadline (``jetbridge/final: true``: airlines still missing are ``timeout``). ``tasks/cancel`` on a task showing
  a partial result keeps that result and stops adding to it.

If every airline answers before the agent's deadline the aggregator replies at once and the task completes then.
A task whose bridge stopped is finished by another instance, or this one restarted (`SearchTaskTool.resume`): the
aggregator's reply is looked up on ``jb.replies.v1`` by request id (`replies_of`), as the task's record names it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pydantic_core
from mcp.server.context import ServerRequestContext
from mcp.server.extension import Extension
from mcp_types import CallToolRequestParams, CallToolResult, TextContent

from jetbridge.airlines import AirlineRegistry
from jetbridge.errors import AirlineQuarantined, InvalidInput, JetbridgeError
from jetbridge.log import get_logger
from jetbridge.routing import Route, route
from jetbridge.runtime import Runtime, kafka_config
from jetbridge.topics import TopicNames
from mcp_bridge.airline_health import AirlineHealthView
from mcp_bridge.response_watch import ResponseWatcher, replies_of
from mcp_bridge.search_observer import observing
from mcp_bridge.service import REPLY_GRACE_S, RETRY_AFTER_S, SearchResult, result_of
from mcp_bridge.tasks import TaskHandle, TaskLog, TasksExtension, TaskTool
from mcp_bridge.validation import SearchArguments, SearchRules
from schemas.models import AirlineResponse, SearchRequest, TaskState, now_utc
from streams.aggregation import Aggregation, Plan

__all__ = [
    "BridgeTasks",
    "ProgressObserver",
    "SearchTaskTool",
    "TaskObserver",
    "interim_result",
    "open_tasks",
    "task_extensions",
    "tool_result",
]

log = get_logger(__name__)

TOOL = "search_offers"
PENDING = "pending"
# What a partial result's _meta says: whether it is the last word, and until when it may still change.
META_FINAL = "jetbridge/final"
META_CHANGING_UNTIL = "jetbridge/changing_until"
# Past the long deadline and the reply's grace, how long before the task's instance counts as gone.
_SETTLE_MARGIN = timedelta(seconds=2)
_DRAIN_S = 5.0


def tool_result(result: SearchResult, meta: dict[str, Any] | None = None) -> CallToolResult:
    """The ``CallToolResult`` the SDK makes of a tool returning ``result`` (text and structured content)."""
    return CallToolResult(
        content=[TextContent(type="text", text=pydantic_core.to_json(result, indent=2).decode())],
        structured_content=result.model_dump(mode="json", by_alias=True),
        meta=meta,
    )


def interim_result(
    request: SearchRequest, covered: Route, responses: Mapping[str, AirlineResponse], agent_deadline: datetime
) -> SearchResult:
    """The search's result from the answers in so far, as the aggregator would make it, unanswered airlines pending."""
    plan = Plan(
        correlation_id=request.correlation_id,
        reply_to=request.reply_to,
        expected=covered.codes,
        not_served=covered.not_served,
        max_offers=request.max_offers,
        deadline=agent_deadline,
        skipped=covered.skipped,
    )
    now = now_utc()
    aggregation = Aggregation(
        request_id=request.request_id, plan=plan, responses=dict(responses), first_seen=request.created_at
    )
    elapsed_ms = int((now - request.created_at).total_seconds() * 1000)
    result = result_of(aggregation.reply(now), elapsed_ms)
    airlines = [
        a.model_copy(update={"status": PENDING, "error_code": None})
        if a.status == "timeout" and a.error_code == "no_response"
        else a
        for a in result.airlines
    ]
    return result.model_copy(update={"airlines": airlines})


class _Follow:
    """What both observers share: the request, the airlines it goes to, and its answers as they come, handled one at
    a time in order (a pump task) so that nothing the watcher calls back waits for the broker or the client."""

    def __init__(self, watcher: ResponseWatcher, coverage: Coverage) -> None:
        self._watcher = watcher
        self._coverage = coverage
        self.request: SearchRequest | None = None
        self.covered = Route([])
        self.agent_deadline: datetime | None = None
        self.responses: dict[str, AirlineResponse] = {}
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    @property
    def total(self) -> int:
        return len(self.covered.expected) + len(self.covered.skipped)

    def published(self, request: SearchRequest, agent_deadline: datetime) -> None:
        self.request, self.agent_deadline = request, agent_deadline
        self.covered = self._coverage(request)
        self._watcher.watch(request.request_id, self._on_response)
        self._pump = asyncio.create_task(self._run(), name=f"search-follow-{request.request_id[:8]}")
        self._begin()

    def _begin(self) -> None:
        """Called once the request is known (before it is published)."""

    def _on_response(self, response: AirlineResponse) -> None:
        self.responses[response.airline] = response
        self._queue.put_nowait(_Answer(response, len(self.responses)))

    async def _run(self) -> None:
        while (item := await self._queue.get()) is not None:
            try:
                await self._handle(item)
            except JetbridgeError as exc:
                log.warning("search follow-up not written", error=str(exc))
            except Exception as exc:  # noqa: BLE001 - the search itself must not fail for its follow-up
                log.warning("search follow-up failed", error=repr(exc))

    async def _handle(self, item: object) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Stop following: what is queued is handled first (bounded), the watcher forgets the request."""
        if self.request is not None:
            self._watcher.unwatch(self.request.request_id)
        if self._pump is None:
            return
        self._queue.put_nowait(None)
        try:
            await asyncio.wait({self._pump}, timeout=_DRAIN_S)
        finally:
            if not self._pump.done():  # drained too slowly, or the call itself is cancelled: drop the rest
                self._pump.cancel()


class ProgressObserver(_Follow):
    """A synchronous search with a progress token: one ``notifications/progress`` per airline that answers."""

    def __init__(self, watcher: ResponseWatcher, coverage: Coverage, ctx: ServerRequestContext[Any, Any]) -> None:
        super().__init__(watcher, coverage)
        self._ctx = ctx

    def hold_ms(self, deadline_ms: int) -> int:
        return deadline_ms

    async def _handle(self, item: object) -> None:
        if isinstance(item, _Answer):
            answered = item.answered
            total = max(self.total, answered)
            message = f"{item.response.airline} answered ({answered} of {total} airlines)"
            await self._ctx.session.report_progress(answered, total, message)


@dataclass(frozen=True, slots=True)
class _Answer:
    response: AirlineResponse
    answered: int  # airlines answered when it came


@dataclass(frozen=True, slots=True)
class _Attach:
    pass


@dataclass(frozen=True, slots=True)
class _Deadline:
    pass


class TaskObserver(_Follow):
    """A search running as a task: the backbone keeps ``hold_ms`` to answer, the task shows a partial result at the
    agent's deadline and every late airline's answer after it (see the module docs)."""

    def __init__(self, watcher: ResponseWatcher, coverage: Coverage, task: TaskHandle, *, hold_ms: int) -> None:
        super().__init__(watcher, coverage)
        self._task = task
        self._hold_ms = hold_ms
        self._timer: asyncio.TimerHandle | None = None
        self.shown = False  # a partial result is shown
        self.changing_until: datetime | None = None

    def hold_ms(self, deadline_ms: int) -> int:
        return max(deadline_ms, self._hold_ms)

    def _begin(self) -> None:
        assert self.request is not None
        assert self.agent_deadline is not None
        self.changing_until = self.request.deadline + timedelta(seconds=REPLY_GRACE_S) + _SETTLE_MARGIN
        self._queue.put_nowait(_Attach())
        delay = (self.agent_deadline - now_utc()).total_seconds()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._queue.put_nowait, _Deadline())

    def _partial(self) -> CallToolResult:
        assert self.request is not None
        assert self.agent_deadline is not None
        assert self.changing_until is not None
        result = interim_result(self.request, self.covered, self.responses, self.agent_deadline)
        meta = {META_FINAL: False, META_CHANGING_UNTIL: self.changing_until.isoformat(timespec="milliseconds")}
        return tool_result(result, meta)

    def _counted(self) -> str:
        return f"{len(self.responses)} of {self.total} airlines answered"

    async def _handle(self, item: object) -> None:
        assert self.request is not None
        if isinstance(item, _Attach):
            await self._task.working(
                f"searching {self.total} airlines",
                request_id=self.request.request_id,
                changing_until=self.changing_until,
            )
        elif isinstance(item, _Deadline):
            self.shown = True
            pending = len(self.covered.expected) - len([c for c in self.covered.codes if c in self.responses])
            message = f"partial at the agent's deadline: {self._counted()}; {pending} pending, their answers are added"
            await self._task.partial(self._partial(), message, until=self.changing_until or now_utc())
        elif isinstance(item, _Answer) and self.shown:
            message = f"{item.response.airline} answered after the deadline: {self._counted()}"
            await self._task.partial(self._partial(), message, until=self.changing_until or now_utc())
        elif isinstance(item, _Answer):
            await self._task.working(self._counted())

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await super().close()


class Coverage:
    """The airlines a request goes to, as the router decides it (`jetbridge.routing.route`): those serving the
    route, narrowed to the request's, less those whose circuit is open or that are quarantined."""

    def __init__(self, registry: AirlineRegistry, health: AirlineHealthView | None) -> None:
        self._registry = registry
        self._health = health

    def _skip(self, code: str, _: datetime) -> str | None:
        if self._health is None:
            return None
        circuit = self._health.circuit(code)
        if circuit.quarantine is not None:
            return AirlineQuarantined.code
        return "circuit_open" if circuit.state == "open" else None

    def __call__(self, request: SearchRequest) -> Route:
        criteria = request.criteria
        return route(
            self._registry,
            criteria.origin,
            criteria.destination,
            request.airlines,
            deadline=request.deadline,
            skip_reason=self._skip,
        )


class SearchTaskTool:
    """`mcp_bridge.tasks.TaskTool` for ``search_offers``."""

    def __init__(
        self,
        *,
        rules: SearchRules,
        coverage: Coverage,
        watcher: ResponseWatcher,
        hold_ms: int,
        replies_topic: str,
        runtime: Runtime,
        consumer_config: dict[str, Any],
    ) -> None:
        self._rules = rules
        self._coverage = coverage
        self._watcher = watcher
        self._hold_ms = hold_ms
        self._replies = replies_topic
        self._runtime = runtime
        self._consumer_config = consumer_config

    def deferrable(self, params: CallToolRequestParams) -> bool:
        # Arguments it will refuse are refused at once, as in a synchronous call.
        try:
            SearchArguments.parse(params.arguments or {}, self._rules)
        except InvalidInput:
            return False
        return True

    @contextlib.asynccontextmanager
    async def running(self, ctx: ServerRequestContext[Any, Any], task: TaskHandle | None) -> AsyncIterator[None]:
        observer: ProgressObserver | TaskObserver | None = None
        if task is not None:
            observer = TaskObserver(self._watcher, self._coverage, task, hold_ms=self._hold_ms)
        elif _progress_token(ctx) is not None:
            observer = ProgressObserver(self._watcher, self._coverage, ctx)
        if observer is None:
            yield
            return
        try:
            async with self._watcher.following():
                with observing(observer):
                    yield
        finally:
            await observer.close()

    def changing_until(self, created_at: datetime) -> datetime:
        return created_at + timedelta(milliseconds=self._hold_ms, seconds=REPLY_GRACE_S) + _SETTLE_MARGIN

    async def resume(self, state: TaskState) -> CallToolResult:
        if state.request_id is None:
            return _unavailable("the bridge instance running this search stopped before it was published")
        until = state.changing_until or self.changing_until(state.created_at)
        reply = await replies_of(
            state.request_id,
            topic=self._replies,
            codec=self._runtime.codec,
            consumer_config=self._consumer_config,
            since=state.created_at - timedelta(seconds=1),
            until=until,
        )
        if reply is None:
            return _unavailable("no reply from the stream processors by the deadline")
        elapsed_ms = int((reply.completed_at - state.created_at).total_seconds() * 1000)
        return tool_result(result_of(reply, elapsed_ms), {META_FINAL: True})


def _progress_token(ctx: ServerRequestContext[Any, Any]) -> object:
    meta: Mapping[str, Any] = ctx.meta or {}
    return meta.get("progressToken", meta.get("progress_token"))


def _unavailable(reason: str) -> CallToolResult:
    text = (
        f"Jetbridge could not answer this search: {reason}; nothing was lost on your side, try again in "
        f"{RETRY_AFTER_S:.0f} s (code backbone_unavailable, retriable, retry_after_s {RETRY_AFTER_S:.0f})"
    )
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


@dataclass
class BridgeTasks:
    """One bridge instance's task machinery: the task log, the response watcher and the extension serving both."""

    log: TaskLog
    watcher: ResponseWatcher
    extension: TasksExtension


@contextlib.asynccontextmanager
async def open_tasks(
    runtime: Runtime,
    instance_id: str,
    *,
    rules: SearchRules,
    health: AirlineHealthView | None,
    more: Mapping[str, TaskTool] | None = None,
) -> AsyncIterator[BridgeTasks]:
    """Start reading the task topic and the airlines' answers; finish the tasks stopped instances left. ``more``:
    other tools that may run as tasks (the order tools that ask nothing), by name."""
    settings = runtime.settings
    names = TopicNames(settings.topic_prefix)
    task_log = TaskLog(
        names.tasks, runtime.codec, runtime.producer, kafka_config(settings, f"{instance_id}-tasks"), instance_id
    )
    watcher = ResponseWatcher(
        instance_id=instance_id,
        topic=names.responses,
        codec=runtime.codec,
        consumer_config=kafka_config(settings, f"{instance_id}-responses"),
    )
    tool = SearchTaskTool(
        rules=rules,
        coverage=Coverage(runtime.airlines, health),
        watcher=watcher,
        hold_ms=settings.max_deadline_ms,
        replies_topic=names.replies,
        runtime=runtime,
        consumer_config=kafka_config(settings, f"{instance_id}-recovery"),
    )
    extension = TasksExtension(task_log, {TOOL: tool, **(more or {})})
    try:
        await watcher.start()
        await task_log.start()
        await extension.start()
        yield BridgeTasks(task_log, watcher, extension)
    finally:
        await extension.close()
        await task_log.close()
        await watcher.close()


def task_extensions(backend: object) -> list[Extension]:
    """The MCP extensions a backend offers: the tasks extension of a bridge that runs tasks, none otherwise."""
    tasks = getattr(backend, "tasks", None)
    return [tasks.extension] if isinstance(tasks, BridgeTasks) else []
