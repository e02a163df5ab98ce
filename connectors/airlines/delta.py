"""Delta's shopping API: ``POST /shop/v1/offers`` with a JSON body, prices as decimal strings.

Dialect: ``tripType`` ONE_WAY/ROUND_TRIP, ``slices`` of origin/destination/departureDate, passenger
groups by PTC (ADT, CNN, INF), Delta cabins MAIN, PREMIUM_SELECT, DELTA_ONE and FIRST. Answer
``{"offerSets": [...]}``: an itinerary (slices of segments) and its offers, one per brand.
Key as ``Authorization: Bearer``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connectors.kinds import normalise as N
from connectors.kinds.rest import RestRequest
from schemas.models import Cabin, Offer, SearchCriteria, Slice

__all__ = ["auth_headers", "build_request", "parse"]

OFFERS_PATH = "/shop/v1/offers"
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
