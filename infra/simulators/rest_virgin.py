"""A simulated Virgin Atlantic API: shopping (``GET /api/v2/flights/search`` with query parameters), pricing
and bookings.

Its own dialect on purpose: camelCase parameters (``from``, ``to``, ``departDate``, ``cabinClass``), the
cabins Economy/Premium/Upper Class, and prices in minor units (``totalMinor`` with ``decimals``). Bookings, on
the airline's order desk (`infra.simulators.orders`):

    GET    /api/v2/itineraries/{id}/price          the itinerary's live price ({"itineraryId", "price", ...})
    POST   /api/v2/bookings                        {"itineraryId", "expectedPrice", "travellers", "contactDetails"}
                                                   with the buyer's reference in header ``X-Client-Reference``
                                                   → 201 a booking (no deduplication on the reference)
    GET    /api/v2/bookings?clientReference=       {"bookings": [...], "count": n}, oldest first
    GET    /api/v2/bookings/{bookingReference}     a booking
    DELETE /api/v2/bookings/{bookingReference}     the booking, cancelled

Errors are ``{"errorCode", "errors": [{"field", "message"}]}``: 404 ITINERARY_NOT_FOUND / BOOKING_NOT_FOUND,
410 ITINERARY_EXPIRED, 409 NO_AVAILABILITY / PRICE_CHANGED (with ``currentPrice``), 422 BOOKING_FAILED /
PASSPORT_REQUIRED / CURRENCY_MISMATCH, 400 VALIDATION_ERROR. Changes Virgin makes itself are pushed to the
webhook (`infra.simulators.rest_delta.WebhookPusher`) as ``{"id", "type": booking.cancelled |
booking.schedule_changed, "createdAt", "data": {"reason", "booking"}}``.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from infra.simulators.faults import AirlineGate, AirlineState
from infra.simulators.orders import OrderProblem, PriceMoved, Quote, SimOrder
from infra.simulators.rest_delta import is_route, register_pusher
from infra.simulators.schedule import AIRCRAFT_NAMES, CabinName, FareOffer, Schedule, ShopQuery, stable_seed

__all__ = ["BOOKINGS_PATH", "ITINERARIES_PATH", "SEARCH_PATH", "build_app"]

SEARCH_PATH = "/api/v2/flights/search"
ITINERARIES_PATH = "/api/v2/itineraries"
BOOKINGS_PATH = "/api/v2/bookings"
REFERENCE_HEADER = "X-Client-Reference"
_DECIMALS = 2
_CABINS: dict[str, CabinName] = {"economy": "economy", "premium": "premium", "upper": "business"}
_CABIN_OUT: dict[CabinName, str] = {v: k for k, v in _CABINS.items()}


def _invalid(field: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"errorCode": "VALIDATION_ERROR", "errors": [{"field": field, "message": message}]}, status_code=400
    )


def _int(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    return default if raw in (None, "") else int(raw)


def _parse(request: Request, airline: str) -> ShopQuery | JSONResponse:
    params = dict(request.query_params)
    try:
        depart = date.fromisoformat(params.get("departDate", ""))
        ret = params.get("returnDate")
        query = ShopQuery(
            airline=airline,
            origin=params.get("from", "").upper(),
            destination=params.get("to", "").upper(),
            departure_date=depart,
            return_date=date.fromisoformat(ret) if ret else None,
            adults=_int(params, "adults", 1),
            children=_int(params, "children", 0),
            infants=_int(params, "infants", 0),
            cabin=_CABINS[params.get("cabinClass", "economy")],
            currency=params.get("currency", "GBP").upper(),
        )
    except KeyError:
        return _invalid("cabinClass", "must be economy, premium or upper")
    except ValueError:
        return _invalid("query", "dates must be YYYY-MM-DD and passenger counts integers")
    problems = query.problems(today=datetime.now(UTC).date())
    return _invalid("query", "; ".join(problems)) if problems else query


def _minor(amount: Decimal, currency: str) -> dict[str, Any]:
    return {"totalMinor": int(amount * 10**_DECIMALS), "currency": currency, "decimals": _DECIMALS}


def _zulu(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _legs(offer: FareOffer) -> list[dict[str, Any]]:
    return [
        {
            "direction": "outbound" if i == 0 else "inbound",
            "durationMinutes": flight.duration_minutes,
            "flights": [
                {
                    "flightNo": flight.designator,
                    "from": flight.origin,
                    "to": flight.destination,
                    "departsAt": flight.departure.isoformat(timespec="minutes"),
                    "arrivesAt": flight.arrival.isoformat(timespec="minutes"),
                    "aircraft": {"code": flight.aircraft, "name": AIRCRAFT_NAMES.get(flight.aircraft)},
                }
            ],
        }
        for i, flight in enumerate(offer.journeys)
    ]


def _itinerary(offer: FareOffer) -> dict[str, Any]:
    scale = 10**_DECIMALS
    return {
        "id": offer.offer_id,
        "fareFamily": offer.brand,
        "cabinClass": _CABIN_OUT[offer.cabin],
        "price": {
            **_minor(offer.total, offer.currency),
            "perPassenger": [
                {"type": "adult", "amountMinor": int(offer.adult_price * scale)},
                {"type": "child", "amountMinor": int(offer.child_price * scale)},
                {"type": "infant", "amountMinor": int(offer.infant_price * scale)},
            ],
        },
        "validUntil": _zulu(offer.expires_at),
        "legs": _legs(offer),
    }


# ---- bookings ----


class _Passport(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["passport", "national_id"] = "passport"
    number: str = Field(min_length=1, max_length=20)
    issuing_country: str = Field(alias="issuingCountry", min_length=2, max_length=2)
    expiry: date


class _Traveller(BaseModel):
    model_config = ConfigDict(extra="ignore")

    given_name: str = Field(alias="givenName", min_length=1, max_length=40)
    surname: str = Field(min_length=1, max_length=40)
    date_of_birth: date = Field(alias="dateOfBirth")
    passport: _Passport | None = None


class _ContactDetails(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: str = Field(min_length=3, max_length=120)
    mobile: str = Field(min_length=6, max_length=20)


class _Price(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    total_minor: int = Field(alias="totalMinor", ge=0)
    currency: str = Field(min_length=3, max_length=3)
    decimals: int = Field(ge=0, le=4)


class _Booking(BaseModel):
    model_config = ConfigDict(extra="ignore")

    itinerary_id: str = Field(alias="itineraryId", min_length=1, max_length=200)
    expected_price: _Price = Field(alias="expectedPrice")
    travellers: list[_Traveller] = Field(min_length=1, max_length=9)
    contact_details: _ContactDetails = Field(alias="contactDetails")


# What each problem of the order desk is in Virgin's dialect: HTTP status, error code and the field it is about.
_PROBLEMS: dict[str, tuple[int, str, str]] = {
    "offer_not_found": (404, "ITINERARY_NOT_FOUND", "itineraryId"),
    "offer_expired": (410, "ITINERARY_EXPIRED", "itineraryId"),
    "sold_out": (409, "NO_AVAILABILITY", "itineraryId"),
    "price_changed": (409, "PRICE_CHANGED", "expectedPrice"),
    "order_failed": (422, "BOOKING_FAILED", "booking"),
    "order_not_found": (404, "BOOKING_NOT_FOUND", "bookingReference"),
}
_EVENT_TYPES = {"airline_cancellation": "booking.cancelled", "schedule_change": "booking.schedule_changed"}


def _refusal(
    code: str, field: str, message: str, status: int = 422, *, current: dict[str, Any] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"errorCode": code, "errors": [{"field": field, "message": message[:500]}]}
    if current is not None:
        body["currentPrice"] = current
    return JSONResponse(body, status_code=status)


def _problem(exc: OrderProblem) -> JSONResponse:
    status, code, field = _PROBLEMS.get(exc.code, (422, "BOOKING_FAILED", "booking"))
    current = _minor(exc.total, exc.currency) if isinstance(exc, PriceMoved) else None
    return _refusal(code, field, str(exc), status, current=current)


def _priced(quote: Quote) -> dict[str, Any]:
    currency = quote.offer.currency
    return {
        "itineraryId": quote.offer.offer_id,
        "price": _minor(quote.total, currency),
        "priceChanged": quote.previous_total is not None and quote.previous_total != quote.total,
        "previousPrice": _minor(quote.previous_total, currency) if quote.previous_total is not None else None,
        "validUntil": _zulu(quote.offer.expires_at),
        "travellerCount": quote.passenger_count,
        "passportRequired": quote.documents_required,
        "legs": _legs(quote.offer),
    }


def _booking(order: SimOrder, *, names: bool) -> dict[str, Any]:
    """A booking in Virgin's shape; the travellers' names only where the buyer reads its own booking."""
    booking: dict[str, Any] = {
        "bookingReference": order.order_id,
        "status": order.status.lower(),
        "itineraryId": order.offer.offer_id,
        "clientReference": order.client_reference,
        "price": _minor(order.total, order.currency),
        "travellerCount": len(order.passengers),
        "legs": _legs(order.offer),
        "createdAt": _zulu(order.created_at),
        "updatedAt": _zulu(order.updated_at),
    }
    if names:
        booking["travellers"] = [{"givenName": p["given_name"], "surname": p["family_name"]} for p in order.passengers]
    return booking


def _change_notification(order: SimOrder, change: str, reason: str | None) -> dict[str, Any]:
    """Virgin's push when it changes a booking itself: the booking as it now stands, without names."""
    return {
        "id": f"evt_{secrets.token_hex(8)}",
        "type": _EVENT_TYPES.get(change, f"booking.{change}"),
        "createdAt": _zulu(order.updated_at),
        "data": {"reason": reason, "booking": _booking(order, names=False)},
    }


def _traveller(traveller: _Traveller) -> dict[str, Any]:
    passport = traveller.passport
    return {
        "given_name": traveller.given_name,
        "family_name": traveller.surname,
        "date_of_birth": traveller.date_of_birth.isoformat(),
        "document": (
            {
                "kind": passport.type,
                "number": passport.number,
                "issuing_country": passport.issuing_country,
                "expires_on": passport.expiry.isoformat(),
            }
            if passport is not None
            else None
        ),
    }


def build_app(state: AirlineState, schedule: Schedule) -> ASGIApp:
    """The airline's REST API behind its gate: shopping, pricing and bookings."""

    async def search(request: Request) -> Response:
        parsed = _parse(request, state.code)
        if isinstance(parsed, JSONResponse):
            return parsed
        offers = schedule.offers(parsed, now=datetime.now(UTC), ttl_s=state.config.offer_ttl_s)
        state.orders.remember(
            offers, parsed, documents_required=schedule.international(parsed.origin, parsed.destination)
        )
        body = json.dumps(
            {
                "searchId": f"{stable_seed(parsed, datetime.now(UTC).isoformat()):016x}",
                "currency": parsed.currency,
                "itineraries": [_itinerary(o) for o in offers],
            }
        ).encode()
        if state.malformed_now():
            # A body cut short: what a proxy or a crashed serializer leaves behind.
            body = body[: max(len(body) // 2, 10)]
        return Response(body, media_type="application/json")

    async def price(request: Request) -> Response:
        try:
            quote = state.orders.price(str(request.path_params["itinerary_id"]))
        except OrderProblem as exc:
            return _problem(exc)
        return JSONResponse(_priced(quote))

    async def book(request: Request) -> Response:
        try:
            asked = _Booking.model_validate_json(await request.body())
        except ValidationError as exc:
            # Counted, never quoted: the fields are travellers' personal data.
            return _invalid("booking", f"{exc.error_count()} invalid field(s)")
        reference = request.headers.get(REFERENCE_HEADER, "").strip()[:128] or None
        expected = asked.expected_price
        try:
            quote = state.orders.price(asked.itinerary_id)
            if quote.documents_required and any(t.passport is None for t in asked.travellers):
                return _refusal("PASSPORT_REQUIRED", "travellers", "an international itinerary needs every passport")
            if expected.currency.upper() != quote.offer.currency:
                return _refusal(
                    "CURRENCY_MISMATCH", "expectedPrice", f"the itinerary is priced in {quote.offer.currency}"
                )
            order = await state.orders.create(
                asked.itinerary_id,
                passengers=[_traveller(t) for t in asked.travellers],
                contact={"email": asked.contact_details.email, "phone": asked.contact_details.mobile},
                client_reference=reference,
                accepted_total=Decimal(expected.total_minor).scaleb(-expected.decimals),
            )
        except OrderProblem as exc:
            return _problem(exc)
        return JSONResponse(_booking(order, names=True), status_code=201)

    async def find_bookings(request: Request) -> Response:
        reference = request.query_params.get("clientReference", "")
        if not reference:
            return _invalid("clientReference", "is required")
        found = sorted(
            (o for o in state.orders.orders.values() if o.client_reference == reference), key=lambda o: o.created_at
        )
        return JSONResponse({"bookings": [_booking(o, names=True) for o in found], "count": len(found)})

    async def get_booking(request: Request) -> Response:
        try:
            order = state.orders.get(str(request.path_params["reference"]))
        except OrderProblem as exc:
            return _problem(exc)
        return JSONResponse(_booking(order, names=True))

    async def cancel_booking(request: Request) -> Response:
        try:
            order = state.orders.cancel(str(request.path_params["reference"]))
        except OrderProblem as exc:
            return _problem(exc)
        return JSONResponse(_booking(order, names=True))

    routes = [
        Route(SEARCH_PATH, search, methods=["GET"]),
        Route(ITINERARIES_PATH + "/{itinerary_id}/price", price, methods=["GET"]),
        Route(BOOKINGS_PATH, book, methods=["POST"]),
        Route(BOOKINGS_PATH, find_bookings, methods=["GET"]),
        Route(BOOKINGS_PATH + "/{reference}", get_booking, methods=["GET"]),
        Route(BOOKINGS_PATH + "/{reference}", cancel_booking, methods=["DELETE"]),
    ]
    register_pusher(state, _change_notification)
    return AirlineGate(Starlette(routes=routes), state, is_business=is_route(routes))
