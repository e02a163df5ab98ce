"""The airline-MCP connector kind: the airline's own MCP server's shopping and order tools over streamable HTTP,
and its order-change feed.

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

Orders (`connectors.orders.OrderConnector`): ``price``, ``create_order``, ``find_order``, ``retrieve_order`` and
``cancel_order`` call the mapping's order tools through the same session pool, pin check and classification;
the pin covers every tool the connector calls (search and orders), so a change to any of them quarantines the
airline. An order tool's refusal (``isError``) is mapped by the mapping's ``order_refusal`` (offer unavailable,
expired, sold out, price changed, refused, order not found); one not in the airline's refusal form is
``AirlineRejected``. A create's refusal text is scrubbed of the passengers' own values before it is used, and a
create's errors carry no chained cause, so no passenger data reaches a message, a log line or a traceback.

Airline-initiated changes (`connectors.orders.OrderWatcher`): ``watch_orders`` keeps one session of its own
(outside the pool: it lasts) subscribed with ``subscriptions/listen`` (protocol 2026-07-28, which the SDK's client
negotiates with a modern server; the legacy ``resources/subscribe`` is not used) to the mapping's feed resource
(``CHANGES_URI``), a numbered list of the airline's recent changes. On subscribing, and on every
``notifications/resources/updated`` for it, it reads the feed after the last sequence number it handed on and
calls ``on_change`` for each newer change in order, moving its cursor only once ``on_change`` returned: each
change once, none lost across a reconnect while the feed still holds it (a gap, or a feed that started over, is
logged; after a new ``epoch`` it reads from the start). The first connection hands on every change the feed still
holds (at-least-once across restarts of our process; the order events are keyed by order, so a repeat is
harmless). A dropped stream or failed attempt reconnects with backoff, each attempt bounded in time; a
quarantined airline's feed is not read until its tools are approved again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, TypeVar, cast

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    INVALID_PARAMS,
    REQUEST_TIMEOUT,
    CallToolResult,
    ReadResourceResult,
    TextContent,
    TextResourceContents,
)
from structlog.contextvars import bound_contextvars

from connectors.airlines import load_mapping
from connectors.base import AirlineConnector, register_kind
from connectors.egress import guarded_mcp_transport
from connectors.kinds import normalise as N
from connectors.kinds.boundary import MAPPING_ERRORS, api_key, guarded_search
from connectors.kinds.http_call import error_for_status
from connectors.kinds.mcp_pool import CALL, AttributingTransport, CallRecord, McpSessionPool, PooledSession
from connectors.orders import OrderChange
from connectors.pins import DEFAULT_PINS_FILE, PinBook, PinCheck, PinnedTool, pinned_tools
from jetbridge.airlines import Airline, ConnectorKind
from jetbridge.errors import (
    AirlineBadResponse,
    AirlineError,
    AirlineRejected,
    AirlineThrottled,
    AirlineTimeout,
    AirlineUnavailable,
    JetbridgeError,
)
from jetbridge.log import get_logger
from jetbridge.passengers import OrderParty
from schemas.models import Offer, OrderState, PricedOffer, SearchCriteria

__all__ = ["DEFAULT_MAPPING", "PIN_CHECK_S", "ChangePage", "McpConnector", "McpMapping"]

log = get_logger("connectors")
_T = TypeVar("_T")

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
# The order watch (see the module docstring): each attempt to connect, check the tools and subscribe has this
# long; a read of the feed this long; a subscription may be silent this long (the SDK's server pings an idle
# stream every 15 s) before it counts as lost; reconnects back off from the first delay to the last.
WATCH_CONNECT_S = 5.0
WATCH_READ_S = 5.0
WATCH_IDLE_S = 40.0
WATCH_BACKOFF_S = (0.2, 5.0)
# A subscription that lasted this long was healthy: the next reconnect starts from the first delay again.
_WATCH_HEALTHY_S = 30.0
_MAX_FEED_PAGES = 100


@dataclass(frozen=True, slots=True)
class ChangePage:
    """One read of an airline's change feed: its epoch, latest and oldest kept sequence numbers, and the changes
    after the cursor in order (None for an entry that breaks the contract: skipped)."""

    epoch: str
    head: int
    oldest: int
    changes: list[tuple[int, OrderChange | None]] = field(default_factory=list)


class McpMapping(Protocol):
    """What an airline-MCP mapping module provides (module-level names)."""

    TOOL_NAME: str
    PRICE_TOOL: str
    CREATE_TOOL: str
    FIND_TOOL: str
    GET_TOOL: str
    CANCEL_TOOL: str
    CHANGES_URI: str

    def auth_headers(self, key: str) -> dict[str, str]: ...

    def tool_arguments(self, criteria: SearchCriteria) -> dict[str, Any] | None:
        """The tool's arguments, or None when the airline sells nothing that could match."""
        ...

    def parse(self, content: Any, *, airline: str, criteria: SearchCriteria) -> list[Offer]: ...

    def price_arguments(self, offer_id: str) -> dict[str, Any]: ...

    def create_arguments(
        self, offer_id: str, party: OrderParty, *, accepted_total: Decimal, client_reference: str
    ) -> dict[str, Any]: ...

    def find_arguments(self, client_reference: str) -> dict[str, Any]: ...

    def order_arguments(self, order_id: str) -> dict[str, Any]: ...

    def parse_priced(self, content: Any, *, airline: str) -> PricedOffer: ...

    def parse_order(self, content: Any, *, airline: str) -> OrderState | None: ...

    def order_refusal(self, content: Any, *, airline: str) -> JetbridgeError | None:
        """The error for the airline's refusal; None when the content is not one."""
        ...

    def changes_uri(self, after: int) -> str: ...

    def parse_changes(self, content: Any, *, airline: str) -> ChangePage: ...


_REQUIRED = (
    "TOOL_NAME",
    "PRICE_TOOL",
    "CREATE_TOOL",
    "FIND_TOOL",
    "GET_TOOL",
    "CANCEL_TOOL",
    "CHANGES_URI",
    "auth_headers",
    "tool_arguments",
    "parse",
    "price_arguments",
    "create_arguments",
    "find_arguments",
    "order_arguments",
    "parse_priced",
    "parse_order",
    "order_refusal",
    "changes_uri",
    "parse_changes",
)


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


def _error_text(result: CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))[:_MAX_TEXT_BYTES]


def _redactor(values: Iterable[str]) -> Callable[[str], str]:
    """Removes each of ``values`` (and its JSON-escaped form) from a text, whatever its case."""
    forms = {form for value in values if len(value) >= 2 for form in (value, json.dumps(value)[1:-1])}
    if not forms:
        return lambda text: text
    pattern = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)), re.IGNORECASE)
    return lambda text: pattern.sub("<passenger data>", text)


def _party_values(party: OrderParty) -> list[str]:
    values = [party.contact.email, party.contact.phone]
    for passenger in party.passengers:
        values += [passenger.given_name, passenger.family_name, passenger.date_of_birth.isoformat()]
        if passenger.document is not None:
            values.append(passenger.document.number)
    return values


def _describe(exc: BaseException) -> str:
    # Never the exception's text: a validation error quotes what it checked (airline text, or what we sent).
    count = getattr(exc, "error_count", None)
    if callable(count):
        return f"{type(exc).__name__}: {count()} invalid field(s)"
    if isinstance(exc, N.UntrustedValue):
        return f"{type(exc).__name__}: {exc.field}"
    return type(exc).__name__


def _resource_text(airline: str, result: ReadResourceResult) -> Any:
    for block in result.contents:
        if isinstance(block, TextResourceContents):
            return N.decode_json(airline, block.text.encode()[:_MAX_TEXT_BYTES])
    raise AirlineBadResponse(f"{airline}: change feed has no text content")


@dataclass
class _FeedCursor:
    """Where a watch is in the airline's change feed: the feed's epoch and the last sequence handed on."""

    epoch: str | None = None
    seq: int = 0


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
        self._airline = airline
        name = airline.mapping or DEFAULT_MAPPING
        self._mapping = mapping or cast(McpMapping, load_mapping(name, required=_REQUIRED))
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
        m = self._mapping
        self.pin_check = PinCheck(
            airline.code,
            (m.TOOL_NAME, m.PRICE_TOOL, m.CREATE_TOOL, m.FIND_TOOL, m.GET_TOOL, m.CANCEL_TOOL),
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
            result = await self._call_tool(self._mapping.TOOL_NAME, arguments, timeout_s)
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

    async def _call_tool(self, name: str, arguments: dict[str, Any], timeout_s: float) -> CallToolResult:
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
                return await client.call_tool(name, arguments, read_timeout_seconds=timeout_s)
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

    # ---- orders (connectors.orders.OrderConnector) ----
    async def price(self, offer_id: str, *, request_id: str, timeout_s: float) -> PricedOffer:
        m = self._mapping

        async def call() -> PricedOffer:
            content = await self._order_tool(m.PRICE_TOOL, m.price_arguments(offer_id), timeout_s)
            return m.parse_priced(content, airline=self._airline.code)

        return await self._guarded_order("price", request_id=request_id, timeout_s=timeout_s, call=call)

    async def create_order(
        self,
        offer_id: str,
        party: OrderParty,
        *,
        accepted_total: Decimal,
        currency: str,
        client_reference: str,
        request_id: str,
        timeout_s: float,
    ) -> OrderState:
        """Book the offer; the airline prices it in the offer's currency (``currency`` is the caller's record)."""
        m = self._mapping
        redact = _redactor(_party_values(party))

        async def call() -> OrderState:
            arguments = m.create_arguments(
                offer_id, party, accepted_total=accepted_total, client_reference=client_reference
            )
            content = await self._order_tool(m.CREATE_TOOL, arguments, timeout_s, redact=redact)
            order = m.parse_order(content, airline=self._airline.code)
            if order is None:
                raise AirlineBadResponse(f"{self._airline.code}: create_order answered no order")
            return order

        return await self._guarded_order(
            "create", request_id=request_id, timeout_s=timeout_s, call=call, personal=True, currency=currency
        )

    async def find_order(self, client_reference: str, *, request_id: str, timeout_s: float) -> OrderState | None:
        m = self._mapping

        async def call() -> OrderState | None:
            content = await self._order_tool(m.FIND_TOOL, m.find_arguments(client_reference), timeout_s)
            return m.parse_order(content, airline=self._airline.code)

        return await self._guarded_order("find", request_id=request_id, timeout_s=timeout_s, call=call)

    async def retrieve_order(self, order_id: str, *, request_id: str, timeout_s: float) -> OrderState:
        return await self._order_by_id("retrieve", self._mapping.GET_TOOL, order_id, request_id, timeout_s)

    async def cancel_order(self, order_id: str, *, request_id: str, timeout_s: float) -> OrderState:
        return await self._order_by_id("cancel", self._mapping.CANCEL_TOOL, order_id, request_id, timeout_s)

    async def _order_by_id(
        self, operation: str, tool: str, order_id: str, request_id: str, timeout_s: float
    ) -> OrderState:
        m = self._mapping

        async def call() -> OrderState:
            content = await self._order_tool(tool, m.order_arguments(order_id), timeout_s)
            order = m.parse_order(content, airline=self._airline.code)
            if order is None:
                raise AirlineBadResponse(f"{self._airline.code}: {tool} answered no order")
            return order

        return await self._guarded_order(operation, request_id=request_id, timeout_s=timeout_s, call=call)

    async def _order_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        timeout_s: float,
        *,
        redact: Callable[[str], str] | None = None,
    ) -> Any:
        """Call an order tool (pool, pin, classification as for search); a refusal raises its mapped error."""
        result = await self._call_tool(name, arguments, timeout_s)
        if not result.is_error:
            return _tool_content(self._airline.code, result)
        text = _error_text(result)
        if redact is not None:
            text = redact(text)
        try:
            content: Any = N.decode_json(self._airline.code, text.encode())
        except AirlineBadResponse:
            content = None
        refusal = self._mapping.order_refusal(content, airline=self._airline.code)
        if refusal is not None:
            raise refusal
        raise AirlineRejected(
            f"{self._airline.code}: {name} refused: {N.clean_text(text, 'tool error', 160) or 'no message'}"
        )

    async def _guarded_order(
        self,
        operation: str,
        *,
        request_id: str,
        timeout_s: float,
        call: Callable[[], Awaitable[_T]],
        personal: bool = False,
        currency: str | None = None,
    ) -> _T:
        """The order calls' boundary: the budget, only `jetbridge.errors` out, one log line for a failure.

        ``personal``: the call carries passenger data, so what leaves has no chained cause (nothing the
        client library or the airline said about the arguments can reach a traceback)."""
        code = self._airline.code
        started = time.perf_counter()
        with bound_contextvars(airline=code, request_id=request_id, connector_kind=self.kind, operation=operation):
            error: JetbridgeError
            try:
                if timeout_s <= 0:
                    raise AirlineTimeout(f"{code}: no time left for the call")
                result = await asyncio.wait_for(call(), timeout_s)
            except JetbridgeError as exc:
                error = exc
            except TimeoutError:
                error = AirlineTimeout(f"{code}: no answer within {timeout_s:.2f}s")
            except MAPPING_ERRORS as exc:
                error = AirlineBadResponse(f"{code}: {operation} answer breaks the contract ({_describe(exc)})")
            except Exception as exc:  # noqa: BLE001 - the boundary: only the error tree leaves it
                log.error("airline order call failed unexpectedly", error_type=type(exc).__name__)
                error = AirlineError(f"{code}: unexpected {type(exc).__name__}")
            else:
                if currency is not None and isinstance(result, OrderState) and result.currency != currency:
                    log.warning("order priced in another currency", currency=result.currency, accepted=currency)
                return result
            log.warning(
                "airline order call failed",
                error_code=error.code,
                error=error.message,
                latency_ms=round((time.perf_counter() - started) * 1000),
            )
            if personal:
                error.__cause__ = None
                error.__suppress_context__ = True
                raise error from None
            raise error

    # ---- airline-initiated changes (connectors.orders.OrderWatcher) ----
    async def watch_orders(self, on_change: Callable[[OrderChange], Awaitable[None]]) -> None:
        """Hand on every change the airline makes to an order, each once, until cancelled (see module doc)."""
        loop = asyncio.get_running_loop()
        cursor = _FeedCursor()
        delay = WATCH_BACKOFF_S[0]
        with bound_contextvars(airline=self._airline.code, connector_kind=self.kind):
            while True:
                started = loop.time()
                refusal = self.pin_check.refusal()
                if refusal is None:
                    try:
                        await self._watch_once(cursor, on_change)
                        log.info("order change subscription ended by the airline; subscribing again")
                    except Exception as exc:  # noqa: BLE001 - a watch outlives its connections' failures
                        log.warning("order change subscription lost", reason=self._watch_failure(exc))
                if loop.time() - started >= _WATCH_HEALTHY_S:
                    delay = WATCH_BACKOFF_S[0]
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not a secret
                delay = min(delay * 2, WATCH_BACKOFF_S[1])

    def _watch_failure(self, exc: Exception) -> str:
        if isinstance(exc, JetbridgeError):
            return exc.code
        error = _classify(self._airline.code, exc, CallRecord(deadline=0.0))
        return error.code if error is not None else type(exc).__name__

    async def _watch_once(self, cursor: _FeedCursor, on_change: Callable[[OrderChange], Awaitable[None]]) -> None:
        """One connection: connect, check the tools, subscribe, catch up, then follow until the stream ends."""
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(WATCH_CONNECT_S):
                token = CALL.set(CallRecord(deadline=loop.time() + WATCH_CONNECT_S))
                try:
                    client = await stack.enter_async_context(self._open_client())
                    self.pin_check.verify(await self._list_tools(client, WATCH_CONNECT_S))
                finally:
                    CALL.reset(token)
                # The subscription's POST lasts: attributed, never buffered, allowed to be silent WATCH_IDLE_S.
                token = CALL.set(
                    CallRecord(deadline=loop.time() + WATCH_CONNECT_S, streaming=True, idle_s=WATCH_IDLE_S)
                )
                try:
                    subscription = await stack.enter_async_context(
                        client.listen(resource_subscriptions=[self._mapping.CHANGES_URI])
                    )
                finally:
                    CALL.reset(token)
            log.info("subscribed to the airline's order changes", after=cursor.seq)
            await self._catch_up(client, cursor, on_change)
            async for _event in subscription:
                await self._catch_up(client, cursor, on_change)

    async def _catch_up(
        self, client: Client, cursor: _FeedCursor, on_change: Callable[[OrderChange], Awaitable[None]]
    ) -> None:
        """Read the feed after the cursor, page by page, handing on each change once."""
        code = self._airline.code
        for _ in range(_MAX_FEED_PAGES):
            after = cursor.seq
            token = CALL.set(CallRecord(deadline=asyncio.get_running_loop().time() + WATCH_READ_S))
            try:
                result = await asyncio.wait_for(
                    client.read_resource(self._mapping.changes_uri(after), cache_mode="bypass"), WATCH_READ_S
                )
            finally:
                CALL.reset(token)
            page = self._mapping.parse_changes(_resource_text(code, result), airline=code)
            if cursor.epoch != page.epoch:
                if cursor.epoch is not None:
                    log.warning("the airline's change feed started over; reading it from the start")
                cursor.epoch, cursor.seq = page.epoch, 0
                if after:
                    continue  # that page was read after a sequence number of the old feed
            elif page.oldest > cursor.seq + 1 and page.head >= page.oldest:
                log.warning("order changes lost: the feed no longer holds them", missed=page.oldest - cursor.seq - 1)
            for seq, change in page.changes:
                if seq <= cursor.seq:
                    continue
                if change is None:
                    log.warning("order change skipped: it breaks the contract", seq=seq)
                else:
                    await on_change(change)
                cursor.seq = seq
            if not page.changes or cursor.seq >= page.head:
                return

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
