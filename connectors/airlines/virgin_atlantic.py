"""Virgin Atlantic's shopping API: ``GET /api/v2/flights/search``, prices in minor units.

Dialect: query parameters ``from``/``to``/``departDate``/``returnDate``/``adults``/``children``/
``infants``/``cabinClass``/``currency``; cabins economy, premium and upper (Upper Class, their business);
no First. Answer ``{"itineraries": [...]}``, each with ``legs`` of ``flights`` and a ``price`` of
``totalMinor`` with ``decimals``. Key in ``X-Api-Key``.

Bookings (see `infra/simulators/rest_virgin.py` for the wire): ``GET /api/v2/itineraries/{id}/price``;
``POST /api/v2/bookings`` with ``travellers`` (``givenName``, ``surname``, ``dateOfBirth``, ``passport``),
``contactDetails`` and the ``expectedPrice`` in minor units, our reference in header ``X-Client-Reference``;
``GET /api/v2/bookings?clientReference=``; ``GET`` and ``DELETE /api/v2/bookings/{bookingReference}``. Errors
``{"errorCode", "errors": [{"field", "message"}]}``. Changes Virgin makes itself arrive as ``{"type",
"createdAt", "data": {"reason", "booking"}}``. Travellers' names in its answers are never read.
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

SEARCH_PATH = "/api/v2/flights/search"
ITINERARIES_PATH = "/api/v2/itineraries"
BOOKINGS_PATH = "/api/v2/bookings"
REFERENCE_HEADER = "X-Client-Reference"
_CABINS: dict[Cabin, str] = {
    Cabin.ECONOMY: "economy",
    Cabin.PREMIUM_ECONOMY: "premium",
    Cabin.BUSINESS: "upper",
}
_CABINS_BACK = {v: k for k, v in _CABINS.items()}


class _Wire(BaseModel):
    # Strict: a price that arrives as a string or a count as a float is a broken contract, not a hint.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _Aircraft(_Wire):
    code: str | None = Field(default=None, max_length=8)
    name: str | None = Field(default=None, max_length=200)


class _Flight(_Wire):
    flight_no: str = Field(alias="flightNo", max_length=8)
    origin: str = Field(alias="from", max_length=8)
    destination: str = Field(alias="to", max_length=8)
    departs_at: str = Field(alias="departsAt", max_length=40)
    arrives_at: str = Field(alias="arrivesAt", max_length=40)
    aircraft: _Aircraft | None = None


class _Leg(_Wire):
    duration_minutes: int = Field(alias="durationMinutes")
    flights: list[_Flight] = Field(min_length=1, max_length=8)


class _Price(_Wire):
    total_minor: int = Field(alias="totalMinor", ge=0)
    currency: str = Field(max_length=8)
    decimals: int = Field(ge=0, le=4)


class _Itinerary(_Wire):
    id: str = Field(max_length=200)
    fare_family: str | None = Field(default=None, alias="fareFamily", max_length=200)
    cabin_class: str = Field(alias="cabinClass", max_length=32)
    price: _Price
    valid_until: str = Field(alias="validUntil", max_length=40)
    legs: list[_Leg] = Field(min_length=1, max_length=2)


class _Answer(_Wire):
    itineraries: list[Any]


def auth_headers(key: str) -> dict[str, str]:
    return {"X-Api-Key": key}


def build_request(criteria: SearchCriteria) -> RestRequest | None:
    cabin = _CABINS.get(criteria.cabin)
    if cabin is None:
        return None
    params = {
        "from": criteria.origin,
        "to": criteria.destination,
        "departDate": criteria.departure_date.isoformat(),
        "adults": str(criteria.adults),
        "children": str(criteria.children),
        "infants": str(criteria.infants),
        "cabinClass": cabin,
        "currency": criteria.currency,
    }
    if criteria.return_date is not None:
        params["returnDate"] = criteria.return_date.isoformat()
    return RestRequest("GET", SEARCH_PATH, params=params)


def _slice(leg: _Leg) -> Slice:
    segments = [
        N.make_segment(
            carrier_code=f.flight_no[:2],
            number=f.flight_no[2:],
            origin=f.origin,
            destination=f.destination,
            departs=f.departs_at,
            arrives=f.arrives_at,
            aircraft=f.aircraft.code if f.aircraft else None,
        )
        for f in leg.flights
    ]
    return N.make_slice(segments, N.minutes(leg.duration_minutes, "leg.durationMinutes"))


def _amount(price: _Price, field: str) -> Decimal:
    return N.money(Decimal(price.total_minor).scaleb(-price.decimals), field)


def _offer(raw: Any, airline: str) -> Offer:
    item = _Itinerary.model_validate(raw)
    cabin = _CABINS_BACK.get(item.cabin_class)
    if cabin is None:
        raise N.UntrustedValue("itinerary.cabinClass", "not a Virgin Atlantic cabin")
    return N.make_offer(
        airline=airline,
        offer_ref=item.id,
        amount=_amount(item.price, "price.totalMinor"),
        currency_code=item.price.currency,
        cabin=cabin,
        brand=item.fare_family,
        expires=N.utc_time(item.valid_until, "itinerary.validUntil"),
        slices=[_slice(leg) for leg in item.legs],
    )


def parse(body: Any, *, airline: str, criteria: SearchCriteria) -> list[Offer]:
    answer = _Answer.model_validate(body)
    return [_offer(raw, airline) for raw in answer.itineraries[: N.MAX_OFFERS]]


# ---- bookings ----

_STATUSES = {"confirmed": OrderStatus.CONFIRMED, "changed": OrderStatus.CHANGED, "cancelled": OrderStatus.CANCELLED}
_CHANGES = {"booking.cancelled": "airline_cancellation", "booking.schedule_changed": "schedule_change"}
_DECIMALS = 2
# Virgin's error codes, by what they mean; a code not listed here falls back on the HTTP status.
_REFUSALS: dict[str, Callable[[str], AirlineError | OrderError]] = {
    "ITINERARY_NOT_FOUND": OfferUnavailable,
    "ITINERARY_EXPIRED": OfferExpired,
    "NO_AVAILABILITY": SeatsUnavailable,
    "BOOKING_NOT_FOUND": OrderNotFound,
    "BOOKING_FAILED": OrderRefused,
    "PASSPORT_REQUIRED": OrderRefused,
    "CURRENCY_MISMATCH": OrderRefused,
}


class _FlightRef(_Wire):
    flight_no: str = Field(alias="flightNo", max_length=8)
    origin: str = Field(alias="from", max_length=8)
    destination: str = Field(alias="to", max_length=8)
    departs_at: str = Field(alias="departsAt", max_length=40)


class _LegRef(_Wire):
    flights: list[_FlightRef] = Field(min_length=1, max_length=8)


class _Priced(_Wire):
    itinerary_id: str = Field(alias="itineraryId", max_length=200)
    price: _Price
    previous_price: _Price | None = Field(default=None, alias="previousPrice")
    valid_until: str = Field(alias="validUntil", max_length=40)
    traveller_count: int = Field(alias="travellerCount", ge=1, le=9)
    passport_required: bool = Field(default=False, alias="passportRequired")
    legs: list[_LegRef] = Field(min_length=1, max_length=2)


class _Booking(_Wire):
    # No travellers: the names Virgin sends back are personal data we have no use for, so they are never read.
    booking_reference: str = Field(alias="bookingReference", max_length=128)
    status: str = Field(max_length=32)
    itinerary_id: str | None = Field(default=None, alias="itineraryId", max_length=200)
    client_reference: str | None = Field(default=None, alias="clientReference", max_length=128)
    price: _Price
    traveller_count: int = Field(alias="travellerCount", ge=1, le=9)
    legs: list[_LegRef] = Field(min_length=1, max_length=2)
    created_at: str | None = Field(default=None, alias="createdAt", max_length=40)
    updated_at: str = Field(alias="updatedAt", max_length=40)


class _Found(_Wire):
    bookings: list[_Booking] = Field(max_length=100)


class _Problem(_Wire):
    error_code: str = Field(alias="errorCode", max_length=64)
    errors: list[dict[str, Any]] = Field(default_factory=list, max_length=20)
    current_price: _Price | None = Field(default=None, alias="currentPrice")


class _ChangeData(_Wire):
    reason: str | None = Field(default=None, max_length=2000)
    booking: _Booking


class _ChangeEvent(_Wire):
    type: str = Field(max_length=64)
    created_at: str = Field(alias="createdAt", max_length=40)
    data: _ChangeData


def price_request(offer_id: str) -> RestRequest:
    return RestRequest("GET", f"{ITINERARIES_PATH}/{quote(offer_id, safe='')}/price")


def _traveller(passenger: Passenger) -> dict[str, Any]:
    traveller: dict[str, Any] = {
        "givenName": passenger.given_name,
        "surname": passenger.family_name,
        "dateOfBirth": passenger.date_of_birth.isoformat(),
    }
    document = passenger.document
    if document is not None:
        traveller["passport"] = {
            "type": document.kind,
            "number": document.number,
            "issuingCountry": document.issuing_country,
            "expiry": document.expires_on.isoformat(),
        }
    return traveller


def create_request(
    offer_id: str, party: OrderParty, *, accepted_total: Decimal, currency: str, client_reference: str
) -> RestRequest:
    body = {
        "itineraryId": offer_id,
        "expectedPrice": {
            "totalMinor": int(accepted_total.scaleb(_DECIMALS).to_integral_value()),
            "currency": currency,
            "decimals": _DECIMALS,
        },
        "travellers": [_traveller(p) for p in party.passengers],
        "contactDetails": {"email": party.contact.email, "mobile": party.contact.phone},
    }
    return RestRequest("POST", BOOKINGS_PATH, json=body, headers={REFERENCE_HEADER: client_reference})


def find_request(client_reference: str) -> RestRequest:
    return RestRequest("GET", BOOKINGS_PATH, params={"clientReference": client_reference})


def retrieve_request(order_id: str) -> RestRequest:
    return RestRequest("GET", f"{BOOKINGS_PATH}/{quote(order_id, safe='')}")


def cancel_request(order_id: str) -> RestRequest:
    return RestRequest("DELETE", f"{BOOKINGS_PATH}/{quote(order_id, safe='')}")


def _flights(legs: list[_LegRef]) -> list[str]:
    return [
        flight_line(
            carrier_code=f.flight_no[:2],
            number=f.flight_no[2:],
            origin=f.origin,
            destination=f.destination,
            departs=f.departs_at,
        )
        for leg in legs
        for f in leg.flights
    ]


def parse_priced(body: Any, *, airline: str) -> PricedOffer:
    priced = _Priced.model_validate(body)
    previous = priced.previous_price
    return PricedOffer(
        offer_id=N.offer_id(priced.itinerary_id, "itineraryId"),
        total_amount=_amount(priced.price, "price.totalMinor"),
        currency=N.currency(priced.price.currency, "price.currency"),
        previous_amount=_amount(previous, "previousPrice.totalMinor") if previous is not None else None,
        expires_at=N.utc_time(priced.valid_until, "validUntil"),
        passenger_count=priced.traveller_count,
        documents_required=priced.passport_required,
        flights=_flights(priced.legs),
    )


def _state(booking: _Booking, airline: str) -> OrderState:
    status = _STATUSES.get(booking.status)
    if status is None:
        raise N.UntrustedValue("booking.status", "not a Virgin Atlantic booking status")
    return OrderState(
        order_id=N.offer_id(booking.booking_reference, "booking.bookingReference"),
        airline=airline,
        status=status,
        offer_id=N.offer_id(booking.itinerary_id, "booking.itineraryId") if booking.itinerary_id is not None else None,
        total_amount=_amount(booking.price, "booking.price.totalMinor"),
        currency=N.currency(booking.price.currency, "booking.price.currency"),
        passenger_count=booking.traveller_count,
        flights=_flights(booking.legs),
        client_reference=N.clean_text(booking.client_reference, "booking.clientReference", 128),
        created_at=N.utc_time(booking.created_at, "booking.createdAt") if booking.created_at is not None else None,
        updated_at=N.utc_time(booking.updated_at, "booking.updatedAt"),
    )


def parse_order(body: Any, *, airline: str) -> OrderState:
    return _state(_Booking.model_validate(body), airline)


def parse_found(body: Any, *, airline: str) -> OrderState | None:
    return latest_order([_state(booking, airline) for booking in _Found.model_validate(body).bookings])


def order_error(status: int, body: Any, *, airline: str) -> AirlineError | OrderError | None:
    problem = _Problem.model_validate(body)
    messages = [m for m in (e.get("message") for e in problem.errors) if isinstance(m, str)]
    reason = N.clean_text(messages[0], "errors.message", 160) if messages else None
    reason = reason or problem.error_code
    if problem.error_code == "PRICE_CHANGED":
        current = problem.current_price
        if current is None:
            return PriceChanged(f"{airline}: the price changed ({reason})")
        amount = _amount(current, "currentPrice.totalMinor")
        currency = N.currency(current.currency, "currentPrice.currency")
        return PriceChanged(
            f"{airline}: the price is now {amount} {currency}", amount=f"{amount:.2f}", currency=currency
        )
    make = _REFUSALS.get(problem.error_code)
    return make(f"{airline}: {reason}") if make is not None else None


def parse_change(body: Any, *, airline: str) -> OrderChange:
    event = _ChangeEvent.model_validate(body)
    change = _CHANGES.get(event.type)
    if change is None:
        raise N.UntrustedValue("type", "not a Virgin Atlantic booking change")
    return OrderChange(
        order=_state(event.data.booking, airline),
        change=change,
        reason=N.clean_text(event.data.reason, "data.reason"),
        at=N.utc_time(event.created_at, "createdAt"),
    )
