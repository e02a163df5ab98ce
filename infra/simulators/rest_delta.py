"""A simulated Delta API: shopping (``POST /shop/v1/offers`` with a JSON body), pricing and orders.

Its own dialect on purpose: slices and passenger groups in the body (PTCs ADT/CNN/INF), Delta's cabin
names (MAIN, PREMIUM_SELECT, DELTA_ONE, FIRST), offers grouped in ``offerSets`` by itinerary, and prices
as decimal strings. Orders, on the airline's order desk (`infra.simulators.orders`):

    POST /shop/v1/offers/price             {"offerId"} → {"pricedOffer": {...}}
    POST /order/v1/orders                  {"offerId", "clientReference", "acceptedTotalPrice", "passengers",
                                           "contact"} → 201 {"order": {...}}   (no deduplication on the reference)
    GET  /order/v1/orders?clientReference= {"orders": [...]}, oldest first
    GET  /order/v1/orders/{orderId}        {"order": {...}}
    POST /order/v1/orders/{orderId}/cancel {"order": {...}}

Errors are ``{"errors": [{"code", "message"}]}``: 404 OFFER_NOT_FOUND / ORDER_NOT_FOUND, 410 OFFER_EXPIRED,
409 SOLD_OUT / PRICE_CHANGED (with ``currentTotalPrice``), 422 ORDER_FAILED / TRAVEL_DOCUMENT_REQUIRED /
CURRENCY_MISMATCH, 400 INVALID_REQUEST. Changes Delta makes itself are pushed to the webhook (`WebhookPusher`)
as ``{"eventId", "eventType": ORDER_CANCELLED | ORDER_SCHEDULE_CHANGED, "occurredAt", "reasonText", "order"}``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Scope
from structlog.contextvars import bound_contextvars

from connectors.kinds.boundary import api_key
from connectors.orders import sign_body
from infra.simulators.faults import AirlineGate, AirlineState, IsBusiness
from infra.simulators.orders import OrderProblem, PriceMoved, Quote, SimOrder
from infra.simulators.schedule import AIRCRAFT_NAMES, CabinName, FareOffer, Schedule, ShopQuery, stable_seed
from jetbridge.airlines import Airline, load_registry
from jetbridge.errors import ConfigurationError
from jetbridge.http import build_http_client
from jetbridge.log import get_logger
from jetbridge.settings import get_settings

__all__ = [
    "OFFERS_PATH",
    "ORDERS_PATH",
    "PRICE_PATH",
    "ChangeRenderer",
    "WebhookPusher",
    "build_app",
    "is_route",
    "register_pusher",
]

log = get_logger(__name__)

OFFERS_PATH = "/shop/v1/offers"
PRICE_PATH = "/shop/v1/offers/price"
ORDERS_PATH = "/order/v1/orders"
# Webhook pushes: tries, the first wait between them (doubling), each try's timeout, and the window for all.
PUSH_TRIES = 5
PUSH_BACKOFF_S = 0.25
PUSH_TIMEOUT_S = 1.0
PUSH_WINDOW_S = 5.0
_CABINS: dict[str, CabinName] = {
    "MAIN": "economy",
    "PREMIUM_SELECT": "premium",
    "DELTA_ONE": "business",
    "FIRST": "first",
}
_CABIN_OUT: dict[CabinName, str] = {v: k for k, v in _CABINS.items()}
_BRAND_IDS = {
    "Basic Economy": "BE",
    "Main Cabin": "MAIN",
    "Comfort+": "COMFORT_PLUS",
    "Premium Select": "PREMIUM_SELECT",
    "Premium Select Refundable": "PREMIUM_SELECT_REF",
    "Delta One": "DELTA_ONE",
    "Delta One Refundable": "DELTA_ONE_REF",
}


class _Slice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    origin: str = Field(max_length=3)
    destination: str = Field(max_length=3)
    departure_date: date = Field(alias="departureDate")


class _PassengerGroup(BaseModel):
    type: str
    count: int = Field(ge=0, le=9)


class _ShopRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    trip_type: str = Field(alias="tripType")
    origin_airport_code: str = Field(alias="originAirportCode", max_length=3)
    destination_airport_code: str = Field(alias="destinationAirportCode", max_length=3)
    slices: list[_Slice] = Field(min_length=1, max_length=2)
    passengers: list[_PassengerGroup] = Field(min_length=1, max_length=3)
    cabin: str = "MAIN"
    currency_code: str = Field(default="USD", alias="currencyCode", max_length=3)


def _error(code: str, message: str, status: int = 422) -> JSONResponse:
    return JSONResponse({"errors": [{"code": code, "message": message[:500]}]}, status_code=status)


def _parse(raw: bytes, airline: str) -> ShopQuery | JSONResponse:
    try:
        body = _ShopRequest.model_validate_json(raw)
    except ValidationError as exc:
        return _error("INVALID_REQUEST", f"{exc.error_count()} invalid field(s)", 400)
    if body.cabin not in _CABINS:
        return _error("INVALID_CABIN", "cabin must be MAIN, PREMIUM_SELECT, DELTA_ONE or FIRST")
    expected = "ROUND_TRIP" if len(body.slices) == 2 else "ONE_WAY"
    if body.trip_type != expected:
        return _error("INVALID_TRIP_TYPE", f"{len(body.slices)} slice(s) means tripType {expected}")
    counts = {"ADT": 0, "CNN": 0, "INF": 0}
    for group in body.passengers:
        if group.type not in counts:
            return _error("INVALID_PASSENGER_TYPE", "passenger type must be ADT, CNN or INF")
        counts[group.type] += group.count
    first = body.slices[0]
    if (body.origin_airport_code, body.destination_airport_code) != (first.origin, first.destination):
        return _error("INVALID_REQUEST", "originAirportCode/destinationAirportCode must match the first slice")
    query = ShopQuery(
        airline=airline,
        origin=first.origin.upper(),
        destination=first.destination.upper(),
        departure_date=first.departure_date,
        return_date=body.slices[1].departure_date if len(body.slices) == 2 else None,
        adults=counts["ADT"],
        children=counts["CNN"],
        infants=counts["INF"],
        cabin=_CABINS[body.cabin],
        currency=body.currency_code.upper(),
    )
    problems = query.problems(today=datetime.now(UTC).date())
    return _error("INVALID_REQUEST", "; ".join(problems)) if problems else query


def _slices(offer: FareOffer) -> list[dict[str, Any]]:
    """The flights of an offer (or an order) as Delta's slices of segments."""
    return [
        {
            "sliceId": f"S{i + 1}",
            "durationMinutes": flight.duration_minutes,
            "segments": [
                {
                    "marketingCarrier": flight.carrier,
                    "flightNumber": str(flight.number),
                    "origin": {"code": flight.origin},
                    "destination": {"code": flight.destination},
                    "scheduledDeparture": flight.departure.isoformat(timespec="seconds"),
                    "scheduledArrival": flight.arrival.isoformat(timespec="seconds"),
                    "equipment": {
                        "code": flight.aircraft,
                        "name": AIRCRAFT_NAMES.get(flight.aircraft),
                    },
                }
            ],
        }
        for i, flight in enumerate(offer.journeys)
    ]


def _money(amount: Decimal, currency: str) -> dict[str, str]:
    return {"amount": f"{amount:.2f}", "currencyCode": currency}


def _offer_sets(offers: list[FareOffer]) -> list[dict[str, Any]]:
    """Offers grouped by the flights they fly: one offer set per itinerary, one offer per brand."""
    sets: dict[tuple[str, ...], dict[str, Any]] = {}
    for offer in offers:
        key = tuple(f"{f.designator}@{f.departure.isoformat()}" for f in offer.journeys)
        offer_set = sets.get(key)
        if offer_set is None:
            offer_set = {"offerSetId": f"OS{len(sets) + 1}", "itinerary": {"slices": _slices(offer)}, "offers": []}
            sets[key] = offer_set
        offer_set["offers"].append(
            {
                "offerId": offer.offer_id,
                "brand": {"id": _BRAND_IDS.get(offer.brand, "OTHER"), "name": offer.brand},
                "cabin": _CABIN_OUT[offer.cabin],
                "totalPrice": _money(offer.total, offer.currency),
                "pricePerPassenger": [
                    {"type": "ADT", "amount": f"{offer.adult_price:.2f}"},
                    {"type": "CNN", "amount": f"{offer.child_price:.2f}"},
                    {"type": "INF", "amount": f"{offer.infant_price:.2f}"},
                ],
                "expiresAt": _instant(offer.expires_at),
            }
        )
    return list(sets.values())


def _instant(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds")


# ---- orders ----


class _PriceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    offer_id: str = Field(alias="offerId", min_length=1, max_length=200)


class _TravelDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")

    document_type: Literal["PASSPORT", "NATIONAL_ID"] = Field(alias="documentType")
    document_number: str = Field(alias="documentNumber", min_length=1, max_length=20)
    issuing_country_code: str = Field(alias="issuingCountryCode", min_length=2, max_length=2)
    expiration_date: date = Field(alias="expirationDate")


class _Traveler(BaseModel):
    model_config = ConfigDict(extra="ignore")

    passenger_id: str = Field(alias="passengerId", max_length=8)
    first_name: str = Field(alias="firstName", min_length=1, max_length=40)
    last_name: str = Field(alias="lastName", min_length=1, max_length=40)
    birth_date: date = Field(alias="birthDate")
    travel_document: _TravelDocument | None = Field(default=None, alias="travelDocument")


class _Contact(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email_address: str = Field(alias="emailAddress", min_length=3, max_length=120)
    phone_number: str = Field(alias="phoneNumber", min_length=6, max_length=20)


class _Amount(BaseModel):
    model_config = ConfigDict(extra="ignore")

    amount: Decimal = Field(ge=0, max_digits=12, decimal_places=2)
    currency_code: str = Field(alias="currencyCode", min_length=3, max_length=3)


class _CreateOrder(BaseModel):
    model_config = ConfigDict(extra="ignore")

    offer_id: str = Field(alias="offerId", min_length=1, max_length=200)
    client_reference: str | None = Field(default=None, alias="clientReference", max_length=128)
    accepted_total_price: _Amount = Field(alias="acceptedTotalPrice")
    passengers: list[_Traveler] = Field(min_length=1, max_length=9)
    contact: _Contact


# What each problem of the order desk is in Delta's dialect: HTTP status and error code.
_PROBLEMS: dict[str, tuple[int, str]] = {
    "offer_not_found": (404, "OFFER_NOT_FOUND"),
    "offer_expired": (410, "OFFER_EXPIRED"),
    "sold_out": (409, "SOLD_OUT"),
    "price_changed": (409, "PRICE_CHANGED"),
    "order_failed": (422, "ORDER_FAILED"),
    "order_not_found": (404, "ORDER_NOT_FOUND"),
}
_ORDER_STATUS = {"CONFIRMED": "CONFIRMED", "CHANGED": "SCHEDULE_CHANGED", "CANCELLED": "CANCELLED"}
_EVENT_TYPES = {"airline_cancellation": "ORDER_CANCELLED", "schedule_change": "ORDER_SCHEDULE_CHANGED"}


def _problem(exc: OrderProblem) -> JSONResponse:
    status, code = _PROBLEMS.get(exc.code, (422, "ORDER_FAILED"))
    error: dict[str, Any] = {"code": code, "message": str(exc)[:500]}
    if isinstance(exc, PriceMoved):
        error["currentTotalPrice"] = _money(exc.total, exc.currency)
    return JSONResponse({"errors": [error]}, status_code=status)


def _priced(quote: Quote) -> dict[str, Any]:
    return {
        "offerId": quote.offer.offer_id,
        "totalPrice": _money(quote.total, quote.offer.currency),
        "originalTotalPrice": (
            _money(quote.previous_total, quote.offer.currency) if quote.previous_total is not None else None
        ),
        "expiresAt": _instant(quote.offer.expires_at),
        "passengerCount": quote.passenger_count,
        "travelDocumentRequired": quote.documents_required,
        "itinerary": {"slices": _slices(quote.offer)},
    }


def _order(order: SimOrder, *, names: bool) -> dict[str, Any]:
    """An order in Delta's shape; its passengers' names only where the buyer reads its own order."""
    passengers = [
        {"passengerId": f"P{i + 1}", **({"firstName": p["given_name"], "lastName": p["family_name"]} if names else {})}
        for i, p in enumerate(order.passengers)
    ]
    return {
        "orderId": order.order_id,
        "orderStatus": _ORDER_STATUS[order.status],
        "offerId": order.offer.offer_id,
        "clientReference": order.client_reference,
        "totalPrice": _money(order.total, order.currency),
        "passengers": passengers,
        "itinerary": {"slices": _slices(order.offer)},
        "createdAt": _instant(order.created_at),
        "updatedAt": _instant(order.updated_at),
    }


def _change_notification(order: SimOrder, change: str, reason: str | None) -> dict[str, Any]:
    """Delta's push when it changes an order itself: the order as it now stands, without names."""
    return {
        "eventId": secrets.token_hex(8),
        "eventType": _EVENT_TYPES.get(change, change.upper()),
        "occurredAt": _instant(order.updated_at),
        "reasonText": reason,
        "order": _order(order, names=False),
    }


def _traveler(traveler: _Traveler) -> dict[str, Any]:
    document = traveler.travel_document
    return {
        "given_name": traveler.first_name,
        "family_name": traveler.last_name,
        "date_of_birth": traveler.birth_date.isoformat(),
        "document": (
            {
                "kind": document.document_type.lower(),
                "number": document.document_number,
                "issuing_country": document.issuing_country_code,
                "expires_on": document.expiration_date.isoformat(),
            }
            if document is not None
            else None
        ),
    }


def build_app(state: AirlineState, schedule: Schedule) -> ASGIApp:
    """The airline's REST API behind its gate: shopping, pricing and orders."""

    async def shop(request: Request) -> Response:
        parsed = _parse(await request.body(), state.code)
        if isinstance(parsed, JSONResponse):
            return parsed
        offers = schedule.offers(parsed, now=datetime.now(UTC), ttl_s=state.config.offer_ttl_s)
        state.orders.remember(
            offers, parsed, documents_required=schedule.international(parsed.origin, parsed.destination)
        )
        body = json.dumps(
            {
                "transactionId": f"{stable_seed(parsed, datetime.now(UTC).isoformat()):016x}",
                "offerSets": _offer_sets(offers),
            }
        ).encode()
        if state.malformed_now():
            # Valid-looking start, then garbage: invalid JSON that still begins like the real thing.
            body = body[: max(len(body) // 3, 10)] + b"\x00<!-- upstream timeout -->"
        return Response(body, media_type="application/json")

    async def price(request: Request) -> Response:
        try:
            asked = _PriceRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return _error("INVALID_REQUEST", f"{exc.error_count()} invalid field(s)", 400)
        try:
            quote = state.orders.price(asked.offer_id)
        except OrderProblem as exc:
            return _problem(exc)
        return JSONResponse({"pricedOffer": _priced(quote)})

    async def create_order(request: Request) -> Response:
        try:
            asked = _CreateOrder.model_validate_json(await request.body())
        except ValidationError as exc:
            # Counted, never quoted: the fields are passengers' personal data.
            return _error("INVALID_REQUEST", f"{exc.error_count()} invalid field(s)", 400)
        try:
            quote = state.orders.price(asked.offer_id)
            if quote.documents_required and any(p.travel_document is None for p in asked.passengers):
                return _error("TRAVEL_DOCUMENT_REQUIRED", "an international itinerary needs every travel document")
            if asked.accepted_total_price.currency_code.upper() != quote.offer.currency:
                return _error("CURRENCY_MISMATCH", f"the offer is priced in {quote.offer.currency}")
            order = await state.orders.create(
                asked.offer_id,
                passengers=[_traveler(p) for p in asked.passengers],
                contact={"email": asked.contact.email_address, "phone": asked.contact.phone_number},
                client_reference=asked.client_reference,
                accepted_total=asked.accepted_total_price.amount,
            )
        except OrderProblem as exc:
            return _problem(exc)
        return JSONResponse({"order": _order(order, names=True)}, status_code=201)

    async def find_orders(request: Request) -> Response:
        reference = request.query_params.get("clientReference", "")
        if not reference:
            return _error("INVALID_REQUEST", "clientReference is required", 400)
        found = sorted(
            (o for o in state.orders.orders.values() if o.client_reference == reference), key=lambda o: o.created_at
        )
        return JSONResponse({"orders": [_order(o, names=True) for o in found]})

    async def get_order(request: Request) -> Response:
        try:
            order = state.orders.get(str(request.path_params["order_id"]))
        except OrderProblem as exc:
            return _problem(exc)
        return JSONResponse({"order": _order(order, names=True)})

    async def cancel_order(request: Request) -> Response:
        try:
            order = state.orders.cancel(str(request.path_params["order_id"]))
        except OrderProblem as exc:
            return _problem(exc)
        return JSONResponse({"order": _order(order, names=True)})

    routes = [
        Route(OFFERS_PATH, shop, methods=["POST"]),
        Route(PRICE_PATH, price, methods=["POST"]),
        Route(ORDERS_PATH, create_order, methods=["POST"]),
        Route(ORDERS_PATH, find_orders, methods=["GET"]),
        Route(ORDERS_PATH + "/{order_id}", get_order, methods=["GET"]),
        Route(ORDERS_PATH + "/{order_id}/cancel", cancel_order, methods=["POST"]),
    ]
    register_pusher(state, _change_notification)
    return AirlineGate(Starlette(routes=routes), state, is_business=is_route(routes))


# ---- shared by the REST simulators: business routes, and airline-initiated changes pushed to a webhook ----


def is_route(routes: list[Route]) -> IsBusiness:
    """Business is any request one of the app's own routes serves (method and path), health excluded."""

    def check(scope: Scope, _body: bytes) -> bool:
        return any(route.matches(scope)[0] is Match.FULL for route in routes)

    return check


ChangeRenderer = Callable[[SimOrder, str, str | None], dict[str, Any]]
"""The airline's change notification (JSON) for an order, what changed and the reason."""


class WebhookPusher:
    """An order-desk listener that POSTs the airline's change notification to ``state.config.webhook_url``.

    The body is signed with ``connectors.orders.sign_body`` in ``X-Jetbridge-Signature``. The simulators accept any
    API key (`faults.api_key_of`), so they do not know the one the connectors hold: they sign with the same key
    the connectors send, `connectors.kinds.boundary.api_key` of the registry's entry (the value of its
    ``credential`` environment variable, else the development key ``dev-key-<code>``), the registry being
    ``JB_AIRLINES_FILE`` or the shipped one. Each push runs in a background task (the control call that made the
    change does not wait for it), tried up to ``PUSH_TRIES`` times with backoff within ``PUSH_WINDOW_S``.
    """

    def __init__(self, state: AirlineState, render: ChangeRenderer) -> None:
        self._state = state
        self._render = render
        self._key: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, order: SimOrder, change: str, reason: str | None) -> None:
        url = self._state.config.webhook_url
        if not url:
            return
        body = json.dumps(self._render(order, change, reason)).encode()
        task = asyncio.create_task(self._push(url, body, order.order_id, change), name=f"push-{self._state.code}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Wait for the pushes in flight to be delivered or given up (tests; a clean stop)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def key(self) -> str:
        """The signing key, looked up once (see the class's doc)."""
        if self._key is None:
            airline: Airline | None
            try:
                airline = load_registry(get_settings().airlines_file).get(self._state.code)
            except ConfigurationError:
                airline = None
            if airline is None:
                airline = Airline(code=self._state.code, name=self._state.code, kind="rest", endpoint="http://unset")
            self._key = api_key(airline).get_secret_value()
        return self._key

    async def _push(self, url: str, body: bytes, order_id: str, change: str) -> None:
        headers = {"Content-Type": "application/json", "X-Jetbridge-Signature": sign_body(body, self.key())}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUSH_WINDOW_S
        why = "no attempt"
        with bound_contextvars(airline=self._state.code, order_id=order_id, change=change):
            async with build_http_client(timeout_s=PUSH_TIMEOUT_S, max_connections=2) as http:
                for attempt in range(1, PUSH_TRIES + 1):
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        answer = await http.post(url, content=body, headers=headers, timeout=min(PUSH_TIMEOUT_S, left))
                    except httpx.HTTPError as exc:
                        why = type(exc).__name__
                    else:
                        if answer.is_success:
                            log.info("order change pushed", attempts=attempt, status=answer.status_code)
                            return
                        why = f"HTTP {answer.status_code}"
                    if attempt < PUSH_TRIES:
                        await asyncio.sleep(min(PUSH_BACKOFF_S * 2 ** (attempt - 1), max(0.0, deadline - loop.time())))
                log.warning("order change not delivered", reason=why, attempts=attempt, url=url[:200])


def register_pusher(state: AirlineState, render: ChangeRenderer) -> None:
    """Listen to the airline's order desk once: an app built again (a ``refuse`` fault cleared) reuses it."""
    if not any(isinstance(listener, WebhookPusher) for listener in state.orders.listeners):
        state.orders.listeners.append(WebhookPusher(state, render))
