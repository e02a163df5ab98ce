"""Delta's shopping API: ``POST /shop/v1/offers`` with a JSON body, prices as decimal strings.

Dialect: ``tripType`` ONE_WAY/ROUND_TRIP, ``slices`` of origin/destination/departureDate, passenger
groups by PTC (ADT, CNN, INF), Delta cabins MAIN, PREMIUM_SELECT, DELTA_ONE and FIRST. Answer
``{"offerSets": [...]}``: an itinerary (slices of segments) and its offers, one per brand.
Key as ``Authorization: Bearer``.

Orders (see `infra/simulators/rest_delta.py` for the wire): ``POST /shop/v1/offers/price`` with ``{"offerId"}``;
``POST /order/v1/orders`` with passengers (``firstName``, ``lastName``, ``birthDate``, ``travelDocument``), a
``contact``, the ``acceptedTotalPrice`` and our ``clientReference`` in the body; ``GET /order/v1/orders
?clientReference=``; ``GET /order/v1/orders/{orderId}``; ``POST /order/v1/orders/{orderId}/cancel``. Errors
``{"errors": [{"code", "message"}]}``. Changes Delta makes itself arrive as ``{"eventType", "occurredAt",
"reasonText", "order"}``. Passengers' names in its answers are never kept: an order is read as a count.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from connectors.kinds import normalise as N
from connectors.kinds.rest import RestRequest, flight_line, latest_order
from connectors.orders import OrderChange
from jetbridge.errors import (
    AirlineError,
    OfferExpired,
    OfferUnavailable,
    OrderError,
    OrderNotFound,
    OrderRefused,
    PriceChanged,
    SeatsUnavailable,
)
from jetbridge.passengers import OrderParty, Passenger
from schemas.models import Cabin, Offer, OrderState, OrderStatus, PricedOffer, SearchCriteria, Slice

__all__ = [
    "auth_headers",
    "build_request",
    "cancel_request",
    "create_request",
    "find_request",
    "order_error",
    "parse",
    "parse_change",
    "parse_found",
    "parse_order",
    "parse_priced",
    "price_request",
    "retrieve_request",
]

OFFERS_PATH = "/shop/v1/offers"
PRICE_PATH = "/shop/v1/offers/price"
ORDERS_PATH = "/order/v1/orders"
_CABINS: dict[Cabin, str] = {
    Cabin.ECONOMY: "MAIN",
    Cabin.PREMIUM_ECONOMY: "PREMIUM_SELECT",
    Cabin.BUSINESS: "DELTA_ONE",
    Cabin.FIRST: "FIRST",
}
_CABINS_BACK = {v: k for k, v in _CABINS.items()}


class _Wire(BaseModel):
    # Strict: Delta sends amounts as strings; a number there means the contract changed under us.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _Place(_Wire):
    code: str = Field(max_length=8)


class _Equipment(_Wire):
    code: str | None = Field(default=None, max_length=8)


class _Segment(_Wire):
    marketing_carrier: str = Field(alias="marketingCarrier", max_length=8)
    flight_number: str = Field(alias="flightNumber", max_length=8)
    origin: _Place
    destination: _Place
    scheduled_departure: str = Field(alias="scheduledDeparture", max_length=40)
    scheduled_arrival: str = Field(alias="scheduledArrival", max_length=40)
    equipment: _Equipment | None = None


class _Slice(_Wire):
    duration_minutes: int = Field(alias="durationMinutes")
    segments: list[_Segment] = Field(min_length=1, max_length=8)


class _Itinerary(_Wire):
    slices: list[_Slice] = Field(min_length=1, max_length=2)


class _Money(_Wire):
    amount: str = Field(max_length=24)
    currency_code: str = Field(alias="currencyCode", max_length=8)


class _Brand(_Wire):
    name: str | None = Field(default=None, max_length=200)


class _Offer(_Wire):
    offer_id: str = Field(alias="offerId", max_length=200)
    brand: _Brand | None = None
    cabin: str = Field(max_length=32)
    total_price: _Money = Field(alias="totalPrice")
    expires_at: str = Field(alias="expiresAt", max_length=40)


class _OfferSet(_Wire):
    itinerary: _Itinerary
    offers: list[Any] = Field(max_length=50)


class _Answer(_Wire):
    offer_sets: list[Any] = Field(alias="offerSets")


def auth_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def build_request(criteria: SearchCriteria) -> RestRequest | None:
    slices = [
        {
            "origin": criteria.origin,
            "destination": criteria.destination,
            "departureDate": criteria.departure_date.isoformat(),
        }
    ]
    if criteria.return_date is not None:
        slices.append(
            {
                "origin": criteria.destination,
                "destination": criteria.origin,
                "departureDate": criteria.return_date.isoformat(),
            }
        )
    passengers = [
        {"type": ptc, "count": count}
        for ptc, count in (("ADT", criteria.adults), ("CNN", criteria.children), ("INF", criteria.infants))
        if count
    ]
    body = {
        "tripType": "ROUND_TRIP" if criteria.return_date is not None else "ONE_WAY",
        "originAirportCode": criteria.origin,
        "destinationAirportCode": criteria.destination,
        "slices": slices,
        "passengers": passengers,
        "cabin": _CABINS[criteria.cabin],
        "currencyCode": criteria.currency,
    }
    return RestRequest("POST", OFFERS_PATH, json=body)


def _slices(itinerary: _Itinerary) -> list[Slice]:
    return [
        N.make_slice(
            [
                N.make_segment(
                    carrier_code=s.marketing_carrier,
                    number=s.flight_number,
                    origin=s.origin.code,
                    destination=s.destination.code,
                    departs=s.scheduled_departure,
                    arrives=s.scheduled_arrival,
                    aircraft=s.equipment.code if s.equipment else None,
                )
                for s in sl.segments
            ],
            N.minutes(sl.duration_minutes, "slice.durationMinutes"),
        )
        for sl in itinerary.slices
    ]


def parse(body: Any, *, airline: str, criteria: SearchCriteria) -> list[Offer]:
    answer = _Answer.model_validate(body)
    offers: list[Offer] = []
    for raw_set in answer.offer_sets:
        offer_set = _OfferSet.model_validate(raw_set)
        slices = _slices(offer_set.itinerary)
        for raw in offer_set.offers:
            item = _Offer.model_validate(raw)
            cabin = _CABINS_BACK.get(item.cabin)
            if cabin is None:
                raise N.UntrustedValue("offer.cabin", "not a Delta cabin")
            offers.append(
                N.make_offer(
                    airline=airline,
                    offer_ref=item.offer_id,
                    amount=N.money(item.total_price.amount, "totalPrice.amount"),
                    currency_code=item.total_price.currency_code,
                    cabin=cabin,
                    brand=item.brand.name if item.brand else None,
                    expires=N.utc_time(item.expires_at, "offer.expiresAt"),
                    slices=slices,
                )
            )
            if len(offers) >= N.MAX_OFFERS:
                return offers
    return offers


# ---- orders ----

_STATUSES = {
    "CONFIRMED": OrderStatus.CONFIRMED,
    "SCHEDULE_CHANGED": OrderStatus.CHANGED,
    "CANCELLED": OrderStatus.CANCELLED,
}
_CHANGES = {"ORDER_CANCELLED": "airline_cancellation", "ORDER_SCHEDULE_CHANGED": "schedule_change"}
_DOCUMENT_TYPES = {"passport": "PASSPORT", "national_id": "NATIONAL_ID"}
# Delta's error codes, by what they mean; a code not listed here falls back on the HTTP status.
_REFUSALS: dict[str, Callable[[str], AirlineError | OrderError]] = {
    "OFFER_NOT_FOUND": OfferUnavailable,
    "OFFER_EXPIRED": OfferExpired,
    "SOLD_OUT": SeatsUnavailable,
    "ORDER_NOT_FOUND": OrderNotFound,
    "ORDER_FAILED": OrderRefused,
    "TRAVEL_DOCUMENT_REQUIRED": OrderRefused,
    "CURRENCY_MISMATCH": OrderRefused,
}


class _Priced(_Wire):
    offer_id: str = Field(alias="offerId", max_length=200)
    total_price: _Money = Field(alias="totalPrice")
    original_total_price: _Money | None = Field(default=None, alias="originalTotalPrice")
    expires_at: str = Field(alias="expiresAt", max_length=40)
    passenger_count: int = Field(alias="passengerCount", ge=1, le=9)
    travel_document_required: bool = Field(default=False, alias="travelDocumentRequired")
    itinerary: _Itinerary


class _PricedAnswer(_Wire):
    priced_offer: _Priced = Field(alias="pricedOffer")


class _PassengerRef(_Wire):
    # Only the id: the names Delta sends back are personal data we have no use for, so they are never read.
    passenger_id: str = Field(alias="passengerId", max_length=16)


class _Order(_Wire):
    order_id: str = Field(alias="orderId", max_length=128)
    order_status: str = Field(alias="orderStatus", max_length=32)
    offer_id: str | None = Field(default=None, alias="offerId", max_length=200)
    client_reference: str | None = Field(default=None, alias="clientReference", max_length=128)
    total_price: _Money = Field(alias="totalPrice")
    passengers: list[_PassengerRef] = Field(min_length=1, max_length=9)
    itinerary: _Itinerary
    created_at: str | None = Field(default=None, alias="createdAt", max_length=40)
    updated_at: str = Field(alias="updatedAt", max_length=40)


class _OrderAnswer(_Wire):
    order: _Order


class _Found(_Wire):
    orders: list[_Order] = Field(max_length=100)


class _Error(_Wire):
    code: str = Field(max_length=64)
    message: str | None = Field(default=None, max_length=1000)
    current_total_price: _Money | None = Field(default=None, alias="currentTotalPrice")


class _Errors(_Wire):
    errors: list[_Error] = Field(min_length=1, max_length=20)


class _ChangeEvent(_Wire):
    event_type: str = Field(alias="eventType", max_length=64)
    occurred_at: str = Field(alias="occurredAt", max_length=40)
    reason_text: str | None = Field(default=None, alias="reasonText", max_length=2000)
    order: _Order


def _path_id(value: str) -> str:
    return quote(value, safe="")


def price_request(offer_id: str) -> RestRequest:
    return RestRequest("POST", PRICE_PATH, json={"offerId": offer_id})


def _passenger(number: int, passenger: Passenger) -> dict[str, Any]:
    traveler: dict[str, Any] = {
        "passengerId": f"P{number}",
        "firstName": passenger.given_name,
        "lastName": passenger.family_name,
        "birthDate": passenger.date_of_birth.isoformat(),
    }
    document = passenger.document
    if document is not None:
        traveler["travelDocument"] = {
            "documentType": _DOCUMENT_TYPES[document.kind],
            "documentNumber": document.number,
            "issuingCountryCode": document.issuing_country,
            "expirationDate": document.expires_on.isoformat(),
        }
    return traveler


def create_request(
    offer_id: str, party: OrderParty, *, accepted_total: Decimal, currency: str, client_reference: str
) -> RestRequest:
    body = {
        "offerId": offer_id,
        "clientReference": client_reference,
        "acceptedTotalPrice": {"amount": f"{accepted_total:.2f}", "currencyCode": currency},
        "passengers": [_passenger(i + 1, p) for i, p in enumerate(party.passengers)],
        "contact": {"emailAddress": party.contact.email, "phoneNumber": party.contact.phone},
    }
    return RestRequest("POST", ORDERS_PATH, json=body)


def find_request(client_reference: str) -> RestRequest:
    return RestRequest("GET", ORDERS_PATH, params={"clientReference": client_reference})


def retrieve_request(order_id: str) -> RestRequest:
    return RestRequest("GET", f"{ORDERS_PATH}/{_path_id(order_id)}")


def cancel_request(order_id: str) -> RestRequest:
    return RestRequest("POST", f"{ORDERS_PATH}/{_path_id(order_id)}/cancel")


def _flights(itinerary: _Itinerary) -> list[str]:
    return [
        flight_line(
            carrier_code=s.marketing_carrier,
            number=s.flight_number,
            origin=s.origin.code,
            destination=s.destination.code,
            departs=s.scheduled_departure,
        )
        for sl in itinerary.slices
        for s in sl.segments
    ]


def parse_priced(body: Any, *, airline: str) -> PricedOffer:
    priced = _PricedAnswer.model_validate(body).priced_offer
    original = priced.original_total_price
    return PricedOffer(
        offer_id=N.offer_id(priced.offer_id, "pricedOffer.offerId"),
        total_amount=N.money(priced.total_price.amount, "pricedOffer.totalPrice.amount"),
        currency=N.currency(priced.total_price.currency_code, "pricedOffer.totalPrice.currencyCode"),
        previous_amount=N.money(original.amount, "pricedOffer.originalTotalPrice.amount") if original else None,
        expires_at=N.utc_time(priced.expires_at, "pricedOffer.expiresAt"),
        passenger_count=priced.passenger_count,
        documents_required=priced.travel_document_required,
        flights=_flights(priced.itinerary),
    )


def _state(order: _Order, airline: str) -> OrderState:
    status = _STATUSES.get(order.order_status)
    if status is None:
        raise N.UntrustedValue("order.orderStatus", "not a Delta order status")
    return OrderState(
        order_id=N.offer_id(order.order_id, "order.orderId"),
        airline=airline,
        status=status,
        offer_id=N.offer_id(order.offer_id, "order.offerId") if order.offer_id is not None else None,
        total_amount=N.money(order.total_price.amount, "order.totalPrice.amount"),
        currency=N.currency(order.total_price.currency_code, "order.totalPrice.currencyCode"),
        passenger_count=len(order.passengers),
        flights=_flights(order.itinerary),
        client_reference=N.clean_text(order.client_reference, "order.clientReference", 128),
        created_at=N.utc_time(order.created_at, "order.createdAt") if order.created_at is not None else None,
        updated_at=N.utc_time(order.updated_at, "order.updatedAt"),
    )


def parse_order(body: Any, *, airline: str) -> OrderState:
    return _state(_OrderAnswer.model_validate(body).order, airline)


def parse_found(body: Any, *, airline: str) -> OrderState | None:
    return latest_order([_state(order, airline) for order in _Found.model_validate(body).orders])


def order_error(status: int, body: Any, *, airline: str) -> AirlineError | OrderError | None:
    error = _Errors.model_validate(body).errors[0]
    reason = N.clean_text(error.message, "error.message", 160) or error.code
    if error.code == "PRICE_CHANGED":
        current = error.current_total_price
        if current is None:
            return PriceChanged(f"{airline}: the price changed ({reason})")
        amount = N.money(current.amount, "error.currentTotalPrice.amount")
        currency = N.currency(current.currency_code, "error.currentTotalPrice.currencyCode")
        return PriceChanged(
            f"{airline}: the price is now {amount} {currency}", amount=f"{amount:.2f}", currency=currency
        )
    make = _REFUSALS.get(error.code)
    return make(f"{airline}: {reason}") if make is not None else None


def parse_change(body: Any, *, airline: str) -> OrderChange:
    event = _ChangeEvent.model_validate(body)
    change = _CHANGES.get(event.event_type)
    if change is None:
        raise N.UntrustedValue("eventType", "not a Delta order change")
    return OrderChange(
        order=_state(event.order, airline),
        change=change,
        reason=N.clean_text(event.reason_text, "reasonText"),
        at=N.utc_time(event.occurred_at, "occurredAt"),
    )
