"""A tiny HTTP endpoint for liveness and readiness probes: ``GET /health`` on ``JB_HEALTH_PORT``.

Served by every long-running process that has no HTTP server of its own (stream and connector workers),
so the local stack's supervisor and an orchestrator probe them the same way. The answer is JSON from the
process's ``check`` function: 200 when its ``status`` is ``ok``, 503 otherwise. More routes (``/metrics``)
can be added with ``route``, and ``POST`` handlers for every path under a prefix with ``post_route`` (the
connectors' airline webhooks, ``POST /webhooks/<IATA>``): they get the path, the headers (names lower-cased) and
the body (at most ``MAX_BODY`` bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from jetbridge.log import get_logger

__all__ = ["MAX_BODY", "HealthServer", "PostRoute", "Route"]

log = get_logger(__name__)

# A route answers (HTTP status, content type, body).
Route = Callable[[], tuple[int, str, bytes]]
# A POST route answers (HTTP status, content type, body) for (path, headers, body).
PostRoute = Callable[[str, Mapping[str, str], bytes], Awaitable[tuple[int, str, bytes]]]

MAX_BODY = 1_000_000
_MAX_HEADERS = 100

_REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class HealthServer:
    """``GET /health`` (and any added route) on 127.0.0.1 or the given host."""

    def __init__(self, port: int, check: Callable[[], dict[str, Any]], *, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self._routes: dict[str, Route] = {"/health": lambda: _json_answer(check())}
        self._posts: dict[str, PostRoute] = {}
        self._server: asyncio.Server | None = None

    def route(self, path: str, answer: Route) -> None:
        self._routes[path] = answer

    def post_route(self, prefix: str, answer: PostRoute) -> None:
        """Answer ``POST`` requests to every path that starts with ``prefix`` (e.g. ``/webhooks/``)."""
        self._posts[prefix] = answer

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health endpoint listening", url=f"http://{self.host}:{self.port}/health")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5.0)
            headers: dict[str, str] = {}
            while (line := await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
                name, sep, value = line.decode("latin-1").partition(":")
                if sep and len(headers) < _MAX_HEADERS:
                    headers[name.strip().lower()] = value.strip()
            parts = request_line.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            posted = next((answer for prefix, answer in self._posts.items() if path.startswith(prefix)), None)
            route = self._routes.get(path)
            if method == "POST" and posted is not None:
                status, ctype, body = await self._post(posted, path, headers, reader)
            elif route is None and posted is None:
                status, ctype, body = 404, "text/plain", b"not found\n"
            elif route is None:
                status, ctype, body = 405, "text/plain", b"POST only\n"
            elif method not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"GET only\n"
            else:
                status, ctype, body = route()
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (body if method != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _post(
        self, answer: PostRoute, path: str, headers: dict[str, str], reader: asyncio.StreamReader
    ) -> tuple[int, str, bytes]:
        length = headers.get("content-length", "")
        if not length.isdigit():
            return 411, "text/plain", b"Content-Length required\n"
        if int(length) > MAX_BODY:
            return 413, "text/plain", b"body too large\n"
        body = await asyncio.wait_for(reader.readexactly(int(length)), 10.0)
        try:
            return await answer(path, headers, body)
        except Exception as exc:  # noqa: BLE001 - a handler's bug answers 500; the server goes on
            log.error("POST handler failed", path=path, error=type(exc).__name__)
            return 500, "text/plain", b"internal error\n"


def _json_answer(state: dict[str, Any]) -> tuple[int, str, bytes]:
    status = 200 if state.get("status") == "ok" else 503
    return status, "application/json", json.dumps(state, default=str).encode()
