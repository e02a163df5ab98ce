"""The simulators' schedule generator: deterministic, route-true, time-zone-true, priced by the rules."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import pytest

from infra.simulators.schedule import Flight, Schedule, ShopQuery
from jetbridge.reference import Airport, airports, routes_by_airline
from jetbridge.settings import REPO_ROOT

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
DAY = date(2026, 3, 23)  # three weeks after NOW
CENT = Decimal("0.01")


@pytest.fixture(scope="module")
def schedule() -> Schedule:
    return Schedule()


def _replace(query: ShopQuery, changes: dict[str, object]) -> ShopQuery:
    fields = {name: getattr(query, name) for name in ShopQuery.__dataclass_fields__}
    fields.update(changes)
    return ShopQuery(**fields)


def q(**changes: object) -> ShopQuery:
    base = ShopQuery(airline="BA", origin="LHR", destination="JFK", departure_date=DAY, currency="GBP")
    return _replace(base, changes)


def test_same_question_gives_the_same_offers_from_two_schedules() -> None:
    first = Schedule().offers(q(return_date=DAY + timedelta(days=7), adults=2), now=NOW)
    second = Schedule().offers(q(return_date=DAY + timedelta(days=7), adults=2), now=NOW)
    assert first
    assert first == second


def test_flights_do_not_depend_on_the_python_hash_seed() -> None:
    script = (
        "from datetime import date; from infra.simulators.schedule import Schedule; "
        "print(Schedule().flights('AA', 'JFK', 'LAX', date(2026, 5, 1)))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert "AA" in outputs.pop()


def test_an_unserved_route_has_no_flights_and_no_offers(schedule: Schedule) -> None:
    assert not schedule.serves("VS", "JFK", "LAX")
    assert schedule.flights("VS", "JFK", "LAX", DAY) == []
    assert schedule.offers(q(airline="VS", origin="JFK", destination="LAX"), now=NOW) == []


def test_every_served_route_has_one_to_four_departures_with_the_airlines_flight_numbers(
    schedule: Schedule,
) -> None:
    for code, routes in routes_by_airline().items():
        for origin, destination in sorted(routes)[:40]:
            flights = schedule.flights(code, origin, destination, DAY)
            assert 1 <= len(flights) <= 4
            assert all(f.carrier == code and 1 <= f.number <= 9999 for f in flights)
            assert [f.departure for f in flights] == sorted(f.departure for f in flights)
            assert len({f.number for f in flights}) == len(flights)


def _instant(local: datetime, airport: Airport) -> datetime:
    return local.replace(tzinfo=ZoneInfo(airport.tz))


def test_arrival_is_departure_plus_block_time_in_each_airports_zone(schedule: Schedule) -> None:
    known = airports()
    checked = 0
    for code, routes in routes_by_airline().items():
        for origin, destination in sorted(routes)[::25]:
            for flight in schedule.flights(code, origin, destination, DAY):
                left = _instant(flight.departure, known[origin])
                landed = _instant(flight.arrival, known[destination])
                assert landed - left == timedelta(minutes=flight.duration_minutes)
                assert landed > left
                checked += 1
    assert checked > 50


def test_block_time_follows_distance(schedule: Schedule) -> None:
    (short,) = schedule.flights("BA", "LHR", "CDG", DAY)[:1]
    (long,) = schedule.flights("BA", "LHR", "JFK", DAY)[:1]
    assert 45 <= short.duration_minutes <= 120
    assert 6 * 60 <= long.duration_minutes <= 9 * 60


def test_an_airport_with_an_unknown_time_zone_is_treated_as_utc() -> None:
    odd = {
        "AAA": Airport("AAA", "A", "A", "X", 0.0, 0.0, "\\N"),
        "BBB": Airport("BBB", "B", "B", "X", 0.0, 10.0, "Mars/Olympus_Mons"),
    }
    schedule = Schedule(routes={"ZZ": frozenset({("AAA", "BBB")})}, airport_data=odd)
    flights = schedule.flights("ZZ", "AAA", "BBB", DAY)
    assert flights
    for flight in flights:
        assert flight.arrival - flight.departure == timedelta(minutes=flight.duration_minutes)


def test_prices_scale_with_passengers(schedule: Schedule) -> None:
    one = schedule.offers(q(adults=1), now=NOW)
    family = schedule.offers(q(adults=2, children=1, infants=1), now=NOW)
    assert len(one) == len(family) > 0
    for single, group in zip(one, family, strict=True):
        assert group.adult_price == single.adult_price
        assert group.child_price == (single.adult_price * Decimal("0.75")).quantize(CENT, ROUND_HALF_UP)
        assert group.infant_price == (single.adult_price * Decimal("0.10")).quantize(CENT, ROUND_HALF_UP)
        assert group.total == 2 * single.adult_price + group.child_price + group.infant_price


def test_higher_cabins_cost_more_on_the_same_flight(schedule: Schedule) -> None:
    cheapest = {
        cabin: min(o.total for o in schedule.offers(q(cabin=cabin), now=NOW))
        for cabin in ("economy", "premium", "business", "first")
    }
    assert cheapest["economy"] < cheapest["premium"] < cheapest["business"] < cheapest["first"]


def test_each_cabin_has_two_or_three_brands_with_rising_prices(schedule: Schedule) -> None:
    offers = schedule.offers(q(cabin="economy"), now=NOW)
    first_flight = offers[0].journeys
    same_flight = [o for o in offers if o.journeys == first_flight]
    assert 2 <= len(same_flight) <= 3
    assert [o.total for o in same_flight] == sorted(o.total for o in same_flight)
    assert len({o.brand for o in same_flight}) == len(same_flight)


def test_short_haul_sells_no_first_and_long_haul_first_only_where_sold(schedule: Schedule) -> None:
    assert "first" not in schedule.cabins("BA", "LHR", "CDG")
    assert "first" in schedule.cabins("BA", "LHR", "JFK")
    assert "first" not in schedule.cabins("VS", "LHR", "JFK")
    assert schedule.offers(q(origin="LHR", destination="CDG", cabin="first"), now=NOW) == []


def test_a_return_trip_has_an_inbound_journey_on_the_return_date(schedule: Schedule) -> None:
    back = DAY + timedelta(days=6)
    offers = schedule.offers(q(return_date=back), now=NOW)
    assert offers
    for offer in offers:
        outbound, inbound = offer.journeys
        assert (outbound.origin, outbound.destination) == ("LHR", "JFK")
        assert (inbound.origin, inbound.destination, inbound.departure.date()) == ("JFK", "LHR", back)


def test_offers_expire_twenty_to_thirty_minutes_after_now_in_the_requested_currency(
    schedule: Schedule,
) -> None:
    for offer in schedule.offers(q(currency="EUR"), now=NOW):
        assert timedelta(minutes=20) <= offer.expires_at - NOW <= timedelta(minutes=30)
        assert offer.currency == "EUR"
        assert offer.total == offer.total.quantize(CENT, ROUND_HALF_UP)


def test_booking_soon_costs_more_than_booking_early(schedule: Schedule) -> None:
    soon = schedule.offers(q(departure_date=NOW.date() + timedelta(days=3)), now=NOW)
    early = schedule.offers(q(departure_date=NOW.date() + timedelta(days=3)), now=NOW - timedelta(days=90))
    assert min(o.total for o in soon) > min(o.total for o in early)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"origin": "QQQ"}, "not a known IATA airport"),
        ({"destination": "LHR"}, "the same"),
        ({"departure_date": date(2026, 3, 1)}, "in the past"),
        ({"return_date": date(2026, 3, 20)}, "before departure"),
        ({"adults": 1, "infants": 2}, "each infant needs an adult"),
        ({"adults": 9, "children": 1}, "at most 9"),
        ({"currency": "euro"}, "ISO 4217"),
    ],
)
def test_unanswerable_questions_are_named_and_get_no_offers(
    schedule: Schedule, changes: dict[str, object], problem: str
) -> None:
    query = q(**changes)
    assert any(problem in p for p in query.problems(today=NOW.date()))
    assert schedule.offers(query, now=NOW) == []


def test_flight_designator_joins_carrier_and_number() -> None:
    flight = Flight("AY", 5, "HEL", "JFK", datetime(2026, 1, 1, 10), datetime(2026, 1, 1, 12), 540, "359")
    assert flight.designator == "AY5"
