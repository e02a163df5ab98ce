"""The one place that builds HTTP clients (timeouts, pool limits, headers); everything else receives one."""

from __future__ import annotations

import httpx

__all__ = ["build_http_client"]

USER_AGENT = "jetbridge/0.1"


def build_http_client(
    *,
    timeout_s: float = 10.0,
    max_connections: int = 100,
    base_url: str = "",
    headers: dict[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An async client with explicit timeouts and pool limits; ``transport`` lets tests inject one."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        transport=transport,
        follow_redirects=False,
        trust_env=False,
    )
