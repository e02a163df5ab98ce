"""Orders over NDC against the real simulated BA server (on a free port), faults set through the control API, and
the airline's own changes pushed to a webhook served by the test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import anyio
import httpx
import pytest

from connectors.base import build_connector
from connectors.kinds.ndc import NdcConnector
from infra.simulators import Simulators
from jetbridge.errors import (
    AirlineTimeout,
    OfferExpired,
    OrderNotFound,
    OrderRefused,
    PriceChanged,
    SeatsUnavailable,
)
from jetbridge.http import build_http_client
from jetbridge.passengers import Contact, OrderParty, Passenger, TravelDocument
from schemas.models import Cabin, Offer, OrderState, OrderStatus, SearchCriteria
from tests.integration.simulators_fixture import control_client, running_simulators

IN_THREE_WEEKS = date.today() + timedelta(days=21)
TWO_ADULTS = SearchCriteria(
    origin="LHR", destination="JFK", departure_date=IN_THREE_WEEKS, adults=2, cabin=Cabin.ECONOMY, currency="USD"
)
PARTY = OrderParty(
    passengers=[
        Passenger(
            given_name="Amelia",
            family_name="Quixote",
            date_of_birth=date(1984, 3, 9),
            document=TravelDocument(number="P1234567", issuing_country="GB", expires_on=date(2031, 1, 31)),
        ),
        Passenger(
            given_name="Tobias",
            family_name="Quixote",
            date_of_birth=date(1982, 5, 2),
            document=TravelDocument(number="P7654321", issuing_country="GB", expires_on=date(2030, 6, 30)),
        ),
    ],
    contact=Contact(email="amelia@example.org", phone="+44 20 7946 0018"),
)
BUDGET_S = 3.0


@pytest.fixture(scope="module")
async def sims() -> AsyncIterator[Simulators]:
    async with running_simulators(["BA"]) as running:
        yield running


@pytest.fixture(scope="module")
async def ba(sims: Simulators) -> AsyncIterator[NdcConnector]:
    async with build_http_client(timeout_s=5.0) as http:
        connector = build_connector(sims.airline("BA"), http)
        assert isinstance(connector, NdcConnector)
        yield connector


@pytest.fixture
async def control(sims: Simulators) -> AsyncIterator[httpx.AsyncClient]:
    async with control_client(sims) as client:
        yield client


async def configure(control: httpx.AsyncClient, **settings: object) -> None:
    response = await control.put("/airlines/BA", json=settings)
    assert response.status_code == 200, response.text


async def orders_at_ba(control: httpx.AsyncClient) -> list[dict[str, object]]:
    response = await control.get("/airlines/BA/orders")
    assert response.status_code == 200
    found: list[dict[str, object]] = response.json()["orders"]
    return found


async def an_offer(ba: NdcConnector, criteria: SearchCriteria = TWO_ADULTS) -> Offer:
    offers = await ba.search(criteria, request_id="it-shop", timeout_s=BUDGET_S)
    assert offers
    return offers[0]


async def book(
    ba: NdcConnector, offer_id: str, total: Decimal, reference: str, *, timeout_s: float = BUDGET_S
) -> OrderState:
    return await ba.create_order(
        offer_id,
        PARTY,
        accepted_total=total,
        currency="USD",
        client_reference=reference,
        request_id=f"it-{reference}",
        timeout_s=timeout_s,
    )


async def test_search_price_book_find_retrieve_and_cancel_on_ba(ba: NdcConnector, control: httpx.AsyncClient) -> None:
    offer = await an_offer(ba)
    priced = await ba.price(offer.offer_id, request_id="it-price", timeout_s=BUDGET_S)
    assert (priced.offer_id, priced.total_amount, priced.currency) == (offer.offer_id, offer.total_amount, "USD")
    assert priced.previous_amount is None
    assert priced.passenger_count == 2
    assert priced.documents_required is True
    segment = offer.slices[0].segments[0]
    assert priced.flights == [f"{segment.carrier}{segment.flight_number} LHR-JFK {segment.departure_local}"]
    assert priced.expires_at == offer.expires_at

    made = await book(ba, priced.offer_id, priced.total_amount, "ref-happy")
    assert made.status is OrderStatus.CONFIRMED
    assert (made.airline, made.total_amount, made.passenger_count) == ("BA", priced.total_amount, 2)
    assert made.flights == priced.flights
    assert made.client_reference == "ref-happy"

    assert await ba.find_order("ref-happy", request_id="it-find", timeout_s=BUDGET_S) == made
    assert await ba.find_order("ref-nobody-used", request_id="it-find2", timeout_s=BUDGET_S) is None
    assert await ba.retrieve_order(made.order_id, request_id="it-get", timeout_s=BUDGET_S) == made

    cancelled = await ba.cancel_order(made.order_id, request_id="it-cancel", timeout_s=BUDGET_S)
    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.order_id == made.order_id
    assert (await ba.retrieve_order(made.order_id, request_id="it-get2", timeout_s=BUDGET_S)).status is (
        OrderStatus.CANCELLED
    )
    (listed,) = await orders_at_ba(control)
    assert (listed["order_id"], listed["status"], listed["passenger_count"]) == (made.order_id, "CANCELLED", 2)
    # The control API, like our errors and logs, shows no personal data.
    raw = (await control.get("/airlines/BA/orders")).text + (await control.get("/airlines/BA")).text
    for value in ("Amelia", "Quixote", "P1234567", "1984-03-09", "amelia@example.org"):
        assert value not in raw

    with pytest.raises(OrderNotFound):
        await ba.retrieve_order("NOSUCH", request_id="it-get3", timeout_s=BUDGET_S)
    with pytest.raises(OrderNotFound):
        await ba.cancel_order("NOSUCH", request_id="it-cancel2", timeout_s=BUDGET_S)


async def test_a_price_change_is_reported_and_a_create_at_the_old_total_is_refused(
    ba: NdcConnector, control: httpx.AsyncClient
) -> None:
    offer = await an_offer(ba)
    await configure(control, price_change_pct=10)
    priced = await ba.price(offer.offer_id, request_id="it-pc", timeout_s=BUDGET_S)
    assert priced.previous_amount == offer.total_amount
    assert priced.total_amount > offer.total_amount
    with pytest.raises(PriceChanged) as caught:
        await book(ba, offer.offer_id, offer.total_amount, "ref-pc")
    assert caught.value.amount == f"{priced.total_amount:.2f}"
    assert caught.value.currency == "USD"
    assert await orders_at_ba(control) == []
    made = await book(ba, offer.offer_id, priced.total_amount, "ref-pc")
    assert made.total_amount == priced.total_amount


async def test_an_offer_past_its_ttl_is_expired(ba: NdcConnector, control: httpx.AsyncClient) -> None:
    await configure(control, offer_ttl_s=1)
    offer = await an_offer(ba)
    assert offer.expires_at <= datetime.now(UTC) + timedelta(seconds=2)
    with anyio.fail_after(5):
        while True:
            try:
                await ba.price(offer.offer_id, request_id="it-ttl", timeout_s=BUDGET_S)
            except OfferExpired:
                break
            await anyio.sleep(0.1)
    with pytest.raises(OfferExpired):
        await book(ba, offer.offer_id, offer.total_amount, "ref-ttl")
    assert await orders_at_ba(control) == []


async def test_seats_run_out(ba: NdcConnector, control: httpx.AsyncClient) -> None:
    offer = await an_offer(ba)
    await configure(control, seats_left=1)
    with pytest.raises(SeatsUnavailable):
        await ba.price(offer.offer_id, request_id="it-so", timeout_s=BUDGET_S)
    await configure(control, seats_left=2)
    await book(ba, offer.offer_id, offer.total_amount, "ref-so")
    with pytest.raises(SeatsUnavailable):
        await book(ba, offer.offer_id, offer.total_amount, "ref-so-2")
    assert len(await orders_at_ba(control)) == 1


async def test_the_fail_fault_is_a_refused_order_and_makes_none(ba: NdcConnector, control: httpx.AsyncClient) -> None:
    offer = await an_offer(ba)
    await configure(control, order_fault="fail")
    with pytest.raises(OrderRefused, match="ORDER_FAILED"):
        await book(ba, offer.offer_id, offer.total_amount, "ref-fail")
    assert await orders_at_ba(control) == []
    assert await ba.find_order("ref-fail", request_id="it-ff", timeout_s=BUDGET_S) is None


async def test_a_create_that_times_out_after_the_airline_made_it_is_found_exactly_once(
    ba: NdcConnector, control: httpx.AsyncClient
) -> None:
    offer = await an_offer(ba)
    await configure(control, order_fault="timeout_after_create", slow_ms=1500)
    started = time.perf_counter()
    with pytest.raises(AirlineTimeout):
        await book(ba, offer.offer_id, offer.total_amount, "ref-late", timeout_s=0.5)
    assert time.perf_counter() - started < 1.2
    await configure(control, order_fault="none")
    found = await ba.find_order("ref-late", request_id="it-late", timeout_s=BUDGET_S)
    assert found is not None
    assert found.status is OrderStatus.CONFIRMED
    (listed,) = await orders_at_ba(control)
    assert listed["order_id"] == found.order_id
    assert listed["client_reference"] == "ref-late"


@dataclass
class Webhook:
    """A tiny HTTP server standing in for the connectors' webhook: records each POST, answers from a script."""

    answers: list[int] = field(default_factory=list)  # statuses to answer in turn, then 202
    delay_s: float = 0.0
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    refused: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.received.append((body, headers))
        status = self.answers.pop(0) if self.answers else 202
        await asyncio.sleep(self.delay_s)
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()
        (self.arrived if status < 300 else self.refused).set()


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = Webhook()
    server = await asyncio.start_server(hook.handle, "127.0.0.1", 0)
    hook.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/webhooks/BA"
    try:
        yield hook
    finally:
        server.close()
        await server.wait_closed()


async def change(control: httpx.AsyncClient, order_id: str, kind: str, reason: str) -> float:
    started = time.perf_counter()
    response = await control.post(f"/airlines/BA/orders/{order_id}/change", json={"change": kind, "reason": reason})
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


async def test_an_airline_schedule_change_and_cancellation_reach_the_webhook_and_parse(
    ba: NdcConnector, control: httpx.AsyncClient, webhook: Webhook
) -> None:
    offer = await an_offer(ba)
    made = await book(ba, offer.offer_id, offer.total_amount, "ref-hook")
    await configure(control, webhook_url=webhook.url)
    webhook.delay_s = 1.0  # a slow webhook does not hold up the airline's change
    assert await change(control, made.order_id, "schedule", "Aircraft change\nat LHR") < 0.8
    with anyio.fail_after(5):
        await webhook.arrived.wait()
    body, headers = webhook.received[0]
    assert headers["content-type"].startswith("application/xml")
    for value in ("P1234567", "1984-03-09", "amelia@example.org"):
        assert value.encode() not in body, "documents and contact details stay at the airline"
    changed = ba.parse_order_change(body, headers)
    assert changed.change == "schedule_change"
    assert changed.reason == "Aircraft change at LHR"
    assert changed.order.order_id == made.order_id
    assert changed.order.status is OrderStatus.CHANGED
    assert changed.order.client_reference == "ref-hook"
    late = datetime.fromisoformat(made.flights[0].rsplit(" ", 1)[1]) + timedelta(minutes=35)
    assert changed.order.flights == [f"{made.flights[0].rsplit(' ', 1)[0]} {late.isoformat(timespec='minutes')}"]
    assert await ba.retrieve_order(made.order_id, request_id="it-hook", timeout_s=BUDGET_S) == changed.order

    webhook.arrived.clear()
    webhook.delay_s = 0.0
    await change(control, made.order_id, "cancel", "Operational reasons")
    with anyio.fail_after(5):
        await webhook.arrived.wait()
    cancelled = ba.parse_order_change(*webhook.received[-1])
    assert (cancelled.change, cancelled.order.status) == ("airline_cancellation", OrderStatus.CANCELLED)


async def test_a_failed_push_is_tried_again_and_a_refused_one_is_not(
    ba: NdcConnector, control: httpx.AsyncClient, webhook: Webhook
) -> None:
    offer = await an_offer(ba)
    first = await book(ba, offer.offer_id, offer.total_amount, "ref-retry-1")
    second = await book(ba, offer.offer_id, offer.total_amount, "ref-retry-2")
    await configure(control, webhook_url=webhook.url)
    webhook.answers = [503, 500]
    await change(control, first.order_id, "cancel", "Weather")
    with anyio.fail_after(6):
        await webhook.arrived.wait()
    assert len(webhook.received) == 3
    assert len({body for body, _ in webhook.received}) == 1, "the same change each time"
    ba.parse_order_change(*webhook.received[-1])

    webhook.refused.clear()
    webhook.answers = [401]
    await change(control, second.order_id, "cancel", "Weather")
    with anyio.fail_after(5):
        await webhook.refused.wait()
    await anyio.sleep(0.6)  # past the next retry's wait: none comes after a refusal
    assert len(webhook.received) == 4


async def test_an_order_the_airline_did_not_see_us_make_is_signed_with_the_registrys_key(
    sims: Simulators, ba: NdcConnector, control: httpx.AsyncClient, webhook: Webhook
) -> None:
    offer = await an_offer(ba)
    desk = sims.orders("BA")
    made = await desk.create(
        offer.offer_id,
        passengers=[{"given_name": "A", "surname": "B"}] * 2,
        contact={},
        client_reference=None,
        accepted_total=None,
    )
    await configure(control, webhook_url=webhook.url)
    await change(control, made.order_id, "schedule", "Retimed")
    with anyio.fail_after(5):
        await webhook.arrived.wait()
    changed = ba.parse_order_change(*webhook.received[0])
    assert (changed.order.order_id, changed.order.client_reference) == (made.order_id, None)


async def test_no_webhook_no_push(ba: NdcConnector, control: httpx.AsyncClient, webhook: Webhook) -> None:
    offer = await an_offer(ba)
    made = await book(ba, offer.offer_id, offer.total_amount, "ref-quiet")
    await change(control, made.order_id, "cancel", "Weather")
    await anyio.sleep(0.3)
    assert webhook.received == []
