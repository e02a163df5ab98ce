"""How an agent reaches the bridge: an MCP client over streamable HTTP, with its bearer token.

`jetbridge demo`, the benchmark's load and the end-to-end tests call the bridge through this, as any MCP
client would: the token goes in the ``Authorization`` header of every request, nothing else is special.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

__all__ = ["open_agent"]

# The MCP transports' own defaults: 30 s to connect or send, 300 s to read (a response stream stays open).
_TIMEOUT = httpx2.Timeout(30.0, read=300.0)


@contextlib.asynccontextmanager
async def open_agent(url: str, *, token: str | None = None, **client: Any) -> AsyncIterator[Client]:
    """An MCP session with the bridge at ``url``, as the agent ``token`` names (no token: as nobody). ``client``:
    more of the SDK `Client`'s options, e.g. ``elicitation_callback`` (the person who confirms bookings),
    ``mode="legacy"`` (a 2025-11-25 session), ``message_handler``."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with (
        httpx2.AsyncClient(headers=headers, timeout=_TIMEOUT, trust_env=False) as http,
        Client(streamable_http_client(url, http_client=http), **client) as session,
    ):
        yield session
