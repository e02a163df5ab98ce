"""Validation of `search_offers` arguments: every failure names the field, and nothing is published.

Typed, closed arguments only (promise 5): codes are checked against reference data, never passed through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from jetbridge.airlines import AirlineRegistry
from jetbridge.errors import InvalidInput
from jetbridge.reference import airports
from schemas.models import Cabin, SearchCriteria

__all__ = ["MAX_PASSENGERS", "ValidatedSearch", "validate_search"]

MAX_PASSENGERS = 9
MAX_DAYS_AHEAD = 361  # airlines sell about a year out
MAX_OFFERS_CAP = 200
_IATA_AIRPORT = re.compile(r"^[A-Z]{3}$")
_CABINS = {c.value.lower(): c for c in Cabin} | {"premium": Cabin.PREMIUM_ECONOMY}


@dataclass(frozen=True, slots=True)
class ValidatedSearch:
    criteria: SearchCriteria
    airlines: list[str] | None
    max_offers: int
    deadline_ms: int


def _airport(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a 3-letter IATA airport code")
    code = value.strip().upper()
    if not _IATA_AIRPORT.match(code):
        raise InvalidInput(field, f"{value!r} is not a 3-letter IATA airport code")
    if code not in airports():
        raise InvalidInput(field, f"{code} is not a known IATA airport code")
    return code


def _date(field: str, value: object, today: date) -> date:
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a date as YYYY-MM-DD")
    try:
        parsed = date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(field, f"{value!r} is not a date as YYYY-MM-DD") from None
    if parsed < today:
        raise InvalidInput(field, f"{parsed.isoformat()} is in the past (today is {today.isoformat()})")
    if parsed > today + timedelta(days=MAX_DAYS_AHEAD):
        raise InvalidInput(field, f"{parsed.isoformat()} is more than {MAX_DAYS_AHEAD} days ahead")
    return parsed


def _count(field: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, "must be a whole number")
    if not low <= value <= high:
        raise InvalidInput(field, f"must be between {low} and {high}, got {value}")
    return value


def validate_search(
    *,
    origin: object,
    destination: object,
    departure_date: object,
    return_date: object | None,
    adults: object,
    children: object | None,
    infants: object | None,
    cabin: object | None,
    airlines: object | None,
    max_offers: object | None,
    deadline_ms: object | None,
    registry: AirlineRegistry,
    today: date,
    currency: str,
    default_max_offers: int,
    default_deadline_ms: int,
    max_deadline_ms: int,
) -> ValidatedSearch:
    """Check every argument; raise `InvalidInput` naming the first bad field."""
    org = _airport("origin", origin)
    dst = _airport("destination", destination)
    if org == dst:
        raise InvalidInput("destination", "must differ from origin")
    departure = _date("departure_date", departure_date, today)
    returning = None
    if return_date is not None:
        returning = _date("return_date", return_date, today)
        if returning < departure:
            raise InvalidInput("return_date", "must be on or after departure_date")
    n_adults = _count("adults", adults, 1, MAX_PASSENGERS)
    n_children = _count("children", 0 if children is None else children, 0, MAX_PASSENGERS)
    n_infants = _count("infants", 0 if infants is None else infants, 0, MAX_PASSENGERS)
    if n_adults + n_children + n_infants > MAX_PASSENGERS:
        raise InvalidInput("adults", f"at most {MAX_PASSENGERS} passengers in all (adults + children + infants)")
    if n_infants > n_adults:
        raise InvalidInput("infants", "at most one infant per adult")
    cabin_value = Cabin.ECONOMY
    if cabin is not None:
        if not isinstance(cabin, str) or cabin.strip().lower() not in _CABINS:
            raise InvalidInput("cabin", f"must be one of {', '.join(c.value.lower() for c in Cabin)}")
        cabin_value = _CABINS[cabin.strip().lower()]
    subset: list[str] | None = None
    if airlines is not None:
        if not isinstance(airlines, list) or not airlines:
            raise InvalidInput("airlines", "must be a non-empty list of IATA airline codes")
        subset = []
        for item in airlines:
            code = item.strip().upper() if isinstance(item, str) else ""
            if code not in registry:
                raise InvalidInput("airlines", f"{item!r} is not an airline Jetbridge connects to")
            if code not in subset:
                subset.append(code)
    offers = _count("max_offers", default_max_offers if max_offers is None else max_offers, 1, MAX_OFFERS_CAP)
    deadline = _count("deadline_ms", default_deadline_ms if deadline_ms is None else deadline_ms, 200, max_deadline_ms)
    criteria = SearchCriteria(
        origin=org,
        destination=dst,
        departure_date=departure,
        return_date=returning,
        adults=n_adults,
        children=n_children,
        infants=n_infants,
        cabin=cabin_value,
        currency=currency,
    )
    return ValidatedSearch(criteria=criteria, airlines=subset, max_offers=offers, deadline_ms=deadline)
