"""Open-loop load over real MCP sessions (streamable HTTP).

Requests leave on a fixed schedule whether or not earlier ones returned, and each latency is measured from
the request's *scheduled* time, so a server that falls behind shows it (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp import Client

__all__ = ["Sample", "open_loop"]


@dataclass(frozen=True, slots=True)
class Sample:
    scheduled_s: float  # seconds since the start of the run
    latency_s: float
    ok: bool
    status: str  # complete | partial | no_airlines | error | timeout
    warmup: bool


async def _call(client: Client, arguments: dict[str, Any], timeout_s: float) -> str:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            result = await client.call_tool("search_offers", arguments)
            if result.is_error:
                return "error"
            structured = result.structured_content or {}
            return str(structured.get("status", "error"))
    return "timeout"


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
) -> list[Sample]:
    """Send ``rate`` searches a second for ``warmup_s + hold_s`` seconds; one Sample per request."""
    total = round((warmup_s + hold_s) * rate)
    samples: list[Sample] = []
    stack = contextlib.AsyncExitStack()
    try:
        clients = [await stack.enter_async_context(Client(url)) for _ in range(max(1, sessions))]
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        tasks: list[asyncio.Task[None]] = []
        measured_started = False

        async def one(i: int, scheduled: float) -> None:
            status = "error"
            try:
                status = await _call(clients[i % len(clients)], arguments(i), timeout_s)
            except Exception:  # noqa: BLE001 - a failed request is a data point, not a crash
                status = "error"
            latency = loop.time() - scheduled
            samples.append(
                Sample(
                    scheduled_s=scheduled - start,
                    latency_s=latency,
                    ok=status in ("complete", "partial", "no_airlines"),
                    status=status,
                    warmup=scheduled - start < warmup_s,
                )
            )

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
        # An overloaded server may never acknowledge the sessions' end: do not wait for it forever.
        with contextlib.suppress(TimeoutError, Exception):
            async with asyncio.timeout(10):
                await stack.aclose()
    samples.sort(key=lambda s: s.scheduled_s)
    return samples
