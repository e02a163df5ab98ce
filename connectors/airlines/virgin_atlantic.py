"""Virgin Atlantic's shopping API: ``GET /api/v2/flights/search``, prices in minor units.

Dialect: query parameters ``from``/``to``/``departDate``/``returnDate``/``adults``/``children``/
``infants``/``cabinClass``/``currency``; cabins economy, premium and upper (Upper Class, their business);
no First. Answer ``{"itineraries": [...]}``, each with ``legs`` of ``flights`` and a ``price`` of
``totalMinor`` with ``decimals``. Key in ``X-Api-Key``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connectors.kinds import normalise as N
from connectors.kinds.rest import RestRequest
from schemas.models import Cabin, Offer, SearchCriteria, Slice

__all__ = ["auth_headers", "build_request", "parse"]

SEARCH_PATH = "/api/v2/flights/search"
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


def _offer(raw: Any, airline: str) -> Offer:
    item = _Itinerary.model_validate(raw)
    cabin = _CABINS_BACK.get(item.cabin_class)
    if cabin is None:
        raise N.UntrustedValue("itinerary.cabinClass", "not a Virgin Atlantic cabin")
    return N.make_offer(
        airline=airline,
        offer_ref=item.id,
        amount=N.money(Decimal(item.price.total_minor).scaleb(-item.price.decimals), "price.totalMinor"),
        currency_code=item.price.currency,
        cabin=cabin,
        brand=item.fare_family,
        expires=N.utc_time(item.valid_until, "itinerary.validUntil"),
        slices=[_slice(leg) for leg in item.legs],
    )


def parse(body: Any, *, airline: str, criteria: SearchCriteria) -> list[Offer]:
    answer = _Answer.model_validate(body)
    return [_offer(raw, airline) for raw in answer.itineraries[: N.MAX_OFFERS]]
