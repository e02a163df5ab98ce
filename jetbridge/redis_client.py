"""The one place that opens Redis clients (redis-py's asyncio client), and the health probe.

Redis is the shared offer cache: an optimisation, never the only copy of anything (ARCHITECTURE.md). So a
client gives up quickly: a Redis that does not answer within ``timeout_s`` raises ``redis.RedisError`` (or
``OSError``), which the caller treats as a miss rather than waiting on it. Values are bytes (no decoding).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["DEFAULT_TIMEOUT_S", "open_redis", "ping", "public_url"]

# A loopback or same-zone Redis answers in well under a millisecond; a second is already a broken one.
DEFAULT_TIMEOUT_S = 1.0


@contextlib.asynccontextmanager
async def open_redis(url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> AsyncIterator[Redis]:
    """A client for ``url`` (``Settings.redis_url``) whose connects and replies time out after ``timeout_s``;
    its connections are closed when the block ends."""
    client = Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        yield client
    finally:
        await client.aclose()


async def ping(url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether the Redis at ``url`` answers PING within about ``timeout_s``."""
    try:
        async with open_redis(url, timeout_s=timeout_s) as client:
            return bool(await client.ping())
    except (RedisError, OSError):
        return False


def public_url(url: str) -> str:
    """``url`` without its password, fit for a status line or a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()
