"""A simulated Finnair that sells through its own MCP server (streamable HTTP): shopping, orders, order changes.

Typed arguments in; structured content out in Finnair's own shape (snake_case, ``bounds`` of ``flights``,
prices as JSON numbers ``{"amount", "currency"}``). Tools:

- ``search_flights``: shopping; every offer it sells is remembered on the airline's order desk
  (`infra.simulators.orders.OrderDesk`, ``state.orders``) so it can be priced and booked;
- ``price_offer(offer_id)``, ``create_order(offer_id, passengers, contact, accepted_total, client_reference)``,
  ``find_order(client_reference)`` (``{"order": null}`` when none), ``get_order(order_id)``,
  ``cancel_order(order_id)``: the desk's operations, answered ``{"order": {...}}`` or the priced offer.

Refusals are tool errors (``isError``) whose text is Finnair's error JSON, ``{"error": {"code", "message"}}``
(a price change adds ``"price"``: the new total); the codes are the desk's (``offer_not_found``, ``offer_expired``,
``sold_out``, ``price_changed``, ``order_failed``, ``order_not_found``) plus ``travel_document_required``.
Shopping's own refusals stay plain text tool errors; a ``malformed`` fault answers a successful-looking result
whose only content is garbage text. Faults on orders (``order_fault``, ``seats_left``, ``price_change_pct``) are
the desk's; ``timeout_after_create`` makes the order and answers only after ``slow_ms``.

Airline-initiated changes (control API: ``POST /airlines/AY/orders/{id}/change``) are published as ONE feed
resource, `CHANGES_URI` (``finnair://orders/changes``): a JSON list of the recent changes, each with a sequence
number (``seq``, rising by one per change, never reused while the simulator runs), the order as it then stood
(no personal data) and the change's type and reason; ``finnair://orders/changes?after=N`` reads those after
``N``. The feed says its ``epoch`` (a new one when the feed starts from nothing again), ``head`` (the latest
``seq``) and ``oldest`` (the oldest still kept; `FEED_SIZE` are kept), so a reader that lost its stream catches
up by sequence and knows when it cannot. Every change publishes ``notifications/resources/updated`` for the
feed URI to ``subscriptions/listen`` streams (protocol 2026-07-28, the protocol the SDK's client negotiates with
this server). The server is stateless (one POST per request), so the legacy ``resources/subscribe``, which
needs a standing session stream, is not offered. The feed outlives a restart of the airline's listener (it is
kept per order desk), as a real airline's would.

Every tool's description can be replaced in-process with `describe_tool` (tests), and the search tool's
through the control API (``tool_description``), as a redeployed or tampered server would change them.
"""

from __future__ import annotations

import json
import secrets
import weakref
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp_types import CallToolResult, TextContent
from mcp_types import Tool as McpTool
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp

from infra.simulators.faults import AirlineGate, AirlineState, is_mcp_tool_call
from infra.simulators.orders import OrderDesk, OrderProblem, PriceMoved, Quote, SimOrder
from infra.simulators.schedule import AIRCRAFT_NAMES, CabinName, FareOffer, Flight, Schedule, ShopQuery

__all__ = [
    "CHANGES_URI",
    "FEED_SIZE",
    "MCP_PATH",
    "ORDER_TOOLS",
    "TOOL_DESCRIPTION",
    "TOOL_NAME",
    "build_app",
    "build_server",
    "describe_tool",
]

MCP_PATH = "/mcp"
TOOL_NAME = "search_flights"
TOOL_DESCRIPTION = "Search Finnair flights and fares for one trip."
ORDER_TOOLS: dict[str, str] = {
    "price_offer": "Confirm the current price and availability of a Finnair offer before booking it.",
    "create_order": (
        "Book a priced Finnair offer for its passengers. Refused when the price is above accepted_total. "
        "client_reference is the buyer's own reference (find_order looks it up); it is not deduplicated."
    ),
    "find_order": "Find the latest Finnair order made with the buyer's client_reference.",
    "get_order": "Retrieve a Finnair order by its booking reference.",
    "cancel_order": "Cancel a Finnair order by its booking reference.",
}
CHANGES_URI = "finnair://orders/changes"
FEED_SIZE = 1000
TravelClass = Literal["economy", "premium_economy", "business"]
_CABINS: dict[str, CabinName] = {"economy": "economy", "premium_economy": "premium", "business": "business"}
_CLASS_OUT: dict[CabinName, str] = {v: k for k, v in _CABINS.items()}
_CHANGE_TYPES = {"airline_cancellation": "cancellation", "schedule_change": "schedule_change"}
_FEED_PAGE = 200


def _minutes_iso(minutes: int) -> str:
    return f"PT{minutes // 60}H{minutes % 60}M"


def _money(amount: Decimal, currency: str) -> dict[str, Any]:
    return {"amount": float(amount), "currency": currency}


def _flight(flight: Flight) -> dict[str, Any]:
    return {
        "flight_number": flight.designator,
        "operating_carrier": flight.carrier,
        "departure": {"airport": flight.origin, "local_time": flight.departure.isoformat(timespec="minutes")},
        "arrival": {"airport": flight.destination, "local_time": flight.arrival.isoformat(timespec="minutes")},
        "aircraft_code": flight.aircraft,
        "aircraft_name": AIRCRAFT_NAMES.get(flight.aircraft),
    }


def _offer(offer: FareOffer) -> dict[str, Any]:
    return {
        "offer_id": offer.offer_id,
        "fare_family": offer.brand,
        "travel_class": _CLASS_OUT[offer.cabin],
        "price": _money(offer.total, offer.currency),
        "valid_until": offer.expires_at.astimezone(UTC).isoformat(timespec="seconds"),
        "bounds": [
            {
                "bound_type": "outbound" if i == 0 else "inbound",
                "duration": _minutes_iso(flight.duration_minutes),
                "flights": [_flight(flight)],
            }
            for i, flight in enumerate(offer.journeys)
        ],
    }


def _priced(quote: Quote) -> dict[str, Any]:
    offer = quote.offer
    return {
        "offer_id": offer.offer_id,
        "price": _money(quote.total, offer.currency),
        "previous_price": _money(quote.previous_total, offer.currency) if quote.previous_total is not None else None,
        "valid_until": offer.expires_at.astimezone(UTC).isoformat(timespec="seconds"),
        "passenger_count": quote.passenger_count,
        "travel_documents_required": quote.documents_required,
        "flights": [_flight(f) for f in offer.journeys],
    }


def _order(order: SimOrder) -> dict[str, Any]:
    """An order in Finnair's shape, without its passengers' personal data (they are not echoed back)."""
    return {
        "order_id": order.order_id,
        "status": order.status.lower(),
        "offer_id": order.offer.offer_id,
        "price": _money(order.total, order.currency),
        "passenger_count": len(order.passengers),
        "client_reference": order.client_reference,
        "flights": [_flight(f) for f in order.offer.journeys],
        "created_at": order.created_at.isoformat(timespec="seconds"),
        "updated_at": order.updated_at.isoformat(timespec="milliseconds"),
    }


def _answer(payload: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(payload))], structured_content=payload)


def _refusal(code: str, message: str, **extra: Any) -> CallToolResult:
    """Finnair's refusal: a tool error whose text is its error JSON."""
    payload = {"error": {"code": code, "message": message, **extra}}
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(payload))], is_error=True)


def _problem(exc: OrderProblem) -> CallToolResult:
    if isinstance(exc, PriceMoved):
        return _refusal(exc.code, str(exc), price=_money(exc.total, exc.currency))
    return _refusal(exc.code, str(exc))


# ---- what a buyer sends to book (Finnair's names) ----
class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TravelDocumentIn(_Wire):
    document_type: Literal["passport", "national_id"] = "passport"
    number: str = Field(min_length=1, max_length=20)
    issuing_country: str = Field(min_length=2, max_length=2)
    expiry_date: date


class PassengerIn(_Wire):
    first_name: str = Field(min_length=1, max_length=40)
    last_name: str = Field(min_length=1, max_length=40)
    date_of_birth: date
    travel_document: TravelDocumentIn | None = None


class ContactIn(_Wire):
    email: str = Field(min_length=3, max_length=120)
    phone: str = Field(min_length=6, max_length=20)


# ---- the change feed ----
@dataclass
class _ChangeFeed:
    """One airline's recent order changes, numbered; kept per order desk so it outlives a listener restart."""

    epoch: str = field(default_factory=lambda: secrets.token_hex(8))
    head: int = 0
    changes: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=FEED_SIZE))
    # One bus for every server built on this desk: a restarted listener's streams are fed the same way.
    bus: InMemorySubscriptionBus = field(default_factory=InMemorySubscriptionBus)

    async def record(self, order: SimOrder, change: str, reason: str | None) -> None:
        self.head += 1
        self.changes.append(
            {
                "seq": self.head,
                "change_type": _CHANGE_TYPES.get(change, change),
                "reason": reason,
                "changed_at": order.updated_at.isoformat(timespec="milliseconds"),
                "order": _order(order),
            }
        )
        await self.bus.publish(ResourceUpdated(uri=CHANGES_URI))

    def page(self, after: int) -> dict[str, Any]:
        newer = [c for c in self.changes if c["seq"] > after][:_FEED_PAGE]
        return {
            "epoch": self.epoch,
            "head": self.head,
            "oldest": self.changes[0]["seq"] if self.changes else self.head + 1,
            "changes": newer,
        }


_FEEDS: weakref.WeakKeyDictionary[OrderDesk, _ChangeFeed] = weakref.WeakKeyDictionary()
_DESCRIPTIONS: weakref.WeakKeyDictionary[OrderDesk, dict[str, str]] = weakref.WeakKeyDictionary()


def _feed(desk: OrderDesk) -> _ChangeFeed:
    feed = _FEEDS.get(desk)
    if feed is None:
        feed = _FEEDS[desk] = _ChangeFeed()
        desk.listeners.append(feed.record)
    return feed


def describe_tool(desk: OrderDesk, name: str, description: str | None) -> None:
    """Replace what the airline's server says tool ``name`` does (None: the original), as a redeployment would.

    The airline is named by its order desk (``Simulators.orders(code)``), which its servers share."""
    overrides = _DESCRIPTIONS.setdefault(desk, {})
    if description is None:
        overrides.pop(name, None)
    else:
        overrides[name] = description


class _FinnairServer(MCPServer):
    """Lists its tools with the descriptions the control API (search) or `describe_tool` set, if any."""

    def __init__(self, state: AirlineState, feed: _ChangeFeed) -> None:
        super().__init__(
            "finnair-sim", instructions="Finnair flight shopping and orders (simulated).", subscriptions=feed.bus
        )
        self._state = state

    async def list_tools(self) -> list[McpTool]:
        tools = await super().list_tools()
        overrides = dict(_DESCRIPTIONS.get(self._state.orders, {}))
        if self._state.config.tool_description is not None:
            overrides[TOOL_NAME] = self._state.config.tool_description
        if not overrides:
            return tools
        return [t.model_copy(update={"description": overrides[t.name]}) if t.name in overrides else t for t in tools]


def build_server(state: AirlineState, schedule: Schedule) -> MCPServer:
    """Finnair's MCP server: its shopping and order tools, and its order-change feed."""
    desk = state.orders
    feed = _feed(desk)
    server = _FinnairServer(state, feed)

    @server.tool(name=TOOL_NAME, description=TOOL_DESCRIPTION)
    async def search_flights(
        origin: str,
        destination: str,
        departure_date: date,
        return_date: date | None = None,
        adults: int = 1,
        children: int = 0,
        infants: int = 0,
        travel_class: TravelClass = "economy",
        currency: str = "EUR",
    ) -> CallToolResult:
        query = ShopQuery(
            airline=state.code,
            origin=origin.upper()[:3],
            destination=destination.upper()[:3],
            departure_date=departure_date,
            return_date=return_date,
            adults=adults,
            children=children,
            infants=infants,
            cabin=_CABINS[travel_class],
            currency=currency.upper()[:3],
        )
        problems = query.problems(today=datetime.now(UTC).date())
        if problems:
            raise ToolError("; ".join(problems))
        if state.malformed_now():
            # Looks like success, carries nothing usable: no structured content, text that is not JSON.
            return CallToolResult(content=[TextContent(type="text", text="<html><body>502 Bad Gat")])
        offers = schedule.offers(query, now=datetime.now(UTC), ttl_s=state.config.offer_ttl_s)
        desk.remember(offers, query, documents_required=schedule.international(query.origin, query.destination))
        payload = {
            "search_id": f"{query.origin}{query.destination}{query.departure_date:%Y%m%d}",
            "offers": [_offer(o) for o in offers],
        }
        return _answer(payload)

    @server.tool(name="price_offer", description=ORDER_TOOLS["price_offer"])
    async def price_offer(offer_id: str) -> CallToolResult:
        try:
            return _answer(_priced(desk.price(offer_id)))
        except OrderProblem as exc:
            return _problem(exc)

    @server.tool(name="create_order", description=ORDER_TOOLS["create_order"])
    async def create_order(
        offer_id: str,
        passengers: list[PassengerIn],
        contact: ContactIn,
        accepted_total: float,
        client_reference: str | None = None,
    ) -> CallToolResult:
        try:
            quote = desk.price(offer_id)
            if quote.documents_required and any(p.travel_document is None for p in passengers):
                return _refusal(
                    "travel_document_required", "every passenger needs a travel document on this international trip"
                )
            order = await desk.create(
                offer_id,
                passengers=[p.model_dump(mode="json") for p in passengers],
                contact=contact.model_dump(mode="json"),
                client_reference=client_reference,
                accepted_total=Decimal(str(accepted_total)),
            )
        except OrderProblem as exc:
            return _problem(exc)
        return _answer({"order": _order(order)})

    @server.tool(name="find_order", description=ORDER_TOOLS["find_order"])
    async def find_order(client_reference: str) -> CallToolResult:
        order = desk.find(client_reference)
        return _answer({"order": _order(order) if order is not None else None})

    @server.tool(name="get_order", description=ORDER_TOOLS["get_order"])
    async def get_order(order_id: str) -> CallToolResult:
        try:
            return _answer({"order": _order(desk.get(order_id))})
        except OrderProblem as exc:
            return _problem(exc)

    @server.tool(name="cancel_order", description=ORDER_TOOLS["cancel_order"])
    async def cancel_order(order_id: str) -> CallToolResult:
        try:
            return _answer({"order": _order(desk.cancel(order_id))})
        except OrderProblem as exc:
            return _problem(exc)

    @server.resource(
        CHANGES_URI + "{?after}",
        name="order_changes",
        description="Finnair's recent changes to orders, numbered (seq); ?after=N for those after N.",
        mime_type="application/json",
    )
    def order_changes(after: int = 0) -> str:
        return json.dumps(feed.page(after))

    return server


def build_app(state: AirlineState, schedule: Schedule) -> ASGIApp:
    """A fresh streamable-HTTP app (its session manager runs once, so a restart needs a new one)."""
    app = build_server(state, schedule).streamable_http_app(
        streamable_http_path=MCP_PATH, stateless_http=True, json_response=True
    )
    return AirlineGate(app, state, is_business=is_mcp_tool_call)
