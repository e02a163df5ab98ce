"""Long-lived MCP client sessions to one airline MCP server: an Object Pool with health checks.

A session costs a connect and a handshake (``server/discover``, then ``initialize`` on a legacy server);
keeping a few open makes a search one POST. The SDK's context managers (anyio task groups) must be
entered and exited in one task, so every session has an owner task that opens it, parks, and closes it
when told to. Calls are made on the session from the callers' own tasks, which the SDK allows: requests
go through its memory streams, and each request's POST runs in the owner's task group under a copy of
the caller's context. A caller leases a session exclusively, so at most ``size`` calls are in flight.

Health: a session whose owner has ended (its transport failed, or the server closed it), that a call
marked broken, or that is older than ``max_age_s`` is closed and replaced on the next lease. Whether its
tools are still the approved ones is the connector's to check (``verified_pin``/``verified_at``,
`connectors.pins`).

Per-call attribution (`CallRecord`): the SDK hides HTTP statuses and turns a failed POST into a failure
of the whole session. `AttributingTransport` sits under the shared httpx2 client; it reads the calling
call's record from a context variable (the SDK carries the caller's context to the POST task), bounds the
POST by that call's deadline with httpx2's own timeouts, notes its status and Retry-After there, and
turns a transport error into a synthetic 502 the SDK answers as a JSON-RPC error for that request only,
so one call's timeout or reset never fails the other calls or the session.

A record marked ``streaming`` is a POST whose answer is a stream that lasts (a ``subscriptions/listen``
subscription, `connectors.kinds.mcp.McpConnector.watch_orders`): it is attributed the same way but passed
through unbuffered, and its read timeout is ``idle_s``, the longest silence allowed between two reads (the
server pings an idle stream), not the call's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable
from dataclasses import dataclass

import httpx2
from mcp import Client

__all__ = ["CALL", "AttributingTransport", "CallRecord", "McpSessionPool", "PooledSession"]

# A POST made after its call's deadline (the SDK's courtesy cancel for an abandoned call) still gets a
# moment to go out; httpx2 refuses a zero timeout.
_MIN_POST_S = 0.05
_CONNECT_S = 2.0
_CLOSE_S = 2.0
# Not a real HTTP answer: the status the SDK sees when the POST never got one (see module docstring).
SYNTHETIC_STATUS = 502


@dataclass
class CallRecord:
    """One call's deadline and what its latest POST met (latest: a legacy server refuses the discovery
    probe with a 4xx before the SDK falls back to ``initialize``, and that must not colour the outcome)."""

    deadline: float
    error_status: int | None = None
    retry_after: str | None = None
    transport_error: httpx2.TransportError | None = None
    # A lasting stream (see the module docstring): unbuffered, and read with ``idle_s`` as its timeout.
    streaming: bool = False
    idle_s: float | None = None


CALL: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("jetbridge_mcp_call", default=None)


class AttributingTransport(httpx2.AsyncBaseTransport):
    """Forwards to the shared pool; bounds and attributes each POST to the call in `CALL`."""

    def __init__(self, pool: httpx2.AsyncBaseTransport) -> None:
        self._pool = pool

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        record = CALL.get()
        if record is None or request.method != "POST":
            return await self._pool.handle_async_request(request)
        left = max(record.deadline - asyncio.get_running_loop().time(), _MIN_POST_S)
        read = record.idle_s if record.streaming else left
        request.extensions["timeout"] = {"connect": min(left, _CONNECT_S), "read": read, "write": left, "pool": left}
        if record.streaming:
            return await self._stream(request, record)
        try:
            response = await self._pool.handle_async_request(request)
            try:
                # Buffered here, inside the attribution, so a failure while reading the body is this
                # call's too (POST answers are one JSON body or a finite SSE stream; the GET stream,
                # which never ends, passes through above).
                body = await _raw_body(response)
            finally:
                await response.aclose()
        except httpx2.TransportError as exc:
            record.transport_error, record.error_status, record.retry_after = exc, None, None
            return httpx2.Response(SYNTHETIC_STATUS, request=request)
        failed = response.status_code >= 400
        record.transport_error = None
        record.error_status = response.status_code if failed else None
        record.retry_after = response.headers.get("retry-after") if failed else None
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            content=body,
            request=request,
            extensions=response.extensions,
        )

    async def _stream(self, request: httpx2.Request, record: CallRecord) -> httpx2.Response:
        """A lasting stream's POST: its status attributed, its body left to the SDK to read as it comes."""
        try:
            response = await self._pool.handle_async_request(request)
        except httpx2.TransportError as exc:
            record.transport_error, record.error_status, record.retry_after = exc, None, None
            return httpx2.Response(SYNTHETIC_STATUS, request=request)
        failed = response.status_code >= 400
        record.transport_error = None
        record.error_status = response.status_code if failed else None
        record.retry_after = response.headers.get("retry-after") if failed else None
        return response

    async def aclose(self) -> None:
        await self._pool.aclose()


async def _raw_body(response: httpx2.Response) -> bytes:
    # Raw, not decoded: the rebuilt response keeps the headers, Content-Encoding included.
    if response.is_stream_consumed:
        return response.content  # built in memory (mock transports in tests)
    return b"".join([chunk async for chunk in response.aiter_raw()])


class PooledSession:
    """One open MCP client session and the task that owns its context managers."""

    def __init__(self, open_client: Callable[[], Client], handshake: CallRecord, name: str) -> None:
        loop = asyncio.get_running_loop()
        self.born = loop.time()
        self.broken = False
        self.client: Client | None = None
        # The pin this session's tool listing was last found equal to, and when (connectors.pins.PinCheck).
        self.verified_pin: str | None = None
        self.verified_at: float | None = None
        self.opened: asyncio.Future[Client] = loop.create_future()
        self._close = asyncio.Event()
        # A fresh context: the owner must not inherit the opening caller's log context or call record.
        self.owner = loop.create_task(self._own(open_client, handshake), name=name, context=contextvars.Context())

    async def _own(self, open_client: Callable[[], Client], handshake: CallRecord) -> None:
        # The handshake's POSTs belong to the call that asked for the session (its budget, its statuses).
        CALL.set(handshake)
        try:
            async with open_client() as client:
                CALL.set(None)
                self.client = client
                self.opened.set_result(client)
                await self._close.wait()
        except Exception as exc:  # noqa: BLE001 - the owner is a boundary: its failure is reported, not raised
            # Ends the owner quietly: the failure reaches the caller through `opened`, or marks the
            # session broken for the next health check.
            if not self.opened.done():
                self.opened.set_exception(exc)
        finally:
            self.broken = True
            if not self.opened.done():
                self.opened.cancel()

    def healthy(self, now: float, max_age_s: float) -> bool:
        return not self.broken and not self.owner.done() and now - self.born < max_age_s

    def close(self) -> None:
        """Tell the owner to close the session (in its own task, as the SDK requires)."""
        self.broken = True
        self._close.set()


class McpSessionPool:
    """At most ``size`` sessions, each leased to one call at a time; idle ones reused newest first."""

    def __init__(self, open_client: Callable[[], Client], *, size: int, max_age_s: float, name: str) -> None:
        self._open_client = open_client
        self._size = size
        self._max_age_s = max_age_s
        self._name = name
        self._permits = asyncio.Semaphore(size)
        self._idle: list[PooledSession] = []
        self._sessions: set[PooledSession] = set()
        self._closed = False
        self.opened_count = 0

    async def acquire(self, record: CallRecord) -> PooledSession:
        """A healthy session for the calling task; opens one (within ``record``'s budget) when none is idle."""
        if self._closed:
            raise RuntimeError("MCP session pool is closed")
        await self._permits.acquire()
        now = asyncio.get_running_loop().time()
        while self._idle:
            session = self._idle.pop()
            if session.healthy(now, self._max_age_s):
                return session
            session.close()
        self.opened_count += 1
        session = PooledSession(self._open_client, record, f"mcp-session-{self._name}-{self.opened_count}")
        self._sessions.add(session)
        session.owner.add_done_callback(lambda _: self._sessions.discard(session))
        return session

    async def wait_open(self, session: PooledSession) -> Client:
        """The session's client once its handshake is done; cancelling the wait leaves the handshake be."""
        return await asyncio.shield(session.opened)

    def release(self, session: PooledSession, *, reusable: bool) -> None:
        """Give the lease back; a session still opening is settled when its handshake ends."""
        if not session.opened.done():
            session.opened.add_done_callback(lambda _: self._settle(session, reusable=reusable))
        else:
            self._settle(session, reusable=reusable)

    def _settle(self, session: PooledSession, *, reusable: bool) -> None:
        opened = not session.opened.cancelled() and session.opened.exception() is None
        if (
            opened
            and reusable
            and not self._closed
            and session.healthy(asyncio.get_running_loop().time(), self._max_age_s)
        ):
            self._idle.append(session)
        else:
            session.close()
        self._permits.release()

    async def aclose(self) -> None:
        """Close every session and wait for their owners (briefly; then cancel them)."""
        self._closed = True
        self._idle.clear()
        owners = [session.owner for session in self._sessions]
        for session in list(self._sessions):
            session.close()
            if not session.opened.done():
                # Still in its handshake, which waits on the server, not on the close signal; the pool's
                # connections are being closed anyway, so cancelling their requests costs nothing.
                session.owner.cancel()
        if not owners:
            return
        _, pending = await asyncio.wait(owners, timeout=_CLOSE_S)
        for owner in pending:
            owner.cancel()
        for owner in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await owner
