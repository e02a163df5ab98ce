"""Deterministic schedules and fares behind every simulated airline: same question, same flights and prices.

Pure: reads only the shipped reference data. Every random choice comes from a `random.Random` seeded by a
stable hash (SHA-256) of what was asked, never Python's per-process salted ``hash()``, so two processes
and two runs agree. The protocol modules (NDC, REST, MCP) only render what this module decides.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jetbridge.reference import Airport, airports, great_circle_km, routes_by_airline

__all__ = [
    "AIRCRAFT_NAMES",
    "CABINS",
    "CabinName",
    "FareOffer",
    "Flight",
    "Schedule",
    "ShopQuery",
    "stable_seed",
]

CabinName = Literal["economy", "premium", "business", "first"]
CABINS: tuple[CabinName, ...] = ("economy", "premium", "business", "first")

CRUISE_KMH = 830
TAXI_AND_CLIMB_MIN = 30
SHORT_HAUL_KM = 1500
LONG_HAUL_KM = 4000
ULTRA_LONG_KM = 9000
MAX_PASSENGERS = 9

_CABIN_FACTOR: dict[CabinName, Decimal] = {
    "economy": Decimal("1"),
    "premium": Decimal("1.8"),
    "business": Decimal("4.5"),
    "first": Decimal("8"),
}
_CHILD_FACTOR = Decimal("0.75")
_INFANT_FACTOR = Decimal("0.10")
_CENT = Decimal("0.01")

# Carriers that still sell a separate First cabin on long-haul.
_SELLS_FIRST = frozenset({"BA", "AA"})

# Brand names as each airline markets them; the factor is the markup over the cabin's cheapest brand.
_Brands = tuple[tuple[str, Decimal], ...]
_GENERIC_BRANDS: dict[CabinName, _Brands] = {
    "economy": (("Basic", Decimal("1")), ("Standard", Decimal("1.18")), ("Flex", Decimal("1.55"))),
    "premium": (("Premium", Decimal("1")), ("Premium Flex", Decimal("1.35"))),
    "business": (("Business", Decimal("1")), ("Business Flex", Decimal("1.3"))),
    "first": (("First", Decimal("1")), ("First Flex", Decimal("1.2"))),
}
_BRANDS: dict[str, dict[CabinName, _Brands]] = {
    "BA": {
        "economy": (("Basic", Decimal("1")), ("Standard", Decimal("1.2")), ("Flex", Decimal("1.6"))),
        "premium": (("World Traveller Plus", Decimal("1")), ("World Traveller Plus Flex", Decimal("1.3"))),
        "business": (("Club", Decimal("1")), ("Club Flex", Decimal("1.25"))),
        "first": (("First", Decimal("1")), ("First Flex", Decimal("1.15"))),
    },
    "AA": {
        "economy": (
            ("Basic Economy", Decimal("1")),
            ("Main Cabin", Decimal("1.17")),
            ("Main Plus", Decimal("1.4")),
        ),
        "premium": (("Premium Economy", Decimal("1")), ("Premium Economy Flexible", Decimal("1.3"))),
        "business": (("Business", Decimal("1")), ("Business Flexible", Decimal("1.25"))),
        "first": (("Flagship First", Decimal("1")), ("Flagship First Flexible", Decimal("1.15"))),
    },
    "VS": {
        "economy": (
            ("Economy Light", Decimal("1")),
            ("Economy Classic", Decimal("1.2")),
            ("Economy Delight", Decimal("1.45")),
        ),
        "premium": (("Premium", Decimal("1")), ("Premium Flex", Decimal("1.3"))),
        "business": (("Upper Class", Decimal("1")), ("Upper Class Flex", Decimal("1.25"))),
    },
    "DL": {
        "economy": (
            ("Basic Economy", Decimal("1")),
            ("Main Cabin", Decimal("1.15")),
            ("Comfort+", Decimal("1.4")),
        ),
        "premium": (("Premium Select", Decimal("1")), ("Premium Select Refundable", Decimal("1.35"))),
        "business": (("Delta One", Decimal("1")), ("Delta One Refundable", Decimal("1.3"))),
    },
    "AY": {
        "economy": (
            ("Economy Light", Decimal("1")),
            ("Economy Classic", Decimal("1.15")),
            ("Economy Flex", Decimal("1.5")),
        ),
        "premium": (("Premium Economy Classic", Decimal("1")), ("Premium Economy Flex", Decimal("1.3"))),
        "business": (("Business Classic", Decimal("1")), ("Business Flex", Decimal("1.25"))),
    },
}

AIRCRAFT_NAMES: dict[str, str] = {
    "319": "Airbus A319",
    "320": "Airbus A320",
    "321": "Airbus A321",
    "32N": "Airbus A320neo",
    "32Q": "Airbus A321neo",
    "221": "Airbus A220-100",
    "E90": "Embraer 190",
    "AT7": "ATR 72",
    "738": "Boeing 737-800",
    "739": "Boeing 737-900",
    "752": "Boeing 757-200",
    "763": "Boeing 767-300",
    "764": "Boeing 767-400",
    "332": "Airbus A330-200",
    "333": "Airbus A330-300",
    "339": "Airbus A330-900neo",
    "359": "Airbus A350-900",
    "351": "Airbus A350-1000",
    "388": "Airbus A380-800",
    "772": "Boeing 777-200",
    "77W": "Boeing 777-300ER",
    "788": "Boeing 787-8",
    "789": "Boeing 787-9",
}

# (short, medium, long, ultra-long) fleets; an airline missing here flies the generic fleet.
_Fleet = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]
_GENERIC_FLEET: _Fleet = (("320", "321", "738"), ("32Q", "752", "332"), ("789", "333", "77W"), ("77W", "351"))
_FLEETS: dict[str, _Fleet] = {
    "BA": (("319", "320", "321", "32N"), ("32Q", "320"), ("772", "77W", "789", "388", "351"), ("77W", "789")),
    "AA": (("321", "738", "32Q"), ("32Q", "738", "772"), ("772", "77W", "789", "788"), ("77W", "789")),
    "VS": (("339",), ("339", "789"), ("789", "351", "339"), ("789", "351")),
    "DL": (("321", "739", "221"), ("752", "739", "321"), ("359", "333", "764", "339"), ("359", "772")),
    "AY": (("320", "321", "E90", "AT7"), ("321", "32Q"), ("359", "333"), ("359",)),
}

# Flight-number bands per airline: (long-haul range, short/medium-haul range).
_NUMBERS: dict[str, tuple[range, range]] = {
    "BA": (range(1, 300), range(300, 1000)),
    "AA": (range(1, 300), range(300, 3000)),
    "VS": (range(1, 200), range(200, 500)),
    "DL": (range(1, 300), range(300, 3000)),
    "AY": (range(1, 100), range(300, 1900)),
}
_DEFAULT_NUMBERS = (range(1, 300), range(300, 2000))

_IATA_AIRPORT = re.compile(r"^[A-Z]{3}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def stable_seed(*parts: object) -> int:
    """A 64-bit seed that is the same in every process for the same parts."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _stable_hex(*parts: object, length: int = 20) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:length].upper()


@cache
def _zone(name: str) -> tzinfo:
    """The airport's time zone; the data has '\\N' and odd names, for which UTC is the honest guess."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC


@dataclass(frozen=True, slots=True)
class Flight:
    """One non-stop flight on one day; times are local wall-clock times at each end (naive)."""

    carrier: str
    number: int
    origin: str
    destination: str
    departure: datetime
    arrival: datetime
    duration_minutes: int
    aircraft: str

    @property
    def designator(self) -> str:
        return f"{self.carrier}{self.number}"


@dataclass(frozen=True, slots=True)
class ShopQuery:
    """What a shopper asked one airline, already in the simulator's own vocabulary."""

    airline: str
    origin: str
    destination: str
    departure_date: date
    return_date: date | None = None
    adults: int = 1
    children: int = 0
    infants: int = 0
    cabin: CabinName = "economy"
    currency: str = "USD"

    def problems(self, *, today: date) -> list[str]:
        """Why an airline would refuse this question outright (empty when it is answerable)."""
        found: list[str] = []
        known = airports()
        for label, code in (("origin", self.origin), ("destination", self.destination)):
            if not _IATA_AIRPORT.match(code) or code not in known:
                found.append(f"{label} {code[:8]!r} is not a known IATA airport code")
        if self.origin == self.destination:
            found.append("origin and destination are the same")
        if self.departure_date < today:
            found.append("departure date is in the past")
        if self.departure_date > today + timedelta(days=360):
            found.append("departure date is beyond the schedule horizon (360 days)")
        if self.return_date is not None and self.return_date < self.departure_date:
            found.append("return date is before departure date")
        if self.adults < 1:
            found.append("at least one adult is required")
        if min(self.children, self.infants) < 0:
            found.append("passenger counts cannot be negative")
        if self.infants > self.adults:
            found.append("each infant needs an adult")
        if self.adults + self.children + self.infants > MAX_PASSENGERS:
            found.append(f"at most {MAX_PASSENGERS} passengers per booking")
        if not _CURRENCY.match(self.currency):
            found.append("currency must be an ISO 4217 code")
        return found


@dataclass(frozen=True, slots=True)
class FareOffer:
    """A priced offer: one flight per direction, unit prices per passenger type, and their total."""

    offer_id: str
    airline: str
    cabin: CabinName
    brand: str
    currency: str
    adult_price: Decimal
    child_price: Decimal
    infant_price: Decimal
    total: Decimal
    expires_at: datetime
    journeys: tuple[Flight, ...]


class Schedule:
    """Flights and fares of every simulated airline, over the routes each one flies."""

    def __init__(
        self,
        routes: Mapping[str, frozenset[tuple[str, str]]] | None = None,
        airport_data: Mapping[str, Airport] | None = None,
    ) -> None:
        self._routes = routes if routes is not None else routes_by_airline()
        self._airports = airport_data if airport_data is not None else airports()

    def serves(self, airline: str, origin: str, destination: str) -> bool:
        return (origin, destination) in self._routes.get(airline, frozenset())

    def international(self, origin: str, destination: str) -> bool:
        """Whether the route crosses a border: its orders need every passenger's travel document."""
        return self._airports[origin].country != self._airports[destination].country

    def distance_km(self, origin: str, destination: str) -> float:
        return great_circle_km(self._airports[origin], self._airports[destination])

    def cabins(self, airline: str, origin: str, destination: str) -> tuple[CabinName, ...]:
        """Cabins sold on the route: short-haul is economy and business only; First only where sold."""
        km = self.distance_km(origin, destination)
        if km < SHORT_HAUL_KM:
            return ("economy", "business")
        offered: list[CabinName] = ["economy", "premium", "business"]
        if km >= LONG_HAUL_KM and airline in _SELLS_FIRST:
            offered.append("first")
        return tuple(offered)

    def flights(self, airline: str, origin: str, destination: str, day: date) -> list[Flight]:
        """The day's non-stop departures, earliest first; none when the airline does not fly the route."""
        if not self.serves(airline, origin, destination):
            return []
        rng = random.Random(stable_seed(airline, origin, destination, day.isoformat()))
        km = self.distance_km(origin, destination)
        count = rng.randint(1, 3) if km >= LONG_HAUL_KM else rng.randint(1, 4)
        block = km / CRUISE_KMH * 60 + TAXI_AND_CLIMB_MIN
        first_number = self._first_number(airline, origin, destination, km)
        fleet = self._fleet(airline, km)
        # Departures spread over the day: one per band of the 06:00-22:00 window, on 5-minute marks.
        band = (22 - 6) * 60 // count
        zone_from = _zone(self._airports[origin].tz)
        zone_to = _zone(self._airports[destination].tz)
        found: list[Flight] = []
        for i in range(count):
            minute_of_day = 6 * 60 + i * band + rng.randrange(0, max(band - 30, 5), 5)
            leaves = datetime.combine(day, time(minute_of_day // 60, minute_of_day % 60), tzinfo=zone_from)
            minutes = max(40, round((block + rng.randint(-10, 15)) / 5) * 5)
            arrives = (leaves + timedelta(minutes=minutes)).astimezone(zone_to)
            found.append(
                Flight(
                    carrier=airline,
                    number=first_number + 2 * i,
                    origin=origin,
                    destination=destination,
                    departure=leaves.replace(tzinfo=None),
                    arrival=arrives.replace(tzinfo=None),
                    duration_minutes=minutes,
                    aircraft=rng.choice(fleet),
                )
            )
        return found

    def offers(self, query: ShopQuery, *, now: datetime, ttl_s: int | None = None) -> list[FareOffer]:
        """Priced offers for the query: every flight (pair) times every brand of the cabin; [] if none fit.
        Each expires 20-30 minutes after ``now``, or ``ttl_s`` seconds after it when given."""
        if query.problems(today=now.date()):
            return []
        if query.cabin not in self.cabins(query.airline, query.origin, query.destination):
            return []
        outbound = self.flights(query.airline, query.origin, query.destination, query.departure_date)
        if not outbound:
            return []
        trips: list[tuple[Flight, ...]] = [(f,) for f in outbound]
        if query.return_date is not None:
            inbound = self.flights(query.airline, query.destination, query.origin, query.return_date)
            if not inbound:
                return []
            trips = [(f, inbound[i % len(inbound)]) for i, f in enumerate(outbound)]
        expiry_rng = random.Random(stable_seed("expiry", query))
        brands = _BRANDS.get(query.airline, _GENERIC_BRANDS).get(query.cabin, _GENERIC_BRANDS[query.cabin])
        found: list[FareOffer] = []
        for trip in trips:
            base = sum((self._adult_fare(f, query.cabin, today=now.date()) for f in trip), Decimal(0))
            for brand, factor in brands:
                adult = (base * factor).quantize(_CENT, ROUND_HALF_UP)
                child = (adult * _CHILD_FACTOR).quantize(_CENT, ROUND_HALF_UP)
                infant = (adult * _INFANT_FACTOR).quantize(_CENT, ROUND_HALF_UP)
                total = adult * query.adults + child * query.children + infant * query.infants
                found.append(
                    FareOffer(
                        offer_id=query.airline + _stable_hex(query, [f.designator for f in trip], brand),
                        airline=query.airline,
                        cabin=query.cabin,
                        brand=brand,
                        currency=query.currency,
                        adult_price=adult,
                        child_price=child,
                        infant_price=infant,
                        total=total.quantize(_CENT),
                        expires_at=now.astimezone(UTC)
                        + timedelta(seconds=ttl_s if ttl_s is not None else expiry_rng.randint(20 * 60, 30 * 60)),
                        journeys=trip,
                    )
                )
        return found

    def _adult_fare(self, flight: Flight, cabin: CabinName, *, today: date) -> Decimal:
        """One adult, one direction: distance, cabin, season and how soon, with a per-flight spread."""
        km = self.distance_km(flight.origin, flight.destination)
        rng = random.Random(stable_seed("fare", flight.designator, flight.departure.isoformat()))
        spread = Decimal(str(round(rng.uniform(0.9, 1.15), 3)))
        base = Decimal(str(round(45 + km * 0.085, 2)))
        return (
            base
            * spread
            * _CABIN_FACTOR[cabin]
            * _season(flight.departure.date())
            * _proximity(flight.departure.date(), today)
        )

    def _first_number(self, airline: str, origin: str, destination: str, km: float) -> int:
        long_band, short_band = _NUMBERS.get(airline, _DEFAULT_NUMBERS)
        numbers = long_band if km >= LONG_HAUL_KM else short_band
        # Both directions of a city pair share a block; one direction gets odd numbers, the other even.
        pair = sorted((origin, destination))
        span = max((len(numbers) - 8) // 2, 1)
        base = numbers.start + 2 * (stable_seed(airline, *pair) % span)
        return base + (0 if origin == pair[0] else 1)

    def _fleet(self, airline: str, km: float) -> tuple[str, ...]:
        short, medium, long, ultra = _FLEETS.get(airline, _GENERIC_FLEET)
        if km < SHORT_HAUL_KM:
            return short
        if km < LONG_HAUL_KM:
            return medium
        return long if km < ULTRA_LONG_KM else ultra


def _season(day: date) -> Decimal:
    if day.month in (7, 8, 12):
        return Decimal("1.25")
    if day.month in (1, 2, 11):
        return Decimal("0.9")
    return Decimal("1")


def _proximity(day: date, today: date) -> Decimal:
    days = (day - today).days
    if days < 7:
        return Decimal("1.5")
    if days < 21:
        return Decimal("1.2")
    if days < 60:
        return Decimal("1")
    return Decimal("0.95")
