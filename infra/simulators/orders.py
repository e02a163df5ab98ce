"""What a simulated airline does with orders, the same for every protocol: its offers, prices, orders and changes.

Each protocol's app (NDC, the two REST shapes, the MCP server) maps its own messages onto one `OrderDesk`, the
airline's order system, kept on its `AirlineState` (``state.orders``):

- ``remember``: the shop handler records every offer it sold, so it can be priced and booked later;
- ``price``: the live price of a known offer (``OfferGone`` when unknown or expired, ``SoldOut`` when no seats
  are left); with ``price_change_pct`` set, prices move by that much and the previous total is reported;
- ``create``: makes an order for the offer's passengers at a total no higher than the one the buyer accepted
  (``PriceMoved`` otherwise). Like most airline systems it does **not** deduplicate: the same client reference
  twice makes two orders (avoiding that is the buyer's job: ``find`` by reference first). Faults (control API):
  ``order_fault = "fail"`` refuses, ``"timeout_after_create"`` makes the order and then answers only after
  ``slow_ms`` (the caller times out not knowing it was made); ``seats_left`` runs out;
- ``find`` (by the client reference), ``get``, ``cancel``;
- ``airline_change``: the airline changes an order on its own (a control call: cancellation, schedule change)
  and tells every listener (each protocol pushes it its own way: a webhook, an MCP notification).

Orders hold passenger data as an airline would; the control API shows counts and states, never names.
"""

from __future__ import annotations

import asyncio
import secrets
import string
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, Protocol

from infra.simulators.schedule import FareOffer, ShopQuery

__all__ = [
    "OfferGone",
    "OrderDesk",
    "OrderFailed",
    "OrderListener",
    "OrderProblem",
    "OrderSettings",
    "PriceMoved",
    "Quote",
    "SimOrder",
    "SoldOut",
    "UnknownOrder",
]

# Offers remembered per airline (the latest), enough for long benchmark runs without growing without bound.
MAX_OFFERS = 50_000
_CENT = Decimal("0.01")
# What a schedule change does to every flight of an order: it leaves 35 minutes later.
_RETIME = timedelta(minutes=35)
_PNR_ALPHABET = string.ascii_uppercase + string.digits

OrderStatus = Literal["CONFIRMED", "CHANGED", "CANCELLED"]
OrderListener = Callable[["SimOrder", str, str | None], Awaitable[None]]
"""Called with the order, what changed (airline_cancellation, schedule_change) and the airline's reason."""


class OrderProblem(Exception):
    """An order request the airline refuses; ``code`` is what each protocol maps to its own error form."""

    code = "order_problem"


class OfferGone(OrderProblem):
    code = "offer_not_found"

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired
        if expired:
            self.code = "offer_expired"


class SoldOut(OrderProblem):
    code = "sold_out"


class PriceMoved(OrderProblem):
    code = "price_changed"

    def __init__(self, message: str, *, total: Decimal, currency: str) -> None:
        super().__init__(message)
        self.total = total
        self.currency = currency


class OrderFailed(OrderProblem):
    code = "order_failed"


class UnknownOrder(OrderProblem):
    code = "order_not_found"


@dataclass(frozen=True, slots=True)
class _Sold:
    offer: FareOffer
    adults: int
    children: int
    infants: int
    documents_required: bool

    @property
    def passengers(self) -> int:
        return self.adults + self.children + self.infants


@dataclass(frozen=True, slots=True)
class Quote:
    offer: FareOffer
    total: Decimal
    previous_total: Decimal | None
    passenger_count: int
    documents_required: bool

    @property
    def flights(self) -> list[str]:
        return flight_lines(self.offer)


@dataclass(slots=True)
class SimOrder:
    order_id: str
    offer: FareOffer
    total: Decimal
    currency: str
    passengers: list[dict[str, Any]] = field(repr=False)
    contact: dict[str, Any] = field(repr=False)
    client_reference: str | None
    status: OrderStatus = "CONFIRMED"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    flights: list[str] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        """The order without personal data (the control API's view)."""
        return {
            "order_id": self.order_id,
            "offer_id": self.offer.offer_id,
            "status": self.status,
            "total": f"{self.total:.2f}",
            "currency": self.currency,
            "passenger_count": len(self.passengers),
            "client_reference": self.client_reference,
            "flights": list(self.flights),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def flight_lines(offer: FareOffer) -> list[str]:
    """One line per flight: ``BA117 LHR-JFK 2026-12-01T08:30``."""
    return [
        f"{f.designator} {f.origin}-{f.destination} {f.departure.isoformat(timespec='minutes')}" for f in offer.journeys
    ]


class OrderSettings(Protocol):
    """The airline's order settings, from the control API (infra/simulators/faults.py `FaultConfig`)."""

    @property
    def price_change_pct(self) -> float: ...

    @property
    def order_fault(self) -> str: ...

    @property
    def slow_ms(self) -> int: ...


class OrderDesk:
    def __init__(self, code: str, settings: Callable[[], OrderSettings], seats_left: int | None = None) -> None:
        self.code = code
        self._settings = settings
        self._offers: OrderedDict[str, _Sold] = OrderedDict()
        self.orders: dict[str, SimOrder] = {}
        self.listeners: list[OrderListener] = []
        # Seats left to sell on every offer of the airline (None: never runs out); set by the control API.
        self.seats_left = seats_left

    @property
    def price_change_pct(self) -> float:
        return self._settings().price_change_pct

    @property
    def order_fault(self) -> str:
        return self._settings().order_fault

    @property
    def slow_s(self) -> float:
        return self._settings().slow_ms / 1000

    # ---- offers ----
    def remember(self, offers: list[FareOffer], query: ShopQuery, *, documents_required: bool) -> None:
        for offer in offers:
            self._offers[offer.offer_id] = _Sold(offer, query.adults, query.children, query.infants, documents_required)
            self._offers.move_to_end(offer.offer_id)
        while len(self._offers) > MAX_OFFERS:
            self._offers.popitem(last=False)

    def _sold(self, offer_id: str, now: datetime) -> _Sold:
        sold = self._offers.get(offer_id)
        if sold is None:
            raise OfferGone(f"offer {offer_id[:40]} is not known to {self.code}")
        if sold.offer.expires_at <= now:
            raise OfferGone(f"offer {offer_id[:40]} expired at {sold.offer.expires_at.isoformat()}", expired=True)
        return sold

    def price(self, offer_id: str, now: datetime | None = None) -> Quote:
        sold = self._sold(offer_id, now or datetime.now(UTC))
        if self.seats_left is not None and self.seats_left < sold.passengers:
            raise SoldOut(f"no seats left on offer {offer_id[:40]}")
        total = sold.offer.total
        previous: Decimal | None = None
        if self.price_change_pct:
            previous = total
            total = (total * (1 + Decimal(str(self.price_change_pct)) / 100)).quantize(_CENT, ROUND_HALF_UP)
        return Quote(sold.offer, total, previous, sold.passengers, sold.documents_required)

    # ---- orders ----
    async def create(
        self,
        offer_id: str,
        *,
        passengers: list[dict[str, Any]],
        contact: dict[str, Any],
        client_reference: str | None,
        accepted_total: Decimal | None,
    ) -> SimOrder:
        """Make an order (see the module's doc for the faults); passengers as the protocol parsed them."""
        quote = self.price(offer_id)
        if len(passengers) != quote.passenger_count:
            raise OrderFailed(f"the offer is for {quote.passenger_count} passengers, {len(passengers)} given")
        if accepted_total is not None and quote.total > accepted_total:
            raise PriceMoved(
                f"the price is now {quote.total:.2f} {quote.offer.currency}, above the accepted {accepted_total:.2f}",
                total=quote.total,
                currency=quote.offer.currency,
            )
        if self.order_fault == "fail":
            raise OrderFailed("the order could not be created (simulated failure)")
        if self.seats_left is not None:
            self.seats_left -= quote.passenger_count
        order = SimOrder(
            order_id=self._new_order_id(),
            offer=quote.offer,
            total=quote.total,
            currency=quote.offer.currency,
            passengers=list(passengers),
            contact=dict(contact),
            client_reference=client_reference,
            flights=quote.flights,
        )
        self.orders[order.order_id] = order
        if self.order_fault == "timeout_after_create":
            # The order is made; the answer comes too late for the caller, which cannot know it was.
            await asyncio.sleep(self.slow_s)
        return order

    def _new_order_id(self) -> str:
        while True:
            candidate = "".join(secrets.choice(_PNR_ALPHABET) for _ in range(6))
            if candidate not in self.orders:
                return candidate

    def find(self, client_reference: str) -> SimOrder | None:
        """The latest order made with this client reference (what a buyer looks up after an unknown outcome)."""
        # The orders are kept in the order they were made: the last match is the latest, even within one clock tick.
        found = [o for o in self.orders.values() if o.client_reference == client_reference]
        return found[-1] if found else None

    def get(self, order_id: str) -> SimOrder:
        order = self.orders.get(order_id)
        if order is None:
            raise UnknownOrder(f"order {order_id[:20]} is not known to {self.code}")
        return order

    def cancel(self, order_id: str) -> SimOrder:
        """Cancel an order (cancelling a cancelled order answers it as it is)."""
        order = self.get(order_id)
        if order.status != "CANCELLED":
            order.status = "CANCELLED"
            order.updated_at = datetime.now(UTC)
        return order

    async def airline_change(self, order_id: str, change: Literal["cancel", "schedule"], reason: str) -> SimOrder:
        """The airline changes an order on its own and tells every listener."""
        order = self.get(order_id)
        if order.status == "CANCELLED":
            # Nothing is left to change (and a schedule change must not bring a cancelled order back).
            raise OrderFailed(f"order {order_id[:20]} is cancelled")
        if change == "cancel":
            order.status = "CANCELLED"
            what = "airline_cancellation"
        else:
            # A retimed flight: every departure 35 minutes later.
            order.status = "CHANGED"
            order.offer = replace(
                order.offer,
                journeys=tuple(
                    replace(f, departure=f.departure + _RETIME, arrival=f.arrival + _RETIME)
                    for f in order.offer.journeys
                ),
            )
            order.flights = flight_lines(order.offer)
            what = "schedule_change"
        order.updated_at = datetime.now(UTC)
        await asyncio.gather(*(listener(order, what, reason) for listener in self.listeners), return_exceptions=True)
        return order

    @property
    def created(self) -> int:
        return len(self.orders)

    def reset(self) -> None:
        self._offers.clear()
        self.orders.clear()
