"""The simulated airlines' order desk (infra/simulators/orders.py): what every simulated protocol sells and books."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from infra.simulators.orders import (
    OfferGone,
    OrderDesk,
    OrderFailed,
    PriceMoved,
    SimOrder,
    SoldOut,
    UnknownOrder,
)
from infra.simulators.schedule import FareOffer, Schedule, ShopQuery

# Dates only: the offers themselves are made with the clock of the test that sells them. Their 20-30
# minutes of validity would otherwise run out in a long test session before this module runs.
IN_THREE_WEEKS = (datetime.now(UTC) + timedelta(days=21)).date()
FAMILY = ShopQuery(airline="BA", origin="LHR", destination="JFK", departure_date=IN_THREE_WEEKS, adults=2, children=1)
CENT = Decimal("0.01")
CONTACT = {"email": "a@example.org", "phone": "+44 20 7946 0000"}


@dataclass
class Knobs:
    """The control API's order settings (FaultConfig's fields the desk reads)."""

    price_change_pct: float = 0.0
    order_fault: str = "none"
    slow_ms: int = 10_000


@pytest.fixture(scope="module")
def schedule() -> Schedule:
    return Schedule()


@pytest.fixture
def knobs() -> Knobs:
    return Knobs()


@pytest.fixture
def desk(knobs: Knobs) -> OrderDesk:
    return OrderDesk("BA", lambda: knobs)


@pytest.fixture
def offers(schedule: Schedule, desk: OrderDesk) -> list[FareOffer]:
    sold = schedule.offers(FAMILY, now=datetime.now(UTC))
    assert sold
    desk.remember(sold, FAMILY, documents_required=schedule.international("LHR", "JFK"))
    return sold


def people(n: int) -> list[dict[str, Any]]:
    return [{"given_name": f"Ann{chr(65 + i)}", "surname": "Smith", "birthdate": "1990-01-01"} for i in range(n)]


async def book(desk: OrderDesk, offer: FareOffer, *, reference: str | None = "ref-1", n: int = 3) -> SimOrder:
    return await desk.create(
        offer.offer_id, passengers=people(n), contact=CONTACT, client_reference=reference, accepted_total=offer.total
    )


def test_a_remembered_offer_prices_at_its_total_with_its_passengers_and_flights(
    desk: OrderDesk, offers: list[FareOffer]
) -> None:
    offer = offers[0]
    quote = desk.price(offer.offer_id)
    assert quote.total == offer.total
    assert quote.previous_total is None
    assert quote.passenger_count == 3
    assert quote.documents_required is True  # LHR-JFK crosses a border
    flight = offer.journeys[0]
    assert quote.flights == [f"{flight.designator} LHR-JFK {flight.departure.isoformat(timespec='minutes')}"]


def test_a_domestic_offer_needs_no_documents(schedule: Schedule, desk: OrderDesk) -> None:
    query = ShopQuery(airline="BA", origin="LHR", destination="EDI", departure_date=IN_THREE_WEEKS)
    sold = schedule.offers(query, now=datetime.now(UTC))
    assert sold, "BA flies LHR-EDI"
    desk.remember(sold, query, documents_required=schedule.international("LHR", "EDI"))
    assert desk.price(sold[0].offer_id).documents_required is False


def test_an_unknown_offer_is_gone_and_not_expired(desk: OrderDesk, offers: list[FareOffer]) -> None:
    with pytest.raises(OfferGone) as caught:
        desk.price("BA-NOT-SOLD")
    assert caught.value.code == "offer_not_found"
    assert caught.value.expired is False


def test_an_offer_past_its_expiry_is_gone_as_expired(desk: OrderDesk, offers: list[FareOffer]) -> None:
    offer = offers[0]
    with pytest.raises(OfferGone) as caught:
        desk.price(offer.offer_id, now=offer.expires_at + timedelta(seconds=1))
    assert caught.value.code == "offer_expired"
    assert caught.value.expired is True
    # A moment before its expiry it still prices.
    assert desk.price(offer.offer_id, now=offer.expires_at - timedelta(seconds=1)).total == offer.total


def test_a_price_change_reports_the_new_and_the_previous_total(
    desk: OrderDesk, knobs: Knobs, offers: list[FareOffer]
) -> None:
    offer = offers[0]
    knobs.price_change_pct = 10
    quote = desk.price(offer.offer_id)
    assert quote.previous_total == offer.total
    assert quote.total == (offer.total * Decimal("1.1")).quantize(CENT, ROUND_HALF_UP)
    knobs.price_change_pct = -50
    assert desk.price(offer.offer_id).total == (offer.total / 2).quantize(CENT, ROUND_HALF_UP)


async def test_seats_run_out_order_by_order_and_then_the_offer_is_sold_out(
    desk: OrderDesk, offers: list[FareOffer]
) -> None:
    desk.seats_left = 5
    await book(desk, offers[0])  # three seats
    assert desk.seats_left == 2
    with pytest.raises(SoldOut) as caught:
        desk.price(offers[1].offer_id)
    assert caught.value.code == "sold_out"
    with pytest.raises(SoldOut):
        await book(desk, offers[1], reference="ref-2")
    assert desk.created == 1


async def test_create_refuses_a_passenger_count_that_is_not_the_offers(
    desk: OrderDesk, offers: list[FareOffer]
) -> None:
    for wrong in (2, 4):
        with pytest.raises(OrderFailed, match=r"for 3 passengers, \d given") as caught:
            await book(desk, offers[0], n=wrong)
        assert caught.value.code == "order_failed"
    assert desk.created == 0


async def test_create_refuses_a_total_above_the_accepted_one_and_says_the_new_total(
    desk: OrderDesk, knobs: Knobs, offers: list[FareOffer]
) -> None:
    offer = offers[0]
    knobs.price_change_pct = 5
    with pytest.raises(PriceMoved) as caught:
        await book(desk, offer)
    assert caught.value.code == "price_changed"
    assert caught.value.total == (offer.total * Decimal("1.05")).quantize(CENT, ROUND_HALF_UP)
    assert caught.value.currency == offer.currency
    assert desk.created == 0
    # Accepting the new total books it; a lower price is always accepted.
    order = await desk.create(
        offer.offer_id, passengers=people(3), contact=CONTACT, client_reference="r", accepted_total=caught.value.total
    )
    assert order.total == caught.value.total
    knobs.price_change_pct = -5
    cheaper = await book(desk, offer, reference="r2")
    assert cheaper.total < offer.total


async def test_create_of_an_expired_or_unknown_offer_makes_nothing(desk: OrderDesk, offers: list[FareOffer]) -> None:
    with pytest.raises(OfferGone):
        await desk.create(
            "BA-NOT-SOLD", passengers=people(3), contact=CONTACT, client_reference=None, accepted_total=None
        )
    assert desk.created == 0


async def test_the_fail_fault_refuses_every_order(desk: OrderDesk, knobs: Knobs, offers: list[FareOffer]) -> None:
    knobs.order_fault = "fail"
    with pytest.raises(OrderFailed, match="simulated failure"):
        await book(desk, offers[0])
    assert desk.created == 0


async def test_timeout_after_create_makes_the_order_before_it_stalls(
    desk: OrderDesk, knobs: Knobs, offers: list[FareOffer]
) -> None:
    knobs.order_fault = "timeout_after_create"
    knobs.slow_ms = 300
    started = time.perf_counter()
    task = asyncio.create_task(book(desk, offers[0], reference="late"))
    await asyncio.sleep(0.05)
    # The order exists while the answer is still on its way: a caller that gives up cannot know it was made.
    assert not task.done()
    assert desk.created == 1
    assert desk.find("late") is not None
    order = await asyncio.wait_for(task, 2)
    assert time.perf_counter() - started >= 0.3
    assert desk.find("late") is order


async def test_the_same_client_reference_twice_makes_two_orders_and_find_returns_the_latest(
    desk: OrderDesk, offers: list[FareOffer]
) -> None:
    first = await book(desk, offers[0], reference="same")
    await asyncio.sleep(0.002)  # created_at apart
    second = await book(desk, offers[0], reference="same")
    assert first.order_id != second.order_id
    assert desk.created == 2, "the airline does not deduplicate: that is Jetbridge's job"
    assert desk.find("same") is second
    assert desk.find("other") is None


async def test_get_and_cancel_an_order_and_cancel_again_answers_it_as_it_is(
    desk: OrderDesk, offers: list[FareOffer]
) -> None:
    order = await book(desk, offers[0])
    assert desk.get(order.order_id) is order
    assert order.status == "CONFIRMED"
    assert order.passengers == people(3)
    cancelled = desk.cancel(order.order_id)
    assert cancelled.status == "CANCELLED"
    stamped = cancelled.updated_at
    assert desk.cancel(order.order_id).updated_at == stamped
    with pytest.raises(UnknownOrder) as caught:
        desk.get("NOSUCH")
    assert caught.value.code == "order_not_found"
    with pytest.raises(UnknownOrder):
        desk.cancel("NOSUCH")


async def test_the_public_view_of_an_order_has_no_personal_data(desk: OrderDesk, offers: list[FareOffer]) -> None:
    order = await book(desk, offers[0])
    public = repr(order.public()) + repr(order)
    assert order.public()["passenger_count"] == 3
    for value in ("AnnA", "Smith", "1990-01-01", "a@example.org", "7946"):
        assert value not in public


async def test_an_airline_cancellation_tells_every_listener(desk: OrderDesk, offers: list[FareOffer]) -> None:
    order = await book(desk, offers[0])
    heard: list[tuple[str, str, str | None, str]] = []

    async def listener(changed: SimOrder, what: str, reason: str | None) -> None:
        heard.append((changed.order_id, what, reason, changed.status))

    desk.listeners.extend([listener, listener])
    await desk.airline_change(order.order_id, "cancel", "Crew strike")
    assert heard == [(order.order_id, "airline_cancellation", "Crew strike", "CANCELLED")] * 2
    assert desk.get(order.order_id).status == "CANCELLED"


async def test_a_schedule_change_retimes_every_flight_35_minutes_later(schedule: Schedule, desk: OrderDesk) -> None:
    round_trip = ShopQuery(
        airline="BA",
        origin="LHR",
        destination="JFK",
        departure_date=IN_THREE_WEEKS,
        return_date=IN_THREE_WEEKS + timedelta(days=7),
    )
    sold = schedule.offers(round_trip, now=datetime.now(UTC))
    desk.remember(sold, round_trip, documents_required=True)
    order = await book(desk, sold[0], n=1)
    before = [(f.departure, f.arrival) for f in order.offer.journeys]
    heard: list[str] = []

    async def listener(changed: SimOrder, what: str, reason: str | None) -> None:
        heard.append(what)

    desk.listeners.append(listener)
    changed = await desk.airline_change(order.order_id, "schedule", "Aircraft change")
    assert heard == ["schedule_change"]
    assert changed.status == "CHANGED"
    after = [(f.departure, f.arrival) for f in changed.offer.journeys]
    assert len(after) == 2
    late = timedelta(minutes=35)
    assert after == [(d + late, a + late) for d, a in before]
    assert changed.flights == [
        f"{f.designator} {f.origin}-{f.destination} {f.departure.isoformat(timespec='minutes')}"
        for f in changed.offer.journeys
    ]
    assert changed.updated_at >= changed.created_at


async def test_a_failing_listener_does_not_stop_the_change_or_the_others(
    desk: OrderDesk, offers: list[FareOffer]
) -> None:
    order = await book(desk, offers[0])
    heard: list[str] = []

    async def broken(changed: SimOrder, what: str, reason: str | None) -> None:
        raise RuntimeError("webhook down")

    async def listener(changed: SimOrder, what: str, reason: str | None) -> None:
        heard.append(what)

    desk.listeners.extend([broken, listener])
    await desk.airline_change(order.order_id, "cancel", "Weather")
    assert heard == ["airline_cancellation"]
    assert desk.get(order.order_id).status == "CANCELLED"


async def test_a_change_to_an_unknown_order_is_refused(desk: OrderDesk) -> None:
    with pytest.raises(UnknownOrder):
        await desk.airline_change("NOSUCH", "cancel", "x")


async def test_reset_forgets_offers_and_orders(desk: OrderDesk, offers: list[FareOffer]) -> None:
    await book(desk, offers[0])
    desk.reset()
    assert desk.created == 0
    with pytest.raises(OfferGone):
        desk.price(offers[0].offer_id)


def test_remembering_keeps_only_the_latest_offers(
    monkeypatch: pytest.MonkeyPatch, schedule: Schedule, desk: OrderDesk
) -> None:
    next_day = replace(FAMILY, departure_date=IN_THREE_WEEKS + timedelta(days=1))
    first = schedule.offers(FAMILY, now=datetime.now(UTC))
    later = schedule.offers(next_day, now=datetime.now(UTC))
    monkeypatch.setattr("infra.simulators.orders.MAX_OFFERS", len(later))
    desk.remember(first, FAMILY, documents_required=True)
    desk.remember(later, next_day, documents_required=True)
    with pytest.raises(OfferGone):
        desk.price(first[0].offer_id)
    assert desk.price(later[-1].offer_id).total == later[-1].total


async def test_find_returns_the_order_made_last_even_within_one_clock_tick(
    desk: OrderDesk, offers: list[FareOffer]
) -> None:
    first = await book(desk, offers[0], reference="tick")
    second = await book(desk, offers[0], reference="tick")
    second.created_at = first.created_at
    assert desk.find("tick") is second


async def test_a_cancelled_order_cannot_be_changed_by_the_airline_again(
    desk: OrderDesk, offers: list[FareOffer]
) -> None:
    order = await book(desk, offers[0])
    desk.cancel(order.order_id)
    heard: list[str] = []

    async def listener(changed: SimOrder, what: str, reason: str | None) -> None:
        heard.append(what)

    desk.listeners.append(listener)
    for change in ("schedule", "cancel"):
        with pytest.raises(OrderFailed, match="is cancelled"):
            await desk.airline_change(order.order_id, change, "x")
    assert desk.get(order.order_id).status == "CANCELLED"
    assert heard == []
