"""The order tools on the bridge's MCP server: price_offer, create_order, get_order, cancel_order, and one resource
per order (``jetbridge://orders/<order id>``) that subscribed agents hear about when the airline changes it.

The person's confirmation (create_order, cancel_order) is an MCP elicitation made through the SDK's resolvers
(``Resolve``/``Elicit``): on a 2025-11-25 session the SDK sends ``elicitation/create`` during the call; on
2026-07-28 it answers the call with an input-required result and runs the tool when the client calls again with
the person's answer. (``Context.elicit`` inside the tool works only on the first: on 2026-07-28 there is no
back-channel, and it raises ``NoBackChannelError``.) A declined or cancelled confirmation, or a client that cannot
ask (no elicitation capability), books or cancels nothing: the airline is not called at all.

Every call is audited on ``jb.audit.v1`` like a search, with the arguments' SHA-256 taken after the passengers and
contact are reduced to a count: no personal data reaches the audit, not even hashed.
"""

# No `from __future__ import annotations`: the SDK reads the tools' annotations, and the resolvers they name are
# local to add_order_tools.

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Annotated, Any, Protocol

from mcp.server.context import ServerRequestContext
from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    EmptyResult,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    TextContent,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, Field, WithJsonSchema

from jetbridge.errors import ConfirmationDeclined, InvalidInput, JetbridgeError, OverLimit
from jetbridge.log import get_logger
from jetbridge.passengers import Contact, Passenger
from mcp_bridge.boundary import client_id
from mcp_bridge.orders import (
    BOOK_WAIT_S,
    ORDER_GRACE_S,
    ORDER_URI,
    Booking,
    Cancellation,
    OrderResult,
    OrderService,
    PriceResult,
    arguments_digest,
    order_uri,
    result_of,
)
from schemas.models import OrderEvent

__all__ = ["ORDER_TOOLS", "TASK_TOOLS", "Confirmation", "OrderTask", "add_order_tools"]

log = get_logger(__name__)

ORDER_TOOLS = ("price_offer", "create_order", "get_order", "cancel_order")
# The order tools that may run as an MCP task (mcp_bridge/tasks.py). price_offer and get_order ask nothing: a task
# from the start. create_order and cancel_order ask the person first: on 2026-07-28 the call's input-required
# round comes before any task (a task cannot relay an elicitation), and the call that brings the person's answer
# is the one that may run as a task.
TASK_TOOLS = ("price_offer", "get_order", "create_order", "cancel_order")


class OrderTask:
    """An order tool as a task (`mcp_bridge.tasks.TaskTool`): the call runs in the background as it would in the
    foreground. A task whose bridge stopped before the airline answered completes with an error result saying
    what to do: call again, which for a booking or a cancellation is reconciled with the airline first."""

    def __init__(self, tool: str, deadline_ms: int) -> None:
        self.tool = tool
        self.asks = tool in ("create_order", "cancel_order")
        self._deadline = timedelta(milliseconds=deadline_ms) + timedelta(seconds=ORDER_GRACE_S)

    def deferrable(self, params: CallToolRequestParams) -> bool:
        # A tool that asks the person runs as a task only once the answer is there (the input-required round).
        return not self.asks or bool(params.input_responses)

    def running(
        self, ctx: ServerRequestContext[Any, Any], task: object | None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    def changing_until(self, created_at: datetime) -> datetime:
        return created_at + self._deadline

    async def resume(self, state: object) -> CallToolResult:
        if self.asks:
            what = "whether the airline acted is not known here; call it again with the same arguments: Jetbridge "
            text = f"{what}looks the order up at the airline first (code order_outcome_unknown, retriable)"
        else:
            text = "call it again (code backbone_unavailable, retriable)"
        return CallToolResult(
            is_error=True,
            content=[
                TextContent(
                    type="text",
                    text=f"{self.tool}: the bridge running this task stopped before the airline answered; {text}",
                )
            ],
        )


class Confirmation(BaseModel):
    """What the person answers (a form with one box)."""

    confirm: bool = Field(description="Yes, do it.")


class _Audit(Protocol):
    def audit_call(
        self, client_id: str, tool: str, outcome: str, code: str | None, started: float, digest: str
    ) -> None: ...


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic model's JSON schema with its ``$defs`` put in place (a tool's input schema stands alone)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.removeprefix("#/$defs/")]))
            return {k: walk(v) for k, v in node.items() if k != "title"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """Every object in the schema refuses properties it does not list."""
    if schema.get("type") == "object":
        schema["additionalProperties"] = False
    for value in schema.values():
        if isinstance(value, dict):
            _closed(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    _closed(item)
    return schema


_PASSENGER = _closed(_inline(Passenger.model_json_schema()))
PASSENGERS_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "maxItems": 9,
    "items": _PASSENGER,
    "description": "Who travels, one entry per passenger of the priced offer: given_name and family_name as on "
    "the travel document, date_of_birth (YYYY-MM-DD), document (passport or national_id: number, "
    "issuing_country, expires_on) when price_offer says documents_required. Personal data: sent to the airline "
    "only, never logged.",
}
CONTACT_SCHEMA = _closed(_inline(Contact.model_json_schema())) | {
    "description": "Whom the airline contacts about the order: email and phone (+ and digits)."
}
OFFER_ID_SCHEMA = {"type": "string", "maxLength": 110, "description": "An offer_id from search_offers (<IATA>:<id>)."}
ORDER_ID_SCHEMA = {"type": "string", "maxLength": 45, "description": "An order_id from create_order (<IATA>:<ref>)."}


def _caller(ctx: Context[Any, Any]) -> str:
    try:
        request = ctx.request_context.request
    except ValueError:
        request = None
    scope = getattr(request, "scope", None)
    return client_id(scope) if scope is not None else "anonymous"


def _tool_error(tool: str, exc: JetbridgeError) -> ToolError:
    if isinstance(exc, InvalidInput):
        return ToolError(f"Invalid argument '{exc.field}': {exc.reason} (code {exc.code})")
    retriable = ""
    if isinstance(exc, OverLimit):
        retriable = f", retriable, retry_after_s {exc.retry_after_s:.0f}"
    elif exc.retriable:
        retriable = ", retriable"
    return ToolError(f"{tool}: {exc.message} (code {exc.code}{retriable})")


def add_order_tools(server: MCPServer, orders: OrderService, audit: _Audit) -> None:
    """Register the order tools and the order resource on ``server``; publish order changes to its subscribers."""

    def audited(tool: str, ctx: Context[Any, Any], arguments: dict[str, Any]) -> tuple[str, float, str]:
        return _caller(ctx), asyncio.get_running_loop().time(), arguments_digest(arguments)

    def refused(tool: str, who: str, started: float, digest: str, exc: JetbridgeError) -> ToolError:
        log.info("order tool refused", tool=tool, error_code=exc.code)
        audit.audit_call(who, tool, exc.code, exc.code, started, digest)
        return _tool_error(tool, exc)

    @server.tool(
        description=(
            "The airline's live price of an offer from search_offers: total for all passengers (taxes included), "
            "whether it changed since the search (and the previous total), until when it holds, and whether "
            "create_order will need travel documents. Price an offer before create_order: the person confirms "
            "this total. An expired or unknown offer is an error: search again."
        )
    )
    async def price_offer(ctx: Context, offer_id: Annotated[Any, WithJsonSchema(OFFER_ID_SCHEMA)]) -> PriceResult:
        who, started, digest = audited("price_offer", ctx, {"offer_id": offer_id})
        try:
            result = await orders.price(who, offer_id)
        except JetbridgeError as exc:
            raise refused("price_offer", who, started, digest, exc) from exc
        audit.audit_call(who, "price_offer", "answered", None, started, digest)
        return result

    async def confirm_booking(
        ctx: Context, offer_id: Any, passengers: Any, contact: Any
    ) -> Elicit[Confirmation] | Booking:
        """Everything before the person is asked; the question itself (or the order already made)."""
        who = _caller(ctx)
        try:
            booking = await orders.prepare_booking(who, offer_id, passengers, contact)
        except JetbridgeError as exc:
            started, digest = (
                asyncio.get_running_loop().time(),
                arguments_digest({"offer_id": offer_id, "passengers": passengers, "contact": contact}),
            )
            raise refused("create_order", who, started, digest, exc) from exc
        if booking.existing is not None:
            return booking
        return Elicit(booking.confirmation(), Confirmation)

    @server.tool(
        description=(
            "Book a priced offer for its passengers. Jetbridge first asks the person (an MCP elicitation) to "
            "confirm what will be booked, for whom, and the total from price_offer; nothing is booked without a "
            "yes. Calling it again with the same offer and passengers never books twice: the order already made "
            "is returned (reconciled). An unknown outcome (order_outcome_unknown) is safe to retry the same way."
        )
    )
    async def create_order(
        ctx: Context,
        offer_id: Annotated[Any, WithJsonSchema(OFFER_ID_SCHEMA)],
        passengers: Annotated[Any, WithJsonSchema(PASSENGERS_SCHEMA)],
        contact: Annotated[Any, WithJsonSchema(CONTACT_SCHEMA)],
        confirmation: Annotated[ElicitationResult[Confirmation], Resolve(confirm_booking)],
    ) -> OrderResult:
        who, started, digest = audited(
            "create_order", ctx, {"offer_id": offer_id, "passengers": passengers, "contact": contact}
        )
        answer: Any = confirmation.data if isinstance(confirmation, AcceptedElicitation) else None
        if isinstance(answer, Booking):
            audit.audit_call(who, "create_order", "reconciled", None, started, digest)
            return await orders.create(answer)
        if not isinstance(answer, Confirmation) or not answer.confirm:
            raise refused(
                "create_order",
                who,
                started,
                digest,
                ConfirmationDeclined(
                    f"the person did not confirm ({getattr(confirmation, 'action', 'no answer')}); nothing was booked"
                ),
            )
        try:
            # Checked again at the moment of booking: the quote and the spend cap as they stand now.
            booking = await orders.prepare_booking(who, offer_id, passengers, contact)
            result = await orders.create(booking)
        except JetbridgeError as exc:
            raise refused("create_order", who, started, digest, exc) from exc
        audit.audit_call(who, "create_order", "booked", None, started, digest)
        return result

    @server.tool(
        description=(
            "An order your client made, as the airline holds it now (status confirmed, changed by the airline, or "
            "cancelled; flights; total). Only your client's orders are found."
        )
    )
    async def get_order(ctx: Context, order_id: Annotated[Any, WithJsonSchema(ORDER_ID_SCHEMA)]) -> OrderResult:
        who, started, digest = audited("get_order", ctx, {"order_id": order_id})
        try:
            result = await orders.get(who, order_id)
        except JetbridgeError as exc:
            raise refused("get_order", who, started, digest, exc) from exc
        audit.audit_call(who, "get_order", "answered", None, started, digest)
        return result

    async def confirm_cancel(ctx: Context, order_id: Any) -> Elicit[Confirmation] | Cancellation:
        who = _caller(ctx)
        try:
            cancellation = await orders.prepare_cancel(who, order_id)
        except JetbridgeError as exc:
            started, digest = asyncio.get_running_loop().time(), arguments_digest({"order_id": order_id})
            raise refused("cancel_order", who, started, digest, exc) from exc
        if cancellation.order.order.status.value == "CANCELLED":
            return cancellation  # nothing to ask: it is cancelled already
        return Elicit(cancellation.confirmation(), Confirmation)

    @server.tool(
        description=(
            "Cancel an order your client made, after the person confirms (an MCP elicitation); the airline's fare "
            "rules decide any refund. Cancelling a cancelled order returns it as it is."
        )
    )
    async def cancel_order(
        ctx: Context,
        order_id: Annotated[Any, WithJsonSchema(ORDER_ID_SCHEMA)],
        confirmation: Annotated[ElicitationResult[Confirmation], Resolve(confirm_cancel)],
    ) -> OrderResult:
        who, started, digest = audited("cancel_order", ctx, {"order_id": order_id})
        answer: Any = confirmation.data if isinstance(confirmation, AcceptedElicitation) else None
        try:
            if isinstance(answer, Cancellation):
                result = await orders.cancel(answer)
            elif isinstance(answer, Confirmation) and answer.confirm:
                result = await orders.cancel(await orders.prepare_cancel(who, order_id))
            else:
                raise ConfirmationDeclined("the person did not confirm; nothing was cancelled")
        except JetbridgeError as exc:
            raise refused("cancel_order", who, started, digest, exc) from exc
        audit.audit_call(who, "cancel_order", "cancelled", None, started, digest)
        return result

    @server.resource(
        ORDER_URI,
        name="order",
        description="An order your client made, as Jetbridge last heard of it (subscribe to hear of changes).",
        mime_type="application/json",
    )
    async def order_resource(order_id: str, ctx: Context) -> str:
        who = _caller(ctx)
        event = orders.book.get(order_id)
        if event is None or event.client_id != who:
            raise ValueError(f"no order {order_id[:45]} made by your client")
        return OrderResultView.of(event).model_dump_json()

    # 2026-07-28: subscriptions/listen streams, fed through the server's bus (the SDK names no public accessor).
    bus = server._subscriptions
    sdk_listen = server._lowlevel_server._request_handlers["subscriptions/listen"].handler

    async def own_order(uri: str, who: str) -> bool:
        order_id = uri.removeprefix(ORDER_URI.format(order_id=""))
        if order_id == uri:
            return False
        # an order made a moment ago through another bridge instance may not have been read yet
        event = orders.book.get(order_id) or await orders.book.wait_for(order_id, BOOK_WAIT_S)
        return event is not None and event.client_id == who

    async def listen(ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams) -> Any:
        """The SDK's listen stream, with only the caller's own orders among its resource subscriptions: another
        client's order is left out of the acknowledged filter (as a resource that does not exist would be), so
        nobody hears when someone else's order changes."""
        scope = getattr(ctx.request, "scope", None)
        who = client_id(scope) if scope is not None else "anonymous"
        asked = params.notifications.resource_subscriptions or []
        if len(asked) > MAX_LISTENED_ORDERS:
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"{len(asked)} resource subscriptions in one listen; at most {MAX_LISTENED_ORDERS}",
            )
        owned = await asyncio.gather(*(own_order(uri, who) for uri in asked))
        kept = [uri for uri, mine in zip(asked, owned, strict=True) if mine]
        if len(kept) < len(asked):
            log.info("listen: resource subscriptions left out", client_id=who, asked=len(asked), kept=len(kept))
        notifications = params.notifications.model_copy(update={"resource_subscriptions": kept or None})
        scoped = params.model_copy(update={"notifications": notifications})
        return await sdk_listen(ctx, scoped)  # the SDK's SubscriptionsListenResult

    server._lowlevel_server.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, listen)
    # 2025-11-25: resources/subscribe, per session, for the orders of the session's own client only.
    legacy: dict[str, set[ServerSession]] = {}

    async def subscribe(ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        uri = str(params.uri)
        event = orders.book.get(uri.removeprefix(ORDER_URI.format(order_id="")))
        scope = getattr(ctx.request, "scope", None)
        if event is None or event.client_id != (client_id(scope) if scope is not None else "anonymous"):
            raise MCPError(code=INVALID_PARAMS, message=f"no order resource {uri[:80]} of your client")
        legacy.setdefault(uri, set()).add(ctx.session)
        return EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
        legacy.get(str(params.uri), set()).discard(ctx.session)
        return EmptyResult()

    server._lowlevel_server.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    server._lowlevel_server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)

    async def tell(uri: str) -> None:
        await bus.publish(ResourceUpdated(uri=uri))
        for session in list(legacy.get(uri, ())):
            try:
                await session.send_resource_updated(uri)
            except Exception as exc:  # noqa: BLE001 - a closed session is forgotten, the others still hear
                legacy[uri].discard(session)
                log.info("order subscriber gone", error=type(exc).__name__)

    def changed(event: OrderEvent) -> None:
        task = asyncio.get_running_loop().create_task(tell(order_uri(event.order_id)))
        _pending.add(task)
        task.add_done_callback(_pending.discard)

    orders.book.subscribe(changed)


_pending: set[asyncio.Task[None]] = set()
# The order resources one subscriptions/listen may name (each is looked up, waiting a moment for a new one).
MAX_LISTENED_ORDERS = 100


class OrderResultView(OrderResult):
    """An order resource's content: the order and what last changed it."""

    change: str
    changed_by: str
    reason: str | None = Field(default=None, description="The airline's reason (untrusted airline text).")

    @classmethod
    def of(cls, event: OrderEvent) -> "OrderResultView":
        base = result_of(event.order_id, event.order)
        return cls(
            **base.model_dump(), change=event.change, changed_by=event.changed_by.value.lower(), reason=event.reason
        )
