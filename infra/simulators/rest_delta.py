"""A simulated Delta shopping API: ``POST /shop/v1/offers`` with a JSON body.

Its own dialect on purpose: slices and passenger groups in the body (PTCs ADT/CNN/INF), Delta's cabin
names (MAIN, PREMIUM_SELECT, DELTA_ONE, FIRST), offers grouped in ``offerSets`` by itinerary, and prices
as decimal strings.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from infra.simulators.faults import AirlineGate, AirlineState, is_path
from infra.simulators.schedule import AIRCRAFT_NAMES, CabinName, FareOffer, Schedule, ShopQuery, stable_seed

__all__ = ["OFFERS_PATH", "build_app"]

OFFERS_PATH = "/shop/v1/offers"
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


def _offer_sets(offers: list[FareOffer]) -> list[dict[str, Any]]:
    """Offers grouped by the flights they fly: one offer set per itinerary, one offer per brand."""
    sets: dict[tuple[str, ...], dict[str, Any]] = {}
    for offer in offers:
        key = tuple(f"{f.designator}@{f.departure.isoformat()}" for f in offer.journeys)
        offer_set = sets.get(key)
        if offer_set is None:
            offer_set = {
                "offerSetId": f"OS{len(sets) + 1}",
                "itinerary": {
                    "slices": [
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
                },
                "offers": [],
            }
            sets[key] = offer_set
        offer_set["offers"].append(
            {
                "offerId": offer.offer_id,
                "brand": {"id": _BRAND_IDS.get(offer.brand, "OTHER"), "name": offer.brand},
                "cabin": _CABIN_OUT[offer.cabin],
                "totalPrice": {"amount": f"{offer.total:.2f}", "currencyCode": offer.currency},
                "pricePerPassenger": [
                    {"type": "ADT", "amount": f"{offer.adult_price:.2f}"},
                    {"type": "CNN", "amount": f"{offer.child_price:.2f}"},
                    {"type": "INF", "amount": f"{offer.infant_price:.2f}"},
                ],
                "expiresAt": offer.expires_at.astimezone(UTC).isoformat(timespec="seconds"),
            }
        )
    return list(sets.values())


def build_app(state: AirlineState, schedule: Schedule) -> ASGIApp:
    """The airline's REST API behind its gate."""

    async def shop(request: Request) -> Response:
        parsed = _parse(await request.body(), state.code)
        if isinstance(parsed, JSONResponse):
            return parsed
        offers = schedule.offers(parsed, now=datetime.now(UTC), ttl_s=state.config.offer_ttl_s)
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

    app = Starlette(routes=[Route(OFFERS_PATH, shop, methods=["POST"])])
    return AirlineGate(app, state, is_business=is_path("POST", OFFERS_PATH))
