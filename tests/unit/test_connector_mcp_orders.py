"""The airline-MCP connector's order side: Finnair's order mapping (results, refusals, the change feed), and the
connector against an in-memory MCP server that answers what each test wants (refusals, broken content, passenger
data echoed back)."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent

from connectors.airlines import finnair
from connectors.kinds.mcp import McpConnector
from connectors.pins import PinBook
from jetbridge.airlines import Airline
from jetbridge.errors import (
    AirlineBadResponse,
    AirlineQuarantined,
    AirlineRejected,
    JetbridgeError,
    OfferExpired,
    OfferUnavailable,
    OrderNotFound,
    OrderRefused,
    PriceChanged,
    SeatsUnavailable,
)
from jetbridge.log import configure_logging
from jetbridge.passengers import Contact, OrderParty, Passenger, TravelDocument
from schemas.models import OrderStatus

# The SDK server refuses Host headers other than local ones (DNS rebinding protection).
AY = Airline(code="AY", name="Finnair", kind="mcp", endpoint="http://127.0.0.1:8000/mcp")
FLIGHT = {
    "flight_number": "AY5",
    "departure": {"airport": "HEL", "local_time": "2026-12-01T08:30"},
    "arrival": {"airport": "JFK", "local_time": "2026-12-01T10:05"},
    "aircraft_code": "359",
}
PARTY = OrderParty(
    passengers=[
        Passenger(
            given_name="Aino",
            family_name="Virtanen",
            date_of_birth=date(1984, 5, 17),
            document=TravelDocument(number="FP1234567", issuing_country="FI", expires_on=date(2030, 1, 31)),
        )
    ],
    contact=Contact(email="aino.virtanen@example.fi", phone="+358 40 1234567"),
)
PERSONAL = ("Aino", "Virtanen", "1984-05-17", "FP1234567", "aino.virtanen@example.fi", "+358 40 1234567")


def finnair_order(**changes: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "order_id": "Q7ZK2M",
        "status": "confirmed",
        "offer_id": "AYB35071",
        "price": {"amount": 749.93, "currency": "EUR"},
        "passenger_count": 1,
        "client_reference": "idem-1",
        "flights": [FLIGHT],
        "created_at": "2026-11-26T04:35:37+00:00",
        "updated_at": "2026-11-26T04:35:37.120+00:00",
    }
    order.update(changes)
    return order


def priced(**changes: Any) -> dict[str, Any]:
    offer: dict[str, Any] = {
        "offer_id": "AYB35071",
        "price": {"amount": 824.92, "currency": "EUR"},
        "previous_price": {"amount": 749.93, "currency": "EUR"},
        "valid_until": "2026-11-26T04:57:08+00:00",
        "passenger_count": 1,
        "travel_documents_required": True,
        "flights": [FLIGHT],
    }
    offer.update(changes)
    return offer


# ---- the mapping ----
def test_a_priced_offer_keeps_its_new_and_previous_totals_and_its_flights_as_lines() -> None:
    offer = finnair.parse_priced(priced(), airline="AY")
    assert (offer.offer_id, offer.total_amount, offer.previous_amount, offer.currency) == (
        "AYB35071",
        Decimal("824.92"),
        Decimal("749.93"),
        "EUR",
    )
    assert offer.expires_at == datetime(2026, 11, 26, 4, 57, 8, tzinfo=UTC)
    assert (offer.passenger_count, offer.documents_required) == (1, True)
    assert offer.flights == ["AY5 HEL-JFK 2026-12-01T08:30"]


def test_an_order_is_finnairs_booking_reference_with_its_state() -> None:
    order = finnair.parse_order({"order": finnair_order()}, airline="AY")
    assert order is not None
    assert (order.order_id, order.airline, order.status, order.client_reference) == (
        "Q7ZK2M",
        "AY",
        OrderStatus.CONFIRMED,
        "idem-1",
    )
    assert (order.total_amount, order.currency, order.passenger_count) == (Decimal("749.93"), "EUR", 1)
    assert order.flights == ["AY5 HEL-JFK 2026-12-01T08:30"]
    assert order.updated_at == datetime(2026, 11, 26, 4, 35, 37, 120_000, tzinfo=UTC)
    cancelled = finnair.parse_order({"order": finnair_order(status="cancelled")}, airline="AY")
    assert cancelled is not None
    assert cancelled.status is OrderStatus.CANCELLED


def test_no_order_found_is_none() -> None:
    assert finnair.parse_order({"order": None}, airline="AY") is None


@pytest.mark.parametrize(
    "broken",
    [
        {"order_id": "lower-case <b>"},
        {"status": "on hold"},
        {"price": {"amount": "749.93", "currency": "EUR"}},
        {"price": {"amount": -1, "currency": "EUR"}},
        {"flights": []},
        {"flights": [{**FLIGHT, "departure": {"airport": "HELSINKI", "local_time": "2026-12-01T08:30"}}]},
        {"client_reference": "has spaces"},
        {"updated_at": "yesterday"},
    ],
)
def test_an_order_that_breaks_the_contract_raises_a_value_error(broken: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r".+"):
        finnair.parse_order({"order": finnair_order(**broken)}, airline="AY")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("offer_not_found", OfferUnavailable),
        ("offer_expired", OfferExpired),
        ("sold_out", SeatsUnavailable),
        ("order_failed", OrderRefused),
        ("travel_document_required", OrderRefused),
        ("order_not_found", OrderNotFound),
        ("something_new", AirlineRejected),
    ],
)
def test_finnairs_refusal_codes_map_onto_the_error_tree(code: str, error: type[JetbridgeError]) -> None:
    refusal = finnair.order_refusal({"error": {"code": code, "message": "No.\x1b[31m"}}, airline="AY")
    assert type(refusal) is error
    assert "\x1b" not in refusal.message


def test_a_price_change_refusal_carries_the_new_total() -> None:
    refusal = finnair.order_refusal(
        {"error": {"code": "price_changed", "message": "moved", "price": {"amount": 824.9, "currency": "EUR"}}},
        airline="AY",
    )
    assert isinstance(refusal, PriceChanged)
    assert (refusal.amount, refusal.currency) == ("824.90", "EUR")


@pytest.mark.parametrize("content", [None, "text", {"error": "flat"}, {"errors": []}])
def test_content_that_is_not_a_finnair_refusal_is_none(content: Any) -> None:
    assert finnair.order_refusal(content, airline="AY") is None


def test_the_booking_arguments_use_finnairs_names() -> None:
    arguments = finnair.create_arguments("AYB35071", PARTY, accepted_total=Decimal("749.93"), client_reference="idem-1")
    assert arguments == {
        "offer_id": "AYB35071",
        "passengers": [
            {
                "first_name": "Aino",
                "last_name": "Virtanen",
                "date_of_birth": "1984-05-17",
                "travel_document": {
                    "document_type": "passport",
                    "number": "FP1234567",
                    "issuing_country": "FI",
                    "expiry_date": "2030-01-31",
                },
            }
        ],
        "contact": {"email": "aino.virtanen@example.fi", "phone": "+358 40 1234567"},
        "accepted_total": 749.93,
        "client_reference": "idem-1",
    }


def change(seq: int, **changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "seq": seq,
        "change_type": "cancellation",
        "reason": "Strike\u202e at HEL",
        "changed_at": "2026-11-26T05:00:00.250+00:00",
        "order": finnair_order(status="cancelled"),
    }
    entry.update(changes)
    return entry


def test_the_change_feed_maps_each_change_and_skips_a_broken_one() -> None:
    page = finnair.parse_changes(
        {
            "epoch": "e1",
            "head": 3,
            "oldest": 1,
            "changes": [change(1), change(2, order={"order_id": "?"}), change(3, change_type="schedule_change")],
        },
        airline="AY",
    )
    assert (page.epoch, page.head, page.oldest) == ("e1", 3, 1)
    (seq1, first), (seq2, broken), (seq3, third) = page.changes
    assert (seq1, seq2, seq3) == (1, 2, 3)
    assert broken is None
    assert first is not None
    assert third is not None
    assert (first.change, first.reason, first.order.status) == (
        "airline_cancellation",
        "Strike at HEL",
        OrderStatus.CANCELLED,
    )
    assert third.change == "schedule_change"
    assert finnair.changes_uri(3) == "finnair://orders/changes?after=3"


@pytest.mark.parametrize(
    "feed",
    [
        {"epoch": "e1", "head": 2, "oldest": 1, "changes": [change(2), change(1)]},
        {"epoch": "e1", "head": 2, "oldest": 1, "changes": [{"no": "seq"}]},
        {"epoch": "e1", "head": "2", "oldest": 1, "changes": []},
        {"changes": []},
    ],
)
def test_a_feed_that_breaks_the_contract_raises_a_value_error(feed: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r".+"):
        finnair.parse_changes(feed, airline="AY")


# ---- the connector against an in-memory server ----
def answer(payload: Any) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(payload))], structured_content=payload)


def refusal_text(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


class FakeFinnair:
    """Finnair's tools over streamable HTTP in memory; each answers ``answers[name]`` and keeps its arguments."""

    def __init__(self) -> None:
        self.answers: dict[str, CallToolResult] = {}
        self.arguments: dict[str, dict[str, Any]] = {}
        server = MCPServer("fake-finnair")
        said = self._said

        @server.tool(name="search_flights", description="Search.")
        async def search_flights(origin: str, destination: str, departure_date: str) -> CallToolResult:
            return said("search_flights", origin=origin, destination=destination, departure_date=departure_date)

        @server.tool(name="price_offer", description="Price.")
        async def price_offer(offer_id: str) -> CallToolResult:
            return said("price_offer", offer_id=offer_id)

        @server.tool(name="create_order", description="Book.")
        async def create_order(
            offer_id: str,
            passengers: list[dict[str, Any]],
            contact: dict[str, Any],
            accepted_total: float,
            client_reference: str | None = None,
        ) -> CallToolResult:
            return said(
                "create_order",
                offer_id=offer_id,
                passengers=passengers,
                contact=contact,
                accepted_total=accepted_total,
                client_reference=client_reference,
            )

        @server.tool(name="find_order", description="Find.")
        async def find_order(client_reference: str) -> CallToolResult:
            return said("find_order", client_reference=client_reference)

        @server.tool(name="get_order", description="Get.")
        async def get_order(order_id: str) -> CallToolResult:
            return said("get_order", order_id=order_id)

        @server.tool(name="cancel_order", description="Cancel.")
        async def cancel_order(order_id: str) -> CallToolResult:
            return said("cancel_order", order_id=order_id)

        self.app = server.streamable_http_app(streamable_http_path="/mcp", stateless_http=True, json_response=True)

    def _said(self, name: str, **arguments: Any) -> CallToolResult:
        self.arguments[name] = arguments
        return self.answers[name]


@asynccontextmanager
async def connected(tmp_path: Path) -> AsyncIterator[tuple[McpConnector, FakeFinnair]]:
    fake = FakeFinnair()
    async with fake.app.router.lifespan_context(fake.app):
        book = PinBook(tmp_path / "pins.toml")
        connector = McpConnector(AY, transport=httpx2.ASGITransport(app=fake.app), pins=book)
        try:
            book.approve("AY", await connector.tools(timeout_s=5.0), endpoint=AY.endpoint)
            yield connector, fake
        finally:
            await connector.aclose()


async def create(connector: McpConnector) -> Any:
    return await connector.create_order(
        "AYB35071",
        PARTY,
        accepted_total=Decimal("749.93"),
        currency="EUR",
        client_reference="idem-1",
        request_id="req-1",
        timeout_s=5.0,
    )


async def test_each_order_operation_calls_its_tool_and_maps_the_answer(tmp_path: Path) -> None:
    async with connected(tmp_path) as (connector, fake):
        fake.answers["price_offer"] = answer(priced())
        fake.answers["create_order"] = answer({"order": finnair_order()})
        fake.answers["find_order"] = answer({"order": None})
        fake.answers["get_order"] = answer({"order": finnair_order(status="changed")})
        fake.answers["cancel_order"] = answer({"order": finnair_order(status="cancelled")})
        with anyio.fail_after(10):
            assert (await connector.price("AYB35071", request_id="r", timeout_s=5.0)).total_amount == Decimal("824.92")
            assert (await create(connector)).order_id == "Q7ZK2M"
            assert await connector.find_order("idem-2", request_id="r", timeout_s=5.0) is None
            retrieved = await connector.retrieve_order("Q7ZK2M", request_id="r", timeout_s=5.0)
            cancelled = await connector.cancel_order("Q7ZK2M", request_id="r", timeout_s=5.0)
    assert (retrieved.status, cancelled.status) == (OrderStatus.CHANGED, OrderStatus.CANCELLED)
    assert fake.arguments["price_offer"] == {"offer_id": "AYB35071"}
    assert fake.arguments["find_order"] == {"client_reference": "idem-2"}
    assert fake.arguments["cancel_order"] == {"order_id": "Q7ZK2M"}
    assert fake.arguments["create_order"]["passengers"][0]["last_name"] == "Virtanen"


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (refusal_text(json.dumps({"error": {"code": "offer_expired", "message": "expired"}})), OfferExpired),
        (refusal_text(json.dumps({"error": {"code": "sold_out", "message": "full"}})), SeatsUnavailable),
        (refusal_text("Error executing tool price_offer: bad"), AirlineRejected),
        (answer({"offer_id": "AYB35071"}), AirlineBadResponse),
        (CallToolResult(content=[TextContent(type="text", text="<html>502")]), AirlineBadResponse),
    ],
)
async def test_refusals_and_bad_content_from_the_price_tool_are_errors_of_the_tree(
    tmp_path: Path, result: CallToolResult, error: type[JetbridgeError]
) -> None:
    async with connected(tmp_path) as (connector, fake):
        fake.answers["price_offer"] = result
        with anyio.fail_after(10), pytest.raises(error) as raised:
            await connector.price("AYB35071", request_id="r", timeout_s=5.0)
    assert type(raised.value) is error


async def test_an_unknown_order_is_order_not_found_and_a_create_without_an_order_is_a_bad_response(
    tmp_path: Path,
) -> None:
    async with connected(tmp_path) as (connector, fake):
        fake.answers["get_order"] = refusal_text(json.dumps({"error": {"code": "order_not_found", "message": "?"}}))
        fake.answers["create_order"] = answer({"order": None})
        with anyio.fail_after(10):
            with pytest.raises(OrderNotFound):
                await connector.retrieve_order("ZZZZZZ", request_id="r", timeout_s=5.0)
            with pytest.raises(AirlineBadResponse):
                await create(connector)


async def test_passenger_data_an_airline_echoes_in_a_refusal_reaches_no_message_log_or_cause(
    tmp_path: Path, stderr: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stderr", stderr)
    configure_logging("DEBUG", "json")
    echoed = {"code": "order_failed", "message": "Name VIRTANEN/AINO born 1984-05-17 passport FP1234567 refused"}
    async with connected(tmp_path) as (connector, fake):
        fake.answers["create_order"] = refusal_text(json.dumps({"error": echoed}))
        with anyio.fail_after(10), pytest.raises(OrderRefused) as refused:
            await create(connector)
        # Not in the airline's form: the raw text is kept (cleaned), still without the passengers.
        fake.answers["create_order"] = refusal_text("Refused: aino.virtanen@example.fi, +358 40 1234567")
        with anyio.fail_after(10), pytest.raises(AirlineRejected) as rejected:
            await create(connector)
    for error in (refused.value, rejected.value):
        assert error.__cause__ is None
        assert error.__suppress_context__
    said = " ".join([str(refused.value), str(rejected.value), stderr.getvalue()]).lower()
    assert "refused" in said
    for value in PERSONAL:
        assert value.lower() not in said, value


async def test_a_changed_order_tool_quarantines_and_is_not_called(tmp_path: Path) -> None:
    fake = FakeFinnair()
    fake.answers["price_offer"] = answer(priced())
    async with fake.app.router.lifespan_context(fake.app):
        book = PinBook(tmp_path / "pins.toml")
        connector = McpConnector(AY, transport=httpx2.ASGITransport(app=fake.app), pins=book)
        try:
            tools = await connector.tools(timeout_s=5.0)
            assert sorted(t.name for t in tools) == [
                "cancel_order",
                "create_order",
                "find_order",
                "get_order",
                "price_offer",
                "search_flights",
            ]
            # Pinned as it was, but for create_order's description: the server now differs from the pin.
            book.approve(
                "AY",
                [t if t.name != "create_order" else type(t)(t.name, "Book it.", t.input_schema) for t in tools],
                endpoint=AY.endpoint,
            )
            with anyio.fail_after(10), pytest.raises(AirlineQuarantined):
                await connector.price("AYB35071", request_id="r", timeout_s=5.0)
            assert "price_offer" not in fake.arguments
        finally:
            await connector.aclose()
