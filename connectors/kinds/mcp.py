"""The airline-MCP connector kind: call the airline's own MCP server's shopping tool over streamable HTTP.

Sessions are kept open and reused (`connectors.kinds.mcp_pool`: at most the airline's concurrency, each
leased to one call, replaced when broken or old), so a search is one POST, not a connect and a handshake.
The SDK speaks through httpx2 (its fork of httpx), so the worker's shared httpx client cannot carry it:
each connector keeps one httpx2 client and connection pool instead, closed by `aclose` with the
sessions. The tool's dialect (name, arguments, result shape) lives in a mapping module in
`connectors/airlines/`, like a REST airline's.

The server's tools are pinned (`connectors.pins`): a session lists them before its first call, and again
when its last listing is older than ``pin_check_s`` or the approved pin changed; tools other than the
pinned ones quarantine the airline (`AirlineQuarantined`), and the tool is not called.

Failures, which the SDK reports as (nested) exception groups, are mapped onto the error tree:

    timeout                                  → AirlineTimeout
    connection refused/reset                 → AirlineUnavailable
    HTTP 429, 503 with Retry-After           → AirlineThrottled (the call's record keeps the header)
    HTTP 5xx (seen by the call's record)     → AirlineUnavailable
    HTTP 4xx, tool result with isError       → AirlineRejected
    tools differ from the approved pin       → AirlineQuarantined (no tool called)
    protocol errors, unusable tool result    → AirlineBadResponse
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, cast

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INVALID_PARAMS, REQUEST_TIMEOUT, CallToolResult, TextContent

from connectors.airlines import load_mapping
from connectors.base import AirlineConnector, register_kind
from connectors.egress import guarded_mcp_transport
from connectors.kinds import normalise as N
from connectors.kinds.boundary import MAPPING_ERRORS, api_key, guarded_search
from connectors.kinds.http_call import error_for_status
from connectors.kinds.mcp_pool import CALL, AttributingTransport, CallRecord, McpSessionPool, PooledSession
from connectors.pins import DEFAULT_PINS_FILE, PinBook, PinCheck, PinnedTool, pinned_tools
from jetbridge.airlines import Airline, ConnectorKind
from jetbridge.errors import (
    AirlineBadResponse,
    AirlineError,
    AirlineRejected,
    AirlineThrottled,
    AirlineTimeout,
    AirlineUnavailable,
)
from schemas.models import Offer, SearchCriteria

__all__ = ["DEFAULT_MAPPING", "PIN_CHECK_S", "McpConnector", "McpMapping"]

# Finnair's tool shape is the only airline-MCP dialect so far; an airline speaking another one names its
# module in the registry's ``mapping`` field.
DEFAULT_MAPPING = "finnair"
_MAX_TEXT_BYTES = 5 * 1024 * 1024
# Long enough to pay for the handshake many times over; short enough that a server's rotated state
# (keys, deployments behind a balancer) is picked up without a restart of ours.
MAX_SESSION_AGE_S = 300.0
_UNOWNED_TIMEOUT_S = 10.0
# How old a session's tool listing may be before a call lists them again (one housekeeping POST): a change
# on a server whose sessions live long is seen within this, and a quarantined airline is looked at again.
PIN_CHECK_S = 30.0
# A server listing more tools than this in pages is not one we pin.
_MAX_TOOL_PAGES = 20


class McpMapping(Protocol):
    """What an airline-MCP mapping module provides (module-level names)."""

    TOOL_NAME: str

    def auth_headers(self, key: str) -> dict[str, str]: ...

    def tool_arguments(self, criteria: SearchCriteria) -> dict[str, Any] | None:
        """The tool's arguments, or None when the airline sells nothing that could match."""
        ...

    def parse(self, content: Any, *, airline: str, criteria: SearchCriteria) -> list[Offer]: ...


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _classify(airline: str, exc: Exception, record: CallRecord) -> AirlineError | None:
    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, AirlineError):
            return leaf
    transport_errors = [leaf for leaf in leaves if isinstance(leaf, httpx2.TransportError)]
    if record.transport_error is not None:
        transport_errors.insert(0, record.transport_error)
    if any(isinstance(leaf, TimeoutError) for leaf in leaves) or any(
        isinstance(error, httpx2.TimeoutException) for error in transport_errors
    ):
        return AirlineTimeout(f"{airline}: MCP call timed out")
    if transport_errors:
        return AirlineUnavailable(f"{airline}: {type(transport_errors[0]).__name__}")
    if record.error_status is not None:
        return error_for_status(airline, record.error_status, record.retry_after)
    for leaf in leaves:
        if isinstance(leaf, MCPError):
            if leaf.code == INVALID_PARAMS:
                return AirlineRejected(f"{airline}: MCP server refused the arguments")
            if leaf.code == REQUEST_TIMEOUT:
                return AirlineTimeout(f"{airline}: MCP call timed out")
            if leaf.code == CONNECTION_CLOSED:
                return AirlineUnavailable(f"{airline}: MCP connection closed")
            return AirlineBadResponse(f"{airline}: MCP protocol error {leaf.code}")
    if any(isinstance(leaf, (RuntimeError, *MAPPING_ERRORS)) for leaf in leaves):
        # The SDK raises RuntimeError/ValidationError for results that break the protocol or tool schema.
        return AirlineBadResponse(f"{airline}: MCP answer breaks the protocol")
    return None


def _tool_content(airline: str, result: CallToolResult) -> Any:
    """The tool's structured content, or its text decoded as JSON for servers that send only text."""
    if result.is_error:
        text = " ".join(c.text for c in result.content if isinstance(c, TextContent))
        raise AirlineRejected(f"{airline}: tool error: {N.clean_text(text, 'tool error', 160) or 'no message'}")
    if result.structured_content is not None:
        return result.structured_content
    for block in result.content:
        if isinstance(block, TextContent):
            return N.decode_json(airline, block.text.encode()[:_MAX_TEXT_BYTES])
    raise AirlineBadResponse(f"{airline}: tool result has neither structured nor text content")


class McpConnector:
    """Shops one airline through the shopping tool of its own MCP server."""

    kind = "mcp"

    def __init__(
        self,
        airline: Airline,
        http: httpx.AsyncClient | None = None,
        *,
        mapping: McpMapping | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        max_session_age_s: float = MAX_SESSION_AGE_S,
        pins: PinBook | None = None,
        pin_check_s: float = PIN_CHECK_S,
    ) -> None:
        required = ("TOOL_NAME", "auth_headers", "tool_arguments", "parse")
        self._airline = airline
        self._mapping = mapping or cast(McpMapping, load_mapping(airline.mapping or DEFAULT_MAPPING, required=required))
        pool = transport or httpx2.AsyncHTTPTransport(
            limits=httpx2.Limits(max_connections=airline.concurrency, max_keepalive_connections=airline.concurrency),
            trust_env=False,
        )
        # Every POST gets its call's budget from `AttributingTransport`; this timeout bounds only what no
        # call owns (the SDK's GET stream and closing DELETE).
        self._http = httpx2.AsyncClient(
            transport=AttributingTransport(pool),
            headers=self._mapping.auth_headers(api_key(airline).get_secret_value()),
            timeout=httpx2.Timeout(_UNOWNED_TIMEOUT_S, connect=2.0),
            follow_redirects=False,
            trust_env=False,
        )
        self._sessions = McpSessionPool(
            self._open_client, size=max(1, airline.concurrency), max_age_s=max_session_age_s, name=airline.code
        )
        self.pin_check = PinCheck(
            airline.code,
            (self._mapping.TOOL_NAME,),
            pins or PinBook(airline.mcp_pins or DEFAULT_PINS_FILE),
            check_s=pin_check_s,
        )

    @property
    def sessions(self) -> McpSessionPool:
        """The connector's session pool (its counters are for tests and diagnostics)."""
        return self._sessions

    def _open_client(self) -> Client:
        transport = streamable_http_client(self._airline.endpoint, http_client=self._http)
        return Client(transport, cache=None)

    async def search(self, criteria: SearchCriteria, *, request_id: str, timeout_s: float) -> list[Offer]:
        async def call() -> list[Offer]:
            arguments = self._mapping.tool_arguments(criteria)
            if arguments is None:
                return []
            result = await self._call_tool(arguments, timeout_s)
            return self._mapping.parse(
                _tool_content(self._airline.code, result), airline=self._airline.code, criteria=criteria
            )

        # No slack: cancelling a call stops its wait for the answer; its POST runs in the session owner's
        # task group, bounded by httpx2's own timeouts (`AttributingTransport`). At the 2026 protocol the
        # SDK also aborts that POST; httpx2's pool survives it (tests/unit/test_connector_mcp_pool.py).
        return await guarded_search(
            self._airline, self.kind, request_id=request_id, timeout_s=timeout_s, search=call, slack_s=0.0
        )

    async def tools(self, *, timeout_s: float) -> list[PinnedTool]:
        """The tools this connector calls, as the airline's server lists them now (for approving a pin)."""
        record = CallRecord(deadline=asyncio.get_running_loop().time() + timeout_s)
        token = CALL.set(record)
        try:
            session = await self._sessions.acquire(record)
            reusable = False
            try:
                client = await asyncio.wait_for(self._sessions.wait_open(session), timeout_s)
                listed = await asyncio.wait_for(self._list_tools(client, timeout_s), timeout_s)
                reusable = True
                return listed
            except Exception as exc:
                error = _classify(self._airline.code, exc, record)
                if error is None:
                    raise
                raise error from exc
            finally:
                self._sessions.release(session, reusable=reusable)
        finally:
            CALL.reset(token)

    async def _list_tools(self, client: Client, timeout_s: float) -> list[PinnedTool]:
        listed: list[Any] = []
        cursor: str | None = None
        for _ in range(_MAX_TOOL_PAGES):
            # Never from a cache: the point is what the server says now.
            page = await client.list_tools(cursor=cursor, cache_mode="bypass")
            listed.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return pinned_tools(listed, self.pin_check.tool_names)

    async def _verify_tools(self, session: PooledSession, client: Client, timeout_s: float) -> None:
        """List the session's tools and compare them with the pin when due (raises AirlineQuarantined)."""
        if not self.pin_check.due(session.verified_pin, session.verified_at):
            return
        listed = await self._list_tools(client, timeout_s)
        session.verified_pin = self.pin_check.verify(listed)
        session.verified_at = asyncio.get_running_loop().time()

    async def _call_tool(self, arguments: dict[str, Any], timeout_s: float) -> CallToolResult:
        refusal = self.pin_check.refusal()
        if refusal is not None:
            raise refusal
        record = CallRecord(deadline=asyncio.get_running_loop().time() + timeout_s)
        token = CALL.set(record)
        try:
            session = await self._sessions.acquire(record)
            # Kept unless the call shows the session itself is in doubt; a timed-out or cancelled call
            # leaves it consistent (the SDK drops the late answer and sends the server a cancel).
            reusable = True
            try:
                client = await self._sessions.wait_open(session)
                await self._verify_tools(session, client, timeout_s)
                return await client.call_tool(self._mapping.TOOL_NAME, arguments, read_timeout_seconds=timeout_s)
            except Exception as exc:
                error = _classify(self._airline.code, exc, record)
                reusable = _session_survives(error, record)
                if error is None:
                    raise
                raise error from exc
            finally:
                self._sessions.release(session, reusable=reusable)
        finally:
            CALL.reset(token)

    async def aclose(self) -> None:
        await self._sessions.aclose()
        await self._http.aclose()


def _session_survives(error: AirlineError | None, record: CallRecord) -> bool:
    """Whether a failed call leaves its session usable: the server answered, and not with 404 (unknown session).

    A refused or reset connection may mean a restarted server that forgot a stateful session: reopen.
    """
    if isinstance(record.transport_error, httpx2.TimeoutException):
        return True
    if record.transport_error is not None or record.error_status == 404:
        return False
    return isinstance(error, AirlineRejected | AirlineThrottled | AirlineTimeout) or (
        isinstance(error, AirlineUnavailable) and record.error_status is not None
    )


def _factory(airline: Airline, http: httpx.AsyncClient) -> AirlineConnector:
    # Its own httpx2 pool, connecting only to addresses the registry allows the airline (connectors/egress.py).
    return McpConnector(airline, http, transport=guarded_mcp_transport(airline))


register_kind(ConnectorKind.MCP, _factory)
