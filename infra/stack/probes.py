"""Is it up? One probe per kind of endpoint, each bounded to about a second."""

from __future__ import annotations

import asyncio
import contextlib

import httpx

__all__ = ["health_detail", "http_healthy", "port_open", "registry_answers"]


async def http_healthy(url: str, timeout_s: float = 1.0, *, client: httpx.AsyncClient | None = None) -> bool:
    """``GET url`` answers 200 (a process that is still starting answers 503)."""
    try:
        if client is not None:
            return (await client.get(url, timeout=timeout_s)).status_code == 200
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as own:
            return (await own.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def health_detail(url: str, timeout_s: float = 1.0) -> str | None:
    """What a health answer says beyond "ok" (``degraded: dlq unwritable``, ``backbone unavailable``), if
    anything; None when it says nothing more or cannot be read."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as http:
            body = (await http.get(url)).json()
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    words = [str(body[k]) for k in ("reason",) if body.get(k)]
    if body.get("backbone") not in (None, "ok"):
        words.append(f"backbone {body['backbone']}: {body.get('backbone_last_failure') or ''}".rstrip(": "))
    status = body.get("status")
    if status in (None, "ok", "starting") and not words:
        return None
    return f"{status}: {'; '.join(words)}" if words else str(status)


async def registry_answers(url: str, timeout_s: float = 1.0) -> bool:
    return await http_healthy(f"{url.rstrip('/')}/subjects", timeout_s)


async def port_open(address: str, timeout_s: float = 1.0) -> bool:
    """Whether ``host:port`` (the first of a comma-separated bootstrap list) accepts a TCP connection."""
    host, _, port = address.split(",")[0].strip().rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]") or "127.0.0.1", int(port)), timeout_s
        )
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
