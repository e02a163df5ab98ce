"""Open-loop load over real MCP sessions (streamable HTTP).

Requests leave on a fixed schedule whether or not earlier ones returned, and each latency is measured from
the request's *scheduled* time, so a server that falls behind shows it (no coordinated omission).

Each MCP session lives in a task of its own: the SDK's client cancels the task that opened it when its
connection breaks (an overloaded server does that), and that must cost the requests of that session, not
the whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp import Client

from mcp_bridge.agent import open_agent

__all__ = ["Sample", "open_loop"]

# What one search came back with: the reply's status, and each airline's status in the reply.
_Answer = tuple[str, tuple[str, ...]]
_Job = tuple[dict[str, Any], "asyncio.Future[_Answer]"]


@dataclass(frozen=True, slots=True)
class Sample:
    scheduled_s: float  # seconds since the start of the run
    latency_s: float
    ok: bool
    status: str  # complete | partial | no_airlines | error | timeout
    warmup: bool
    # One status per airline the reply names (ok, timeout, error, ...); empty without a reply.
    airline_statuses: tuple[str, ...] = ()


async def _call(client: Client, arguments: dict[str, Any]) -> _Answer:
    result = await client.call_tool("search_offers", arguments)
    if result.is_error:
        return "error", ()
    structured = result.structured_content or {}
    airlines = structured.get("airlines") or []
    return str(structured.get("status", "error")), tuple(str(a.get("status")) for a in airlines)


class _Session:
    """One MCP session in its own task, fed through a queue."""

    def __init__(self, url: str, token: str | None) -> None:
        self._url = url
        self._token = token
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self.ready = asyncio.Event()
        self.alive = True
        self._task = asyncio.create_task(self._run())

    def submit(self, arguments: dict[str, Any]) -> asyncio.Future[_Answer]:
        future: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        if self.alive:
            self._queue.put_nowait((arguments, future))
        else:
            future.set_result(("error", ()))
        return future

    async def _run(self) -> None:
        try:
            async with open_agent(self._url, token=self._token) as client:
                self.ready.set()
                calls: set[asyncio.Task[None]] = set()
                while (job := await self._queue.get()) is not None:
                    task = asyncio.create_task(self._one(client, *job))
                    calls.add(task)
                    task.add_done_callback(calls.discard)
                if calls:
                    await asyncio.wait(calls)
        except BaseException:  # noqa: BLE001, S110 - a broken session fails its own requests, nothing else
            pass
        finally:
            self.alive = False
            self.ready.set()
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if job is not None and not job[1].done():
                    job[1].set_result(("error", ()))

    @staticmethod
    async def _one(client: Client, arguments: dict[str, Any], future: asyncio.Future[_Answer]) -> None:
        try:
            answer = await _call(client, arguments)
        except Exception:  # noqa: BLE001 - a failed request is a data point
            answer = ("error", ())
        if not future.done():
            future.set_result(answer)

    async def close(self) -> None:
        self._queue.put_nowait(None)
        try:
            async with asyncio.timeout(10):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


async def open_loop(
    url: str,
    *,
    rate: float,
    warmup_s: float,
    hold_s: float,
    arguments: Callable[[int], dict[str, Any]],
    timeout_s: float,
    sessions: int = 8,
    on_measured_start: Callable[[], None] | None = None,
    token: str | None = None,
) -> list[Sample]:
    """Send ``rate`` searches a second for ``warmup_s + hold_s`` seconds, as the agent ``token`` names; one
    Sample per request."""
    total = round((warmup_s + hold_s) * rate)
    samples: list[Sample] = []
    pool = [_Session(url, token) for _ in range(max(1, sessions))]
    await asyncio.gather(*(s.ready.wait() for s in pool))
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks: list[asyncio.Task[None]] = []
    measured_started = False

    async def one(i: int, scheduled: float) -> None:
        future = pool[i % len(pool)].submit(arguments(i))
        try:
            status, airline_statuses = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            status, airline_statuses = "timeout", ()
        latency = loop.time() - scheduled
        samples.append(
            Sample(
                scheduled_s=scheduled - start,
                latency_s=latency,
                ok=status in ("complete", "partial", "no_airlines"),
                status=status,
                warmup=scheduled - start < warmup_s,
                airline_statuses=airline_statuses,
            )
        )

    try:
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if not measured_started and scheduled - start >= warmup_s:
                measured_started = True
                if on_measured_start is not None:
                    on_measured_start()
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(s.close() for s in pool), return_exceptions=True)
    samples.sort(key=lambda s: s.scheduled_s)
    return samples
