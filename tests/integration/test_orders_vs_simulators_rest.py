"""Orders with the proprietary REST airlines (Delta, Virgin Atlantic): the REST connector against the real simulator
servers on free ports, faults set through the control API, airline changes pushed to a webhook served here."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import httpx
import pytest

from connectors.base import build_connector
from connectors.kinds.rest import RestConnector
from infra.simulators import Simulators
from infra.simulators.rest_delta import PUSH_TRIES, PUSH_WINDOW_S, WebhookPusher
from jetbridge.errors import (
    AirlineRejected,
    AirlineTimeout,
    AirlineUnavailable,
    OfferExpired,
    OfferUnavailable,
    OrderNotFound,
    OrderRefused,
    PriceChanged,
    SeatsUnavailable,
)
from jetbridge.http import build_http_client
from jetbridge.passengers import Contact, OrderParty, Passenger, TravelDocument
from schemas.models import Cabin, Offer, OrderState, OrderStatus, SearchCriteria
from tests.integration.simulators_fixture import control_client, running_simulators

CODES = ["DL", "VS"]
IN_THREE_WEEKS = date.today() + timedelta(days=21)
LHR_JFK = SearchCriteria(
    origin="LHR",
    destination="JFK",
    departure_date=IN_THREE_WEEKS,
    adults=1,
    cabin=Cabin.ECONOMY,
    currency="USD",
)
BUDGET_S = 2.0
PARTY = OrderParty(
    passengers=[
        Passenger(
            given_name="Amelia",
            family_name="Quigglesworth",
            date_of_birth=date(1984, 3, 9),
            document=TravelDocument(number="P1234567", issuing_country="GB", expires_on=date(2031, 1, 31)),
        )
    ],
    contact=Contact(email="amelia.q@example.org", phone="+44 7700 900123"),
)
PERSONAL = ["Amelia", "Quigglesworth", "P1234567", "1984-03-09", "amelia.q@", "7700 900123"]


@pytest.fixture(scope="module")
async def sims() -> AsyncIterator[Simulators]:
    async with running_simulators(CODES) as running:
        yield running


@pytest.fixture(scope="module")
async def connectors(sims: Simulators) -> AsyncIterator[dict[str, RestConnector]]:
    async with build_http_client(timeout_s=5.0) as http:
        built: dict[str, RestConnector] = {}
        for code in CODES:
            connector = build_connector(sims.airline(code), http)
            assert isinstance(connector, RestConnector)
            built[code] = connector
        yield built


@pytest.fixture
async def control(sims: Simulators) -> AsyncIterator[httpx.AsyncClient]:
    async with control_client(sims) as client:
        yield client


async def configure(control: httpx.AsyncClient, code: str, **settings: object) -> None:
    response = await control.put(f"/airlines/{code}", json=settings)
    assert response.status_code == 200, response.text


async def airline_orders(control: httpx.AsyncClient, code: str) -> list[dict[str, Any]]:
    response = await control.get(f"/airlines/{code}/orders")
    assert response.status_code == 200
    orders: list[dict[str, Any]] = response.json()["orders"]
    return orders


async def first_offer(connector: RestConnector, criteria: SearchCriteria = LHR_JFK) -> Offer:
    offers = await connector.search(criteria, request_id="it-orders-search", timeout_s=BUDGET_S)
    assert offers
    return offers[0]


async def book(
    connector: RestConnector,
    offer_id: str,
    total: Decimal,
    currency: str,
    *,
    reference: str | None = None,
    party: OrderParty = PARTY,
    timeout_s: float = BUDGET_S,
) -> OrderState:
    return await connector.create_order(
        offer_id,
        party,
        accepted_total=total,
        currency=currency,
        client_reference=reference or f"ref-{uuid.uuid4().hex}",
        request_id="it-orders-create",
        timeout_s=timeout_s,
    )


@pytest.mark.parametrize("code", CODES)
async def test_search_price_create_find_retrieve_and_cancel_an_order(
    connectors: dict[str, RestConnector], control: httpx.AsyncClient, code: str
) -> None:
    connector = connectors[code]
    offer = await first_offer(connector)
    priced = await connector.price(offer.offer_id, request_id="it-price", timeout_s=BUDGET_S)
    assert (priced.offer_id, priced.total_amount, priced.currency) == (offer.offer_id, offer.total_amount, "USD")
    assert priced.previous_amount is None
    assert priced.passenger_count == 1
    assert priced.documents_required is True  # London to New York crosses a border
    segment = offer.slices[0].segments[0]
    assert priced.flights == [
        f"{segment.carrier}{segment.flight_number} LHR-JFK {segment.departure_local}",
    ]

    reference = f"ref-{uuid.uuid4().hex}"
    created = await book(connector, offer.offer_id, priced.total_amount, priced.currency, reference=reference)
    assert created.status is OrderStatus.CONFIRMED
    assert (created.airline, created.offer_id, created.client_reference) == (code, offer.offer_id, reference)
    assert (created.total_amount, created.passenger_count, created.flights) == (priced.total_amount, 1, priced.flights)

    found = await connector.find_order(reference, request_id="it-find", timeout_s=BUDGET_S)
    assert found == created
    assert await connector.find_order("ref-never-used", request_id="it-find", timeout_s=BUDGET_S) is None
    assert await connector.retrieve_order(created.order_id, request_id="it-get", timeout_s=BUDGET_S) == created

    cancelled = await connector.cancel_order(created.order_id, request_id="it-cancel", timeout_s=BUDGET_S)
    assert (cancelled.order_id, cancelled.status) == (created.order_id, OrderStatus.CANCELLED)
    again = await connector.retrieve_order(created.order_id, request_id="it-get", timeout_s=BUDGET_S)
    assert again.status is OrderStatus.CANCELLED

    (kept,) = await airline_orders(control, code)
    assert (kept["order_id"], kept["status"], kept["client_reference"]) == (created.order_id, "CANCELLED", reference)
    # Every order call reached the airline as business: counted, and subject to its faults.
    assert (await control.get(f"/airlines/{code}")).json()[code]["calls"] == 8


@pytest.mark.parametrize("code", CODES)
async def test_the_airline_does_not_deduplicate_on_the_reference_and_find_gives_the_latest(
    connectors: dict[str, RestConnector], control: httpx.AsyncClient, code: str
) -> None:
    connector = connectors[code]
    offer = await first_offer(connector)
    reference = f"ref-{uuid.uuid4().hex}"
    await book(connector, offer.offer_id, offer.total_amount, offer.currency, reference=reference)
    second = await book(connector, offer.offer_id, offer.total_amount, offer.currency, reference=reference)
    assert [o["client_reference"] for o in await airline_orders(control, code)] == [reference, reference]
    found = await connector.find_order(reference, request_id="it-find", timeout_s=BUDGET_S)
    assert found is not None
    assert found.order_id == second.order_id


@pytest.mark.parametrize("code", CODES)
async def test_a_moved_price_is_reported_and_a_create_at_the_old_total_is_refused_with_the_new_one(
    connectors: dict[str, RestConnector], control: httpx.AsyncClient, code: str
) -> None:
    connector = connectors[code]
    offer = await first_offer(connector)
    await configure(control, code, price_change_pct=10)
    priced = await connector.price(offer.offer_id, request_id="it-price", timeout_s=BUDGET_S)
    expected = (offer.total_amount * Decimal("1.1")).quantize(Decimal("0.01"))
    assert (priced.previous_amount, priced.total_amount) == (offer.total_amount, expected)

    with pytest.raises(PriceChanged) as raised:
        await book(connector, offer.offer_id, offer.total_amount, offer.currency)
    assert (raised.value.amount, raised.value.currency) == (f"{expected:.2f}", "USD")
    assert await airline_orders(control, code) == []

    created = await book(connector, offer.offer_id, priced.total_amount, priced.currency)
    assert created.total_amount == expected


@pytest.mark.parametrize("code", CODES)
async def test_an_offer_past_its_expiry_cannot_be_priced(
    connectors: dict[str, RestConnector], control: httpx.AsyncClient, code: str
) -> None:
    await configure(control, code, offer_ttl_s=1)
    offer = await first_offer(connectors[code])
    with anyio.fail_after(5):
        while True:
            try:
                await connectors[code].price(offer.offer_id, request_id="it-expiry", timeout_s=BUDGET_S)
            except OfferExpired:
                break
            await asyncio.sleep(0.2)
    with pytest.raises(OfferExpired):
        await book(connectors[code], offer.offer_id, offer.total_amount, offer.currency)


@pytest.mark.parametrize("code", CODES)
async def test_an_offer_the_airline_never_sold_is_unavailable_and_an_unknown_order_not_found(
    connectors: dict[str, RestConnector], code: str
) -> None:
    with pytest.raises(OfferUnavailable) as raised:
        await connectors[code].price(f"{code}0000000000", request_id="it-unknown", timeout_s=BUDGET_S)
    assert type(raised.value) is OfferUnavailable
    with pytest.raises(OrderNotFound):
        await connectors[code].retrieve_order("ZZZZZZ", request_id="it-unknown", timeout_s=BUDGET_S)
    with pytest.raises(OrderNotFound):
        await connectors[code].cancel_order("ZZZZZZ", request_id="it-unknown", timeout_s=BUDGET_S)


@pytest.mark.parametrize("code", CODES)
async def test_sold_out_offers_cannot_be_priced_or_booked_and_the_last_seat_goes_once(
    connectors: dict[str, RestConnector], control: httpx.AsyncClient, code: str
) -> None:
    connector = connectors[code]
    offer = await first_offer(connector)
    await configure(control, code, seats_left=0)
    with pytest.raises(SeatsUnavailable):
        await connector.price(offer.offer_id, request_id="it-sold-out", timeout_s=BUDGET_S)
    with pytest.raises(SeatsUnavailable):
        await book(connector, offer.offer_id, offer.total_amount, offer.currency)

    await configure(control, code, seats_left=1)
    await book(connector, offer.offer_id, offer.total_amount, offer.currency)
    with pytest.raises(SeatsUnavailable):
        await book(connector, offer.offer_id, offer.total_amount, offer.currency)
    assert len(await airline_orders(control, code)) == 1


@pytest.mark.parametrize("code", CODES)
async def test_a_failing_order_system_refuses_the_order_and_makes_none(
    connectors: dict[str, RestConnector], control: httpx.AsyncClient, code: str
) -> None:
    offer = await first_offer(connectors[code])
    await configure(control, code, order_fault="fail")
    with pytest.raises(OrderRefused):
        await book(connectors[code], offer.offer_id, offer.total_amount, offer.currency)
    assert await airline_orders(control, code) == []


@pytest.mark.parametrize("code", CODES)
async def test_an_international_order_without_a_travel_document_is_refused(
    connectors: dict[str, RestConnector], control: httpx.AsyncClient, code: str
) -> None:
    offer = await first_offer(connectors[code])
    undocumented = OrderParty(
        passengers=[PARTY.passengers[0].model_copy(update={"document": None})], contact=PARTY.contact
    )
    with pytest.raises(OrderRefused) as raised:
        await book(connectors[code], offer.offer_id, offer.total_amount, offer.currency, party=undocumented)
    assert not [value for value in PERSONAL if value in str(raised.value)]
    assert await airline_orders(control, code) == []


@pytest.mark.parametrize("code", CODES)
async def test_a_create_that_times_out_is_an_airline_timeout_and_find_order_finds_the_one_order(
    connectors: dict[str, RestConnector], control: httpx.AsyncClient, code: str
) -> None:
    connector = connectors[code]
    offer = await first_offer(connector)
    await configure(control, code, order_fault="timeout_after_create", slow_ms=3_000)
    reference = f"ref-{uuid.uuid4().hex}"
    with pytest.raises(AirlineTimeout):
        await book(connector, offer.offer_id, offer.total_amount, offer.currency, reference=reference, timeout_s=0.5)

    found = await connector.find_order(reference, request_id="it-reconcile", timeout_s=BUDGET_S)
    assert found is not None
    assert (found.client_reference, found.status) == (reference, OrderStatus.CONFIRMED)
    (made,) = await airline_orders(control, code)
    assert (made["order_id"], made["client_reference"]) == (found.order_id, reference)


@pytest.mark.parametrize("code", CODES)
async def test_an_airline_http_fault_hits_order_calls_too(
    connectors: dict[str, RestConnector], control: httpx.AsyncClient, code: str
) -> None:
    offer = await first_offer(connectors[code])
    await configure(control, code, fault="http_500")
    with pytest.raises(AirlineUnavailable):
        await connectors[code].price(offer.offer_id, request_id="it-500", timeout_s=BUDGET_S)
    await configure(control, code, fault="none")
    assert await connectors[code].price(offer.offer_id, request_id="it-healed", timeout_s=BUDGET_S)


# ---- airline-initiated changes, pushed to a webhook ----


class Webhook:
    """A tiny HTTP server that takes POSTs (failing the first ``failures`` of them with 503) and keeps them."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts = 0
        self.received: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Webhook:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/webhooks/airline"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            fields = (line.partition(":") for line in head.split("\r\n")[1:] if line)
            headers = {name.strip().lower(): value.strip() for name, _, value in fields}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.attempts += 1
            if self.attempts <= self.failures:
                status = b"503 Service Unavailable"
            else:
                status = b"204 No Content"
                await self.received.put((body, headers))
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()

    async def next(self, within_s: float = 6.0) -> tuple[bytes, dict[str, str]]:
        with anyio.fail_after(within_s):
            return await self.received.get()


async def a_booked_order(connector: RestConnector) -> OrderState:
    offer = await first_offer(connector)
    return await book(connector, offer.offer_id, offer.total_amount, offer.currency)


async def change(control: httpx.AsyncClient, code: str, order_id: str, what: str, reason: str) -> None:
    response = await control.post(f"/airlines/{code}/orders/{order_id}/change", json={"change": what, "reason": reason})
    assert response.status_code == 200, response.text


def departure(line: str) -> datetime:
    return datetime.fromisoformat(line.rsplit(" ", 1)[1])


@pytest.mark.parametrize("code", CODES)
async def test_a_schedule_change_pushed_to_the_webhook_parses_into_the_retimed_order(
    connectors: dict[str, RestConnector], control: httpx.AsyncClient, code: str
) -> None:
    connector = connectors[code]
    order = await a_booked_order(connector)
    async with Webhook() as hook:
        await configure(control, code, webhook_url=hook.url)
        await change(control, code, order.order_id, "schedule", "Aircraft\nrotation")
        body, headers = await hook.next()
    pushed = connector.parse_order_change(body, headers)
    assert (pushed.change, pushed.reason) == ("schedule_change", "Aircraft rotation")
    assert (pushed.order.order_id, pushed.order.status, pushed.order.client_reference) == (
        order.order_id,
        OrderStatus.CHANGED,
        order.client_reference,
    )
    assert departure(pushed.order.flights[0]) - departure(order.flights[0]) == timedelta(minutes=35)
    assert headers["content-type"] == "application/json"
    assert not [value for value in PERSONAL if value in body.decode()]
    # What the webhook said is what the airline now answers.
    assert await connector.retrieve_order(order.order_id, request_id="it-get", timeout_s=BUDGET_S) == pushed.order


@pytest.mark.parametrize("code", CODES)
async def test_an_airline_cancellation_is_pushed_again_until_the_webhook_takes_it(
    connectors: dict[str, RestConnector], control: httpx.AsyncClient, code: str
) -> None:
    connector = connectors[code]
    order = await a_booked_order(connector)
    async with Webhook(failures=2) as hook:
        await configure(control, code, webhook_url=hook.url)
        await change(control, code, order.order_id, "cancel", "Flight cancelled")
        body, headers = await hook.next()
        assert hook.attempts == 3
    pushed = connector.parse_order_change(body, headers)
    assert (pushed.change, pushed.order.status, pushed.reason) == (
        "airline_cancellation",
        OrderStatus.CANCELLED,
        "Flight cancelled",
    )


async def test_a_webhook_that_keeps_failing_is_given_up_after_five_tries_without_holding_the_change(
    sims: Simulators, connectors: dict[str, RestConnector], control: httpx.AsyncClient
) -> None:
    order = await a_booked_order(connectors["DL"])
    (pusher,) = [p for p in sims.orders("DL").listeners if isinstance(p, WebhookPusher)]
    async with Webhook(failures=1_000) as hook:
        await configure(control, "DL", webhook_url=hook.url)
        started = time.perf_counter()
        await change(control, "DL", order.order_id, "cancel", "Flight cancelled")
        assert time.perf_counter() - started < 1.0
        with anyio.fail_after(PUSH_WINDOW_S + 1.0):
            await pusher.settled()
        assert hook.attempts == PUSH_TRIES
        assert hook.received.empty()


async def test_a_push_signed_with_another_key_is_refused_by_the_connector(
    connectors: dict[str, RestConnector], control: httpx.AsyncClient
) -> None:
    order = await a_booked_order(connectors["VS"])
    async with Webhook() as hook:
        await configure(control, "VS", webhook_url=hook.url)
        await change(control, "VS", order.order_id, "cancel", "Flight cancelled")
        body, headers = await hook.next()
    with pytest.raises(AirlineRejected, match="signature"):
        connectors["DL"].parse_order_change(body, headers)
    assert json.loads(body)["type"] == "booking.cancelled"
