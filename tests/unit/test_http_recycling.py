"""A client whose pool stopped handing out connections replaces the pool and answers again."""

from __future__ import annotations

import httpx
import pytest

from jetbridge.http import RecyclingTransport, build_http_client


class WedgedThenHealthy(httpx.AsyncBaseTransport):
    """The first pool built is wedged (every request: PoolTimeout); later ones answer."""

    built = 0

    def __init__(self) -> None:
        WedgedThenHealthy.built += 1
        self.wedged = WedgedThenHealthy.built == 1
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.wedged:
            raise httpx.PoolTimeout("no connection available", request=request)
        return httpx.Response(200, json={"ok": True})

    async def aclose(self) -> None:
        self.closed = True


async def test_a_wedged_pool_is_replaced_after_repeated_pool_timeouts() -> None:
    WedgedThenHealthy.built = 0
    transport = RecyclingTransport(WedgedThenHealthy, threshold=3)
    async with build_http_client(transport=transport) as client:
        for _ in range(3):
            with pytest.raises(httpx.PoolTimeout):
                await client.get("http://airline.test/shop")
        assert transport.recycled == 1
        response = await client.get("http://airline.test/shop")
        assert response.json() == {"ok": True}
        assert WedgedThenHealthy.built == 2


async def test_an_answer_between_pool_timeouts_keeps_the_pool() -> None:
    calls = {"n": 0}

    class Flaky(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            calls["n"] += 1
            if calls["n"] % 2:
                raise httpx.PoolTimeout("busy", request=request)
            return httpx.Response(200)

    transport = RecyclingTransport(Flaky, threshold=2)
    async with build_http_client(transport=transport) as client:
        for _ in range(3):
            with pytest.raises(httpx.PoolTimeout):
                await client.get("http://airline.test/")
            assert (await client.get("http://airline.test/")).status_code == 200
    assert transport.recycled == 0, "busy is not wedged: the pool answers between timeouts"
