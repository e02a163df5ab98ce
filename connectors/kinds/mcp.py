"""The airline-MCP connector kind: call the airline's own MCP server's shopping tool over streamable HTTP.

One short MCP session per search (connect, call the tool, close) inside the search's time budget, so no
background task outlives a call. The SDK speaks through httpx2 (its fork of httpx), so the worker's shared
httpx client cannot carry it: each connector keeps one httpx2 connection pool instead, closed by
`aclose`. The tool's dialect (name, arguments, result shape) lives in a mapping module in
`connectors/airlines/`, like a REST airline's.

Failures, which the SDK reports as (nested) exception groups, are mapped onto the error tree:

    timeout                                  → AirlineTimeout
    connection refused/reset                 → AirlineUnavailable
    HTTP 429, 503 with Retry-After           → AirlineThrottled (the status probe keeps the header)
    HTTP 5xx (seen by the status probe)      → AirlineUnavailable
    HTTP 4xx, tool result with isError       → AirlineRejected
    protocol errors, unusable tool result    → AirlineBadResponse
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INVALID_PARAMS, CallToolResult, TextContent

from connectors.airlines import load_mapping
from connectors.base import AirlineConnector, register_kind
from connectors.kinds import normalise as N
from connectors.kinds.boundary import MAPPING_ERRORS, api_key, guarded_search
from connectors.kinds.http_call import error_for_status
from jetbridge.airlines import Airline
from jetbridge.errors import (
    AirlineBadResponse,
    AirlineError,
    AirlineRejected,
    AirlineTimeout,
    AirlineUnavailable,
)
from schemas.models import Offer, SearchCriteria

__all__ = ["DEFAULT_MAPPING", "McpConnector", "McpMapping"]

# Finnair's tool shape is the only airline-MCP dialect so far; an airline speaking another one names its
# module in the registry's ``mapping`` field.
DEFAULT_MAPPING = "finnair"
_MAX_TEXT_BYTES = 5 * 1024 * 1024


class McpMapping(Protocol):
    """What an airline-MCP mapping module provides (module-level names)."""

    TOOL_NAME: str

    def auth_headers(self, key: str) -> dict[str, str]: ...

    def tool_arguments(self, criteria: SearchCriteria) -> dict[str, Any] | None:
        """The tool's arguments, or None when the airline sells nothing that could match."""
        ...

    def parse(self, content: Any, *, airline: str, criteria: SearchCriteria) -> list[Offer]: ...


class _StatusProbe(httpx2.AsyncBaseTransport):
    """Forwards to the shared pool and remembers the latest POST's error status, which the SDK hides.

    Latest, not first: a legacy server may refuse the discovery probe (4xx) before the SDK falls back
    to the initialize handshake, and that refusal must not colour a later failure.
    """

    def __init__(self, pool: httpx2.AsyncBaseTransport) -> None:
        self._pool = pool
        self.error_status: int | None = None
        self.retry_after: str | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._pool.handle_async_request(request)
        if request.method == "POST":
            failed = response.status_code >= 400
            self.error_status = response.status_code if failed else None
            self.retry_after = response.headers.get("retry-after") if failed else None
        return response

    async def aclose(self) -> None:
        """Leave the pool open: it outlives one call."""


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _classify(airline: str, exc: Exception, probe: _StatusProbe) -> AirlineError | None:
    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, AirlineError):
            return leaf
    if any(isinstance(leaf, TimeoutError | httpx2.TimeoutException) for leaf in leaves):
        return AirlineTimeout(f"{airline}: MCP call timed out")
    if any(isinstance(leaf, httpx2.TransportError) for leaf in leaves):
        kind = next(type(leaf).__name__ for leaf in leaves if isinstance(leaf, httpx2.TransportError))
        return AirlineUnavailable(f"{airline}: {kind}")
    if probe.error_status is not None:
        return error_for_status(airline, probe.error_status, probe.retry_after)
    for leaf in leaves:
        if isinstance(leaf, MCPError):
            if leaf.code == INVALID_PARAMS:
                return AirlineRejected(f"{airline}: MCP server refused the arguments")
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
    ) -> None:
        required = ("TOOL_NAME", "auth_headers", "tool_arguments", "parse")
        self._airline = airline
        self._mapping = mapping or cast(McpMapping, load_mapping(airline.mapping or DEFAULT_MAPPING, required=required))
        self._pool = transport or httpx2.AsyncHTTPTransport(
            limits=httpx2.Limits(max_connections=airline.concurrency, max_keepalive_connections=airline.concurrency),
            trust_env=False,
        )

    async def search(self, criteria: SearchCriteria, *, request_id: str, timeout_s: float) -> list[Offer]:
        async def call() -> list[Offer]:
            arguments = self._mapping.tool_arguments(criteria)
            if arguments is None:
                return []
            result = await self._call_tool(arguments, timeout_s)
            return self._mapping.parse(
                _tool_content(self._airline.code, result), airline=self._airline.code, criteria=criteria
            )

        # No slack: the MCP client runs on httpx2/anyio, not on the httpcore 1.x pool the slack protects,
        # and its read timeout does not cover every wait.
        return await guarded_search(
            self._airline, self.kind, request_id=request_id, timeout_s=timeout_s, search=call, slack_s=0.0
        )

    async def _call_tool(self, arguments: dict[str, Any], timeout_s: float) -> CallToolResult:
        probe = _StatusProbe(self._pool)
        headers = self._mapping.auth_headers(api_key(self._airline).get_secret_value())
        async with httpx2.AsyncClient(
            transport=probe,
            headers=headers,
            timeout=httpx2.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
            follow_redirects=False,
            trust_env=False,
        ) as client:
            try:
                transport = streamable_http_client(self._airline.endpoint, http_client=client)
                async with Client(transport, read_timeout_seconds=timeout_s, cache=None) as session:
                    return await session.call_tool(self._mapping.TOOL_NAME, arguments)
            except Exception as exc:
                error = _classify(self._airline.code, exc, probe)
                if error is None:
                    raise
                raise error from exc

    async def aclose(self) -> None:
        await self._pool.aclose()


def _factory(airline: Airline, http: httpx.AsyncClient) -> AirlineConnector:
    return McpConnector(airline, http)


register_kind("mcp", _factory)
