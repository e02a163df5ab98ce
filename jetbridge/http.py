"""The one place that builds HTTP clients (timeouts, pool limits, headers); everything else receives one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import httpx

from jetbridge.log import get_logger

__all__ = ["RecyclingTransport", "build_http_client"]

USER_AGENT = "jetbridge/0.1"

log = get_logger(__name__)


class RecyclingTransport(httpx.AsyncBaseTransport):
    """A connection pool that replaces itself when it stops handing out connections.

    httpcore (1.0.9) can leave pooled connections marked "in use" for good after requests were cancelled
    under load; from then on every request of that client ends in PoolTimeout although the server is
    fine (seen in the benchmark: one airline timing out on every call until its worker restarted). After
    ``threshold`` pool timeouts in a row with no answer in between, the pool is swapped for a new one and
    the old one closed in the background.
    """

    def __init__(self, factory: Callable[[], httpx.AsyncBaseTransport], *, threshold: int = 3) -> None:
        self._factory = factory
        self._inner = factory()
        self._threshold = threshold
        self._pool_timeouts = 0
        self._closing: set[asyncio.Task[None]] = set()
        self.recycled = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        inner = self._inner
        try:
            response = await inner.handle_async_request(request)
        except httpx.PoolTimeout:
            self._pool_timeouts += 1
            if self._pool_timeouts >= self._threshold and inner is self._inner:
                self._recycle(inner, request.url.host)
            raise
        self._pool_timeouts = 0
        return response

    def _recycle(self, old: httpx.AsyncBaseTransport, host: str) -> None:
        self._inner = self._factory()
        self._pool_timeouts = 0
        self.recycled += 1
        log.warning("connection pool replaced after repeated pool timeouts", host=host, recycled=self.recycled)

        async def close_quietly() -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await old.aclose()

        task = asyncio.get_running_loop().create_task(close_quietly())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        await self._inner.aclose()


def build_http_client(
    *,
    timeout_s: float = 10.0,
    max_connections: int = 100,
    base_url: str = "",
    headers: dict[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An async client with explicit timeouts and pool limits; ``transport`` lets tests inject one."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
        limits=limits,
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        transport=transport or RecyclingTransport(lambda: httpx.AsyncHTTPTransport(limits=limits, trust_env=False)),
        follow_redirects=False,
        trust_env=False,
    )
