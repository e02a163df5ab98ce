"""What the bridge checks at its HTTP edge, before the MCP SDK sees a request.

The SDK's streamable-HTTP session manager already caps sessions in all (``max_sessions``), expires idle
ones (``session_idle_timeout``), refuses bodies over ``max_request_body_size`` (413) and, on a loopback
host, foreign Origin and Host headers (DNS rebinding). It knows nothing of clients, so one client could take
every session. `SessionLimits` (a throttler per client) admits a new session only while its client holds
fewer than its cap, and tells it when to come back (429 with Retry-After). `StampArrival` records when a
request reached the bridge, so a search's deadline counts the time it queued here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ARRIVED", "SessionLimits", "StampArrival", "arrived_at", "client_id", "is_client_id"]

# The ASGI scope key holding when the request reached the bridge (time.monotonic()).
ARRIVED = "jetbridge.arrived"
_SESSION_HEADER = "mcp-session-id"


def is_client_id(value: str) -> bool:
    """A client id is 1-64 ASCII letters, digits, ``-`` and ``_`` (it keys the registry, the audit and logs)."""
    return 0 < len(value) <= 64 and value.isascii() and value.replace("-", "").replace("_", "").isalnum()


def client_id(scope: Scope) -> str:
    """Who is calling, for the HTTP request of this ASGI scope.

    When the bridge authenticates (the SDK's authentication middleware ran and set ``user``), only the bearer
    token names the caller: its ``client_id`` claim, or its ``sub`` (`mcp_bridge.auth.JwtVerifier`), and a
    request without a valid token is ``anonymous``. Otherwise the caller names itself with ``x-client-id``.
    """
    if "user" in scope:
        user = scope["user"]
        return user.access_token.client_id if isinstance(user, AuthenticatedUser) else "anonymous"
    value = Headers(scope=scope).get("x-client-id", "anonymous")
    return value[:64] if value.replace("-", "").replace("_", "").isalnum() else "anonymous"


class StampArrival:
    """ASGI middleware, outermost: every HTTP request carries the moment it reached the bridge (`arrived_at`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[ARRIVED] = time.monotonic()
        await self.app(scope, receive, send)


def arrived_at(scope: Mapping[str, object] | None) -> float | None:
    """When the request of this ASGI scope reached the bridge (time.monotonic()), if it was stamped."""
    value = scope.get(ARRIVED) if scope is not None else None
    return value if isinstance(value, float) else None


@dataclass
class _Session:
    client: str
    in_flight: int = 0
    idle_since: float = 0.0


@dataclass
class _Client:
    sessions: set[str] = field(default_factory=set)
    opening: int = 0  # sessions being opened: counted at once, so a burst cannot overshoot the cap

    def held(self) -> int:
        return len(self.sessions) + self.opening


class SessionLimits:
    """ASGI middleware in front of the SDK's session manager: at most ``per_client`` sessions per client.

    A session is counted from the request that opens it (a POST without ``mcp-session-id``) until the
    client deletes it or it has had no request in flight for ``idle_s`` seconds, the SDK's own idle rule
    with the same timeout, so both forget a session at the same moment. A client is `client_id` (its token's
    client, or its ``x-client-id`` when the bridge does not authenticate); one without is
    ``anonymous@<its address>``, so anonymous agents on other hosts keep their own room. It runs inside the
    SDK's authentication middleware, so it sees the token's client. A session is its opener's: another
    client naming it gets 404, as for a session that does not exist.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        per_client: int,
        idle_s: float,
        path: str = "/mcp",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.per_client = per_client
        self.idle_s = idle_s
        self.path = path
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        self._clients: dict[str, _Client] = {}

    def held(self, client: str) -> int:
        """Sessions ``client`` holds now (open or being opened)."""
        self._expire(client)
        state = self._clients.get(client)
        return state.held() if state is not None else 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        session_id = Headers(scope=scope).get(_SESSION_HEADER)
        if session_id is None:
            if scope["method"] == "POST":
                await self._open(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        elif (session := self._sessions.get(session_id)) is not None:
            if session.client != self._client_of(scope):
                # Another client's session: answered as if it did not exist (the SDK does the same for a
                # token of another principal), and it stays its owner's.
                await _not_found(send)
                return
            await self._use(session_id, session, scope, receive, send)
        else:
            await self.app(scope, receive, send)  # unknown or expired: the SDK answers 404

    def _client_of(self, scope: Scope) -> str:
        name = client_id(scope)
        if name != "anonymous":
            return name
        peer = scope.get("client")
        return f"anonymous@{peer[0]}" if peer else name

    async def _open(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = self._client_of(scope)
        self._expire(client)
        state = self._clients.setdefault(client, _Client())
        if state.held() >= self.per_client:
            await self._refuse(client, state, send)
            return
        state.opening += 1
        opened: list[str] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                session_id = Headers(raw=message.get("headers", [])).get(_SESSION_HEADER)
                if session_id is not None:
                    opened.append(session_id)
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            state.opening -= 1
            for session_id in opened:
                self._sessions[session_id] = _Session(client, idle_since=self._clock())
                state.sessions.add(session_id)
            if not state.held():
                self._clients.pop(client, None)

    async def _use(self, session_id: str, session: _Session, scope: Scope, receive: Receive, send: Send) -> None:
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        session.in_flight += 1
        try:
            await self.app(scope, receive, watch)
        finally:
            session.in_flight -= 1
            session.idle_since = self._clock()
            # 404: the SDK no longer knows it (it expired there first); a DELETE that worked ended it.
            if status == 404 or (scope["method"] == "DELETE" and status < 400):
                self._forget(session_id)

    def _expire(self, client: str) -> None:
        state = self._clients.get(client)
        if state is None:
            return
        now = self._clock()
        for session_id in list(state.sessions):
            session = self._sessions[session_id]
            if session.in_flight == 0 and now - session.idle_since >= self.idle_s:
                self._forget(session_id)

    def _forget(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        state = self._clients.get(session.client)
        if state is not None:
            state.sessions.discard(session_id)
            if not state.held():
                del self._clients[session.client]

    def _retry_after_s(self, state: _Client) -> int:
        """When the client's first idle session expires, or a full idle period if all are busy."""
        now = self._clock()
        idle = [
            self._sessions[s].idle_since + self.idle_s - now for s in state.sessions if not self._sessions[s].in_flight
        ]
        return max(1, math.ceil(min(idle, default=self.idle_s)))

    async def _refuse(self, client: str, state: _Client, send: Send) -> None:
        retry_after = self._retry_after_s(state)
        message = (
            f"Too many open sessions for client {client}: at most {self.per_client}. Reuse one, close one "
            f"(HTTP DELETE), or retry after {retry_after} s (code rate_limited, retriable)"
        )
        body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": message}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(retry_after).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _not_found(send: Send) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})
