"""Finnair's MCP server: tool ``search_flights``, structured content in Finnair's own shape.

Arguments: origin, destination, departure_date, return_date, adults, children, infants, travel_class
(economy, premium_economy, business; no First), currency. Structured content ``{"offers": [...]}``, each
with ``bounds`` of ``flights`` and ``price.amount`` as a JSON number. Key in ``X-API-Key``.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from connectors.kinds import normalise as N
from schemas.models import Cabin, Offer, SearchCriteria, Slice

__all__ = ["TOOL_NAME", "auth_headers", "parse", "tool_arguments"]

TOOL_NAME: Final = "search_flights"
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
