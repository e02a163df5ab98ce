"""Finnair's MCP server: tool ``search_flights``, its order tools and its order-change feed, in Finnair's own shape.

Shopping arguments: origin, destination, departure_date, return_date, adults, children, infants, travel_class
(economy, premium_economy, business; no First), currency. Structured content ``{"offers": [...]}``, each
with ``bounds`` of ``flights`` and ``price.amount`` as a JSON number. Key in ``X-API-Key``.

Orders: ``price_offer(offer_id)`` answers the priced offer (``price``, ``previous_price`` when it moved,
``valid_until``, ``passenger_count``, ``travel_documents_required``, ``flights``); ``create_order(offer_id,
passengers, contact, accepted_total, client_reference)``, ``get_order(order_id)``, ``cancel_order(order_id)``
answer ``{"order": {...}}`` and ``find_order(client_reference)`` the same or ``{"order": null}``. Finnair prices
an order in its offer's currency (the tool takes no currency). Refusals are tool errors whose text is
``{"error": {"code", "message"[, "price"]}}`` (`order_refusal` maps the codes onto the error tree). Changes the
airline makes itself are the resource `CHANGES_URI`, a numbered feed (`parse_changes`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectors.kinds import normalise as N
from connectors.kinds.mcp import ChangePage
from connectors.orders import OrderChange
from jetbridge.errors import (
    AirlineRejected,
    JetbridgeError,
    OfferExpired,
    OfferUnavailable,
    OrderNotFound,
    OrderRefused,
    PriceChanged,
    SeatsUnavailable,
)
from jetbridge.passengers import OrderParty, Passenger
from schemas.models import Cabin, Offer, OrderState, OrderStatus, PricedOffer, SearchCriteria, Slice

__all__ = [
    "CANCEL_TOOL",
    "CHANGES_URI",
    "CREATE_TOOL",
    "FIND_TOOL",
    "GET_TOOL",
    "PRICE_TOOL",
    "TOOL_NAME",
    "auth_headers",
    "changes_uri",
    "create_arguments",
    "find_arguments",
    "order_arguments",
    "order_refusal",
    "parse",
    "parse_changes",
    "parse_order",
    "parse_priced",
    "price_arguments",
    "tool_arguments",
]

TOOL_NAME: Final = "search_flights"
PRICE_TOOL: Final = "price_offer"
CREATE_TOOL: Final = "create_order"
FIND_TOOL: Final = "find_order"
GET_TOOL: Final = "get_order"
CANCEL_TOOL: Final = "cancel_order"
CHANGES_URI: Final = "finnair://orders/changes"
_CLASSES: dict[Cabin, str] = {
    Cabin.ECONOMY: "economy",
    Cabin.PREMIUM_ECONOMY: "premium_economy",
    Cabin.BUSINESS: "business",
}
_CLASSES_BACK = {v: k for k, v in _CLASSES.items()}


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _Stop(_Wire):
    airport: str = Field(max_length=8)
    local_time: str = Field(max_length=40)


class _Flight(_Wire):
    flight_number: str = Field(max_length=8)
    departure: _Stop
    arrival: _Stop
    aircraft_code: str | None = Field(default=None, max_length=8)


class _Bound(_Wire):
    duration: str = Field(max_length=32)
    flights: list[_Flight] = Field(min_length=1, max_length=8)


class _Price(_Wire):
    amount: float | int
    currency: str = Field(max_length=8)


class _Offer(_Wire):
    offer_id: str = Field(max_length=200)
    fare_family: str | None = Field(default=None, max_length=200)
    travel_class: str = Field(max_length=32)
    price: _Price
    valid_until: str = Field(max_length=40)
    bounds: list[_Bound] = Field(min_length=1, max_length=2)


class _Answer(_Wire):
    offers: list[Any]


def auth_headers(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def tool_arguments(criteria: SearchCriteria) -> dict[str, Any] | None:
    travel_class = _CLASSES.get(criteria.cabin)
    if travel_class is None:
        return None
    arguments: dict[str, Any] = {
        "origin": criteria.origin,
        "destination": criteria.destination,
        "departure_date": criteria.departure_date.isoformat(),
        "adults": criteria.adults,
        "children": criteria.children,
        "infants": criteria.infants,
        "travel_class": travel_class,
        "currency": criteria.currency,
    }
    if criteria.return_date is not None:
        arguments["return_date"] = criteria.return_date.isoformat()
    return arguments


def _slice(bound: _Bound) -> Slice:
    segments = [
        N.make_segment(
            carrier_code=f.flight_number[:2],
            number=f.flight_number[2:],
            origin=f.departure.airport,
            destination=f.arrival.airport,
            departs=f.departure.local_time,
            arrives=f.arrival.local_time,
            aircraft=f.aircraft_code,
        )
        for f in bound.flights
    ]
    return N.make_slice(segments, N.iso_duration_minutes(bound.duration, "bound.duration"))


def _offer(raw: Any, airline: str) -> Offer:
    item = _Offer.model_validate(raw)
    cabin = _CLASSES_BACK.get(item.travel_class)
    if cabin is None:
        raise N.UntrustedValue("offer.travel_class", "not a Finnair travel class")
    return N.make_offer(
        airline=airline,
        offer_ref=item.offer_id,
        amount=N.money(item.price.amount, "price.amount"),
        currency_code=item.price.currency,
        cabin=cabin,
        brand=item.fare_family,
        expires=N.utc_time(item.valid_until, "offer.valid_until"),
        slices=[_slice(b) for b in item.bounds],
    )


def parse(content: Any, *, airline: str, criteria: SearchCriteria) -> list[Offer]:
    answer = _Answer.model_validate(content)
    return [_offer(raw, airline) for raw in answer.offers[: N.MAX_OFFERS]]


# ---- orders ----
_ORDER_ID = re.compile(r"[A-Z0-9]{5,12}")
_REFERENCE = re.compile(r"[A-Za-z0-9._:~-]{1,128}")
_STATUSES = {"confirmed": OrderStatus.CONFIRMED, "changed": OrderStatus.CHANGED, "cancelled": OrderStatus.CANCELLED}
_CHANGES = {"cancellation": "airline_cancellation", "schedule_change": "schedule_change"}
# Finnair's refusal codes; anything else it refuses with is a plain rejection (its message kept, cleaned).
_REFUSALS: dict[str, Callable[[str], JetbridgeError]] = {
    "offer_not_found": OfferUnavailable,
    "offer_expired": OfferExpired,
    "sold_out": SeatsUnavailable,
    "order_failed": OrderRefused,
    "travel_document_required": OrderRefused,
    "order_not_found": OrderNotFound,
}


class _Money(_Wire):
    amount: float | int
    currency: str = Field(max_length=8)


class _Priced(_Wire):
    offer_id: str = Field(max_length=200)
    price: _Money
    previous_price: _Money | None = None
    valid_until: str = Field(max_length=40)
    passenger_count: int = Field(ge=1, le=9)
    travel_documents_required: bool = False
    flights: list[_Flight] = Field(min_length=1, max_length=8)


class _Order(_Wire):
    order_id: str = Field(max_length=40)
    status: str = Field(max_length=20)
    offer_id: str | None = Field(default=None, max_length=200)
    price: _Money
    passenger_count: int = Field(ge=1, le=9)
    client_reference: str | None = Field(default=None, max_length=200)
    flights: list[_Flight] = Field(min_length=1, max_length=8)
    created_at: str | None = Field(default=None, max_length=40)
    updated_at: str = Field(max_length=40)


class _OrderAnswer(_Wire):
    order: dict[str, Any] | None


class _Refusal(_Wire):
    code: str = Field(max_length=64)
    message: str | None = Field(default=None, max_length=2000)
    price: _Money | None = None


class _RefusalAnswer(_Wire):
    error: _Refusal


class _Change(_Wire):
    seq: int = Field(ge=1)
    change_type: str = Field(max_length=40)
    reason: str | None = Field(default=None, max_length=2000)
    changed_at: str = Field(max_length=40)
    order: dict[str, Any]


class _Feed(_Wire):
    epoch: str = Field(min_length=1, max_length=64)
    head: int = Field(ge=0)
    oldest: int = Field(ge=0)
    changes: list[dict[str, Any]] = Field(max_length=1000)


def price_arguments(offer_id: str) -> dict[str, Any]:
    return {"offer_id": offer_id}


def _passenger(passenger: Passenger) -> dict[str, Any]:
    out: dict[str, Any] = {
        "first_name": passenger.given_name,
        "last_name": passenger.family_name,
        "date_of_birth": passenger.date_of_birth.isoformat(),
    }
    if passenger.document is not None:
        out["travel_document"] = {
            "document_type": passenger.document.kind,
            "number": passenger.document.number,
            "issuing_country": passenger.document.issuing_country,
            "expiry_date": passenger.document.expires_on.isoformat(),
        }
    return out


def create_arguments(
    offer_id: str, party: OrderParty, *, accepted_total: Decimal, client_reference: str
) -> dict[str, Any]:
    """The booking's arguments: personal data, so the caller never logs them."""
    return {
        "offer_id": offer_id,
        "passengers": [_passenger(p) for p in party.passengers],
        "contact": {"email": party.contact.email, "phone": party.contact.phone},
        # Finnair takes money as JSON numbers; two decimal places survive the float both ways.
        "accepted_total": float(accepted_total),
        "client_reference": client_reference,
    }


def find_arguments(client_reference: str) -> dict[str, Any]:
    return {"client_reference": client_reference}


def order_arguments(order_id: str) -> dict[str, Any]:
    return {"order_id": order_id}


def _flight_line(flight: _Flight, field: str) -> str:
    """``AY5 HEL-JFK 2026-12-01T08:30``, every part checked."""
    designator = N.carrier(flight.flight_number[:2], f"{field}.flight_number") + N.flight_number(
        flight.flight_number[2:], f"{field}.flight_number"
    )
    origin = N.airport(flight.departure.airport, f"{field}.departure.airport")
    destination = N.airport(flight.arrival.airport, f"{field}.arrival.airport")
    return f"{designator} {origin}-{destination} {N.local_time(flight.departure.local_time, f'{field}.departure')}"


def parse_priced(content: Any, *, airline: str) -> PricedOffer:
    priced = _Priced.model_validate(content)
    currency = N.currency(priced.price.currency, "price.currency")
    previous = None
    if priced.previous_price is not None:
        if N.currency(priced.previous_price.currency, "previous_price.currency") != currency:
            raise N.UntrustedValue("previous_price.currency", "not the price's currency")
        previous = N.money(priced.previous_price.amount, "previous_price.amount")
    return PricedOffer(
        offer_id=N.offer_id(priced.offer_id),
        total_amount=N.money(priced.price.amount, "price.amount"),
        currency=currency,
        previous_amount=previous,
        expires_at=N.utc_time(priced.valid_until, "valid_until"),
        passenger_count=priced.passenger_count,
        documents_required=priced.travel_documents_required,
        flights=[_flight_line(f, "flights") for f in priced.flights],
    )


def _order_state(raw: Any, airline: str) -> OrderState:
    order = _Order.model_validate(raw)
    if not _ORDER_ID.fullmatch(order.order_id):
        raise N.UntrustedValue("order.order_id", "not a Finnair booking reference")
    status = _STATUSES.get(order.status.lower())
    if status is None:
        raise N.UntrustedValue("order.status", "not a Finnair order status")
    if order.client_reference is not None and not _REFERENCE.fullmatch(order.client_reference):
        raise N.UntrustedValue("order.client_reference", "not a client reference")
    return OrderState(
        order_id=order.order_id,
        airline=airline,
        status=status,
        offer_id=N.offer_id(order.offer_id, "order.offer_id") if order.offer_id is not None else None,
        total_amount=N.money(order.price.amount, "order.price.amount"),
        currency=N.currency(order.price.currency, "order.price.currency"),
        passenger_count=order.passenger_count,
        flights=[_flight_line(f, "order.flights") for f in order.flights],
        client_reference=order.client_reference,
        created_at=N.utc_time(order.created_at, "order.created_at") if order.created_at is not None else None,
        updated_at=N.utc_time(order.updated_at, "order.updated_at"),
    )


def parse_order(content: Any, *, airline: str) -> OrderState | None:
    """The order of an ``{"order": ...}`` answer; None for ``{"order": null}`` (find_order found none)."""
    answer = _OrderAnswer.model_validate(content)
    return _order_state(answer.order, airline) if answer.order is not None else None


def order_refusal(content: Any, *, airline: str) -> JetbridgeError | None:
    """The error for Finnair's refusal JSON; None when ``content`` is not one (the caller rejects it plainly)."""
    try:
        refusal = _RefusalAnswer.model_validate(content).error
    except ValidationError:
        return None
    reason = N.clean_text(refusal.message, "error.message", 160) or refusal.code
    code = N.clean_text(refusal.code, "error.code", 40) or "unknown"
    if refusal.code == "price_changed":
        amount = currency = None
        if refusal.price is not None:
            try:
                amount = f"{N.money(refusal.price.amount, 'error.price.amount'):.2f}"
                currency = N.currency(refusal.price.currency, "error.price.currency")
            except ValueError:
                amount = currency = None
        now = f" (now {amount} {currency})" if amount is not None else ""
        return PriceChanged(f"{airline}: the price changed{now}: {reason}", amount=amount, currency=currency)
    error = _REFUSALS.get(refusal.code)
    if error is None:
        return AirlineRejected(f"{airline}: refused ({code}): {reason}")
    return error(f"{airline}: {reason} ({code})")


def changes_uri(after: int) -> str:
    """The feed's resource, read from just after sequence number ``after``."""
    return f"{CHANGES_URI}?after={quote(str(max(after, 0)))}"


def parse_changes(content: Any, *, airline: str) -> ChangePage:
    """One page of the feed; an entry that breaks the contract comes back as None (skipped, never retried)."""
    feed = _Feed.model_validate(content)
    entries: list[tuple[int, OrderChange | None]] = []
    for raw in feed.changes:
        seq = raw.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise N.UntrustedValue("changes.seq", "not a sequence number")
        try:
            entries.append((seq, _order_change(raw, airline)))
        except ValueError:
            entries.append((seq, None))
    seqs = [seq for seq, _ in entries]
    if seqs != sorted(set(seqs)):
        raise N.UntrustedValue("changes.seq", "not rising")
    return ChangePage(
        epoch=N.clean_text(feed.epoch, "epoch", 64) or "", head=feed.head, oldest=feed.oldest, changes=entries
    )


def _order_change(raw: Any, airline: str) -> OrderChange:
    change = _Change.model_validate(raw)
    at: datetime = N.utc_time(change.changed_at, "changes.changed_at")
    return OrderChange(
        order=_order_state(change.order, airline),
        change=_CHANGES.get(change.change_type, "airline_change"),
        reason=N.clean_text(change.reason, "changes.reason", 160),
        at=at,
    )
