"""The order tools through a real MCP client (in memory), on both protocol versions, with a scripted airline behind
the order calls: what an agent sees, what the person is asked, and what reaches the airline."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitResult

from jetbridge.airlines import load_registry
from jetbridge.order_book import OrderBook
from jetbridge.pii import PiiSeal
from jetbridge.settings import Settings
from mcp_bridge.entitlements import ClientRegistry, Entitlement
from mcp_bridge.order_memory import OrderMemory
from mcp_bridge.order_tools import MAX_LISTENED_ORDERS, add_order_tools
from mcp_bridge.orders import OrderResult, OrderService
from schemas.models import (
    ErrorInfo,
    OrderOperation,
    OrderReply,
    OrderReplyStatus,
    OrderState,
    OrderStatus,
    PricedOffer,
    now_utc,
)

MODES = ["legacy", "auto"]  # 2025-11-25 (elicitation/create mid-call) and 2026-07-28 (input required)
ADULT = {"given_name": "Ada", "family_name": "Lovelace", "date_of_birth": "1985-12-10"}
CONTACT = {"email": "ada@example.org", "phone": "+44 20 7946 0000"}


class Airline:
    """A scripted airline answering the order calls as a connector would, counting what it was asked."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.orders: dict[str, OrderState] = {}
        self.total = Decimal("420.00")
        self.previous: Decimal | None = None
        self.documents = False
        self.unknown_once = False  # the next create is made but answered UNKNOWN (the connector could not tell)
        self.opened: list[bytes] = []

    def reply(self, call: dict[str, Any], operation: OrderOperation, **parts: Any) -> OrderReply:
        return OrderReply(
            request_id=call["request_id"],
            correlation_id=call["request_id"],
            reply_to="test",
            airline="BA",
            operation=operation,
            connector_kind="ndc",
            latency_ms=5,
            produced_at=now_utc(),
            **parts,
        )

    def answer(self, operation: OrderOperation, call: dict[str, Any]) -> OrderReply:
        self.calls[operation.value] += 1
        now = now_utc()
        if operation is OrderOperation.PRICE:
            return self.reply(
                call,
                operation,
                status=OrderReplyStatus.OK,
                price=PricedOffer(
                    offer_id=call["offer_id"],
                    total_amount=self.total,
                    currency="USD",
                    previous_amount=self.previous,
                    expires_at=now + timedelta(minutes=20),
                    passenger_count=1,
                    documents_required=self.documents,
                    flights=["BA117 LHR-JFK 2030-06-01T08:30"],
                ),
            )
        if operation is OrderOperation.CREATE:
            self.opened.append(call["passengers_sealed"])
            found = [o for o in self.orders.values() if o.client_reference == call["idempotency_key"]]
            if found:
                return self.reply(call, operation, status=OrderReplyStatus.OK, order=found[0], reconciled=True)
            order = OrderState(
                order_id=f"PNR{len(self.orders) + 1:03d}",
                airline="BA",
                status=OrderStatus.CONFIRMED,
                offer_id=call["offer_id"],
                total_amount=self.total,
                currency="USD",
                passenger_count=call["passenger_count"],
                flights=["BA117 LHR-JFK 2030-06-01T08:30"],
                client_reference=call["idempotency_key"],
                created_at=now,
                updated_at=now,
            )
            self.orders[order.order_id] = order
            if self.unknown_once:
                self.unknown_once = False
                return self.reply(
                    call,
                    operation,
                    status=OrderReplyStatus.UNKNOWN,
                    error=ErrorInfo(code="order_outcome_unknown", message="timed out", retriable=True),
                )
            return self.reply(call, operation, status=OrderReplyStatus.OK, order=order)
        known = self.orders.get(call["order_id"])
        if known is None:
            return self.reply(
                call,
                operation,
                status=OrderReplyStatus.ERROR,
                error=ErrorInfo(code="order_not_found", message="no such order", retriable=False),
            )
        order = known
        if operation is OrderOperation.CANCEL:
            order = order.model_copy(update={"status": OrderStatus.CANCELLED, "updated_at": now})
            self.orders[order.order_id] = order
        return self.reply(call, operation, status=OrderReplyStatus.OK, order=order)


class _Runtime:
    def __init__(self) -> None:
        self.settings = Settings()
        self.airlines = load_registry()


class ScriptedOrders(OrderService):
    """The bridge's order service with the scripted airline in place of Kafka and the connectors."""

    def __init__(self, airline: Airline, *, cap: float = 0.0) -> None:
        clients = ClientRegistry(Entitlement(daily_spend_cap=cap))
        book = OrderBook("jb.orders.v1", codec=None, consumer_config={"bootstrap.servers": "127.0.0.1:1"})  # type: ignore[arg-type]
        super().__init__(_Runtime(), _Correlator(), book, OrderMemory(None), PiiSeal(os.urandom(32)), clients)  # type: ignore[arg-type]
        self.airline = airline

    async def _call(
        self,
        client_id: str,
        airline: str,
        operation: OrderOperation,
        *,
        subject: str,
        request_id: str | None = None,
        **fields: Any,
    ) -> OrderReply:
        reply = self.airline.answer(operation, {"request_id": request_id or "r", **fields})
        if reply.status is OrderReplyStatus.OK:
            return reply
        if reply.status is OrderReplyStatus.UNKNOWN:
            raise self._unanswered(operation, airline)
        from jetbridge.errors import OrderNotFound

        raise OrderNotFound(reply.error.message if reply.error else "")


class _Correlator:
    instance_id = "test"


class Audit:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, str | None, str]] = []

    def audit_call(
        self, client_id: str, tool: str, outcome: str, code: str | None, started: float, digest: str
    ) -> None:
        self.records.append((tool, outcome, code, digest))


class Person:
    """The person behind the client: answers every confirmation, and remembers what it was asked."""

    def __init__(self, action: str = "accept", confirm: bool = True) -> None:
        self.action = action
        self.confirm = confirm
        self.asked: list[str] = []

    async def __call__(self, context: Any, params: Any) -> ElicitResult:
        self.asked.append(params.message)
        content = {"confirm": self.confirm} if self.action == "accept" else None
        return ElicitResult(action=self.action, content=content)


@pytest.fixture
def airline() -> Airline:
    return Airline()


def _server(orders: OrderService) -> tuple[MCPServer, Audit]:
    server = MCPServer("orders-test")
    audit = Audit()
    add_order_tools(server, orders, audit)
    return server, audit


async def _call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise AssertionError(result.content[0].text)  # type: ignore[union-attr]
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def _error(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


@contextlib.asynccontextmanager
async def opened(airline: Airline, mode: str = "legacy") -> AsyncIterator[tuple[Client, Person, Audit]]:
    """An agent's session with a server holding the order tools (a context manager in the test's own task: the
    SDK's client must be entered and left in one task)."""
    person = Person()
    server, audit = _server(ScriptedOrders(airline))
    async with Client(server, mode=mode, elicitation_callback=person) as client:
        yield client, person, audit


@pytest.mark.parametrize("mode", MODES)
async def test_price_book_get_cancel(mode: str, airline: Airline) -> None:
    async with opened(airline, mode) as (client, person, audit):
        price = await _call(client, "price_offer", offer_id="BA:OFFER1")
        assert price["total_amount"] == "420.00"
        assert price["price_changed"] is False
        assert price["passenger_count"] == 1

        order = await _call(client, "create_order", offer_id="BA:OFFER1", passengers=[ADULT], contact=CONTACT)
        assert order["order_id"] == "BA:PNR001"
        assert order["status"] == "confirmed"
        assert order["total_amount"] == "420.00"
        assert order["resource_uri"] == "jetbridge://orders/BA:PNR001"
        # The person was asked what, for whom, and the total, before the airline was called.
        assert len(person.asked) == 1
        assert "Ada Lovelace" in person.asked[0]
        assert "420.00 USD" in person.asked[0]
        assert "BA117" in person.asked[0]

        got = await _call(client, "get_order", order_id="BA:PNR001")
        assert got["status"] == "confirmed"
        assert got["live"] is True

        cancelled = await _call(client, "cancel_order", order_id="BA:PNR001")
        assert cancelled["status"] == "cancelled"
        assert len(person.asked) == 2
        assert "Cancel order BA:PNR001" in person.asked[1]
        assert airline.calls == Counter({"PRICE": 1, "CREATE": 1, "RETRIEVE": 1, "CANCEL": 1})
        # The passengers went to the airline sealed; nothing readable in them.
        assert airline.opened
        assert b"Lovelace" not in airline.opened[0]
        assert [r[:2] for r in audit.records] == [
            ("price_offer", "answered"),
            ("create_order", "booked"),
            ("get_order", "answered"),
            ("cancel_order", "cancelled"),
        ]


@pytest.mark.parametrize("mode", MODES)
async def test_declined_confirmation_calls_nothing(airline: Airline, mode: str) -> None:
    async with opened(airline, mode) as (client, person, audit):
        await _call(client, "price_offer", offer_id="BA:OFFER1")
        person.confirm = False
        text = await _error(client, "create_order", offer_id="BA:OFFER1", passengers=[ADULT], contact=CONTACT)
        assert "code confirmation_declined" in text
        assert "nothing was booked" in text
        person.action = "decline"
        text = await _error(client, "create_order", offer_id="BA:OFFER1", passengers=[ADULT], contact=CONTACT)
        assert "code confirmation_declined" in text
        assert airline.calls == Counter({"PRICE": 1}), "no order call without a yes"
        assert audit.records[-1][1] == "confirmation_declined"


async def test_a_client_that_cannot_ask_books_nothing(airline: Airline) -> None:
    server, _ = _server(ScriptedOrders(airline))
    async with Client(server, mode="legacy") as client:  # no elicitation capability
        await _call(client, "price_offer", offer_id="BA:OFFER1")
        with pytest.raises(MCPError, match="elicitation capability"):
            await client.call_tool("create_order", {"offer_id": "BA:OFFER1", "passengers": [ADULT], "contact": CONTACT})
    assert airline.calls == Counter({"PRICE": 1})


@pytest.mark.parametrize("mode", MODES)
async def test_booking_needs_a_price_first(mode: str, airline: Airline) -> None:
    async with opened(airline, mode) as (client, person, _):
        text = await _error(client, "create_order", offer_id="BA:OFFER1", passengers=[ADULT], contact=CONTACT)
        assert "code offer_not_priced" in text
        assert "price_offer" in text
        assert person.asked == []
        assert not airline.calls


@pytest.mark.parametrize("mode", MODES)
async def test_the_same_order_twice_books_once(mode: str, airline: Airline) -> None:
    async with opened(airline, mode) as (client, person, _audit):
        await _call(client, "price_offer", offer_id="BA:OFFER1")
        first = await _call(client, "create_order", offer_id="BA:OFFER1", passengers=[ADULT], contact=CONTACT)
        again = await _call(client, "create_order", offer_id="BA:OFFER1", passengers=[ADULT], contact=CONTACT)
        assert again["order_id"] == first["order_id"]
        assert again["reconciled"] is True
        assert airline.calls["CREATE"] == 1
        assert len(airline.orders) == 1
        assert len(person.asked) == 1, "the order already made is returned without asking again"
        # Another passenger is another order (another key).
        other = dict(ADULT, given_name="Augusta")
        third = await _call(client, "create_order", offer_id="BA:OFFER1", passengers=[other], contact=CONTACT)
        assert third["order_id"] != first["order_id"]


@pytest.mark.parametrize("mode", MODES)
async def test_unknown_outcome_then_retry_makes_one_order(mode: str, airline: Airline) -> None:
    async with opened(airline, mode) as (client, _, _):
        await _call(client, "price_offer", offer_id="BA:OFFER1")
        airline.unknown_once = True
        text = await _error(client, "create_order", offer_id="BA:OFFER1", passengers=[ADULT], contact=CONTACT)
        assert "code order_outcome_unknown, retriable" in text
        assert "never made twice" in text
        again = await _call(client, "create_order", offer_id="BA:OFFER1", passengers=[ADULT], contact=CONTACT)
        assert again["reconciled"] is True
        assert len(airline.orders) == 1


@pytest.mark.parametrize(
    ("passengers", "field"),
    [
        ([dict(ADULT, date_of_birth="not a date")], "passengers[0].date_of_birth"),
        ([dict(ADULT, given_name="R2D2")], "passengers[0].given_name"),
        ([dict(ADULT, nickname="Ada")], "passengers[0].nickname"),
        ([], "passengers"),
        ([dict(ADULT, date_of_birth="2100-01-01")], "passengers[0].date_of_birth"),
        ([dict(ADULT, date_of_birth="2024-01-01")], "passengers"),  # an infant alone
        ([ADULT, dict(ADULT, given_name="Augusta")], "passengers"),  # two for an offer of one
    ],
)
@pytest.mark.parametrize("mode", MODES)
async def test_bad_passengers_name_the_field_and_call_nothing(
    mode: str, airline: Airline, passengers: list[dict[str, Any]], field: str
) -> None:
    async with opened(airline, mode) as (client, person, audit):
        await _call(client, "price_offer", offer_id="BA:OFFER1")
        text = await _error(client, "create_order", offer_id="BA:OFFER1", passengers=passengers, contact=CONTACT)
        assert f"Invalid argument '{field}'" in text, text
        assert "Lovelace" not in text, "no personal data repeated"
        assert "not a date" not in text
        assert person.asked == []
        assert airline.calls == Counter({"PRICE": 1})
        assert all("Lovelace" not in str(r) for r in audit.records)


@pytest.mark.parametrize("mode", MODES)
async def test_documents_when_the_airline_needs_them(mode: str, airline: Airline) -> None:
    async with opened(airline, mode) as (client, _, _):
        airline.documents = True
        assert (await _call(client, "price_offer", offer_id="BA:OFFER1"))["documents_required"] is True
        text = await _error(client, "create_order", offer_id="BA:OFFER1", passengers=[ADULT], contact=CONTACT)
        assert "Invalid argument 'passengers[0].document'" in text
        expired = dict(ADULT, document={"number": "P1234567", "issuing_country": "GB", "expires_on": "2030-01-01"})
        text = await _error(client, "create_order", offer_id="BA:OFFER1", passengers=[expired], contact=CONTACT)
        assert "Invalid argument 'passengers[0].document.expires_on'" in text
        valid = dict(ADULT, document={"number": "P1234567", "issuing_country": "GB", "expires_on": "2035-01-01"})
        order = await _call(client, "create_order", offer_id="BA:OFFER1", passengers=[valid], contact=CONTACT)
        assert order["status"] == "confirmed"


@pytest.mark.parametrize("mode", MODES)
async def test_price_change_is_reported(mode: str, airline: Airline) -> None:
    async with opened(airline, mode) as (client, _, _):
        airline.previous, airline.total = Decimal("420.00"), Decimal("455.50")
        price = await _call(client, "price_offer", offer_id="BA:OFFER1")
        assert price["price_changed"] is True
        assert price["previous_amount"] == "420.00"
        assert price["total_amount"] == "455.50"


async def test_spend_cap(airline: Airline) -> None:
    person = Person()
    server, _ = _server(ScriptedOrders(airline, cap=500.0))
    async with Client(server, mode="legacy", elicitation_callback=person) as client:
        await _call(client, "price_offer", offer_id="BA:OFFER1")
        await _call(client, "create_order", offer_id="BA:OFFER1", passengers=[ADULT], contact=CONTACT)
        await _call(client, "price_offer", offer_id="BA:OFFER2")
        other = dict(ADULT, given_name="Augusta")
        text = await _error(client, "create_order", offer_id="BA:OFFER2", passengers=[other], contact=CONTACT)
    assert "code spend_cap_exceeded, retriable" in text
    assert "500.00" in text
    assert len(person.asked) == 1, "refused before the person is asked"
    assert airline.calls["CREATE"] == 1


@pytest.mark.parametrize(
    ("tool", "arguments", "field"),
    [
        ("price_offer", {"offer_id": "OFFER1"}, "offer_id"),
        ("price_offer", {"offer_id": "ZZ:OFFER1"}, "offer_id"),
        ("get_order", {"order_id": "nonsense id"}, "order_id"),
    ],
)
@pytest.mark.parametrize("mode", MODES)
async def test_bad_ids_name_the_field(
    mode: str, airline: Airline, tool: str, arguments: dict[str, Any], field: str
) -> None:
    async with opened(airline, mode) as (client, _, _):
        text = await _error(client, tool, **arguments)
        assert f"Invalid argument '{field}'" in text
        assert not airline.calls


async def test_orders_are_their_clients_only(airline: Airline) -> None:
    orders = ScriptedOrders(airline)
    await orders.price("acme", "BA:OFFER1")
    booking = await orders.prepare_booking("acme", "BA:OFFER1", [ADULT], CONTACT)
    made = await orders.create(booking)
    assert (await orders.get("acme", made.order_id)).order_id == made.order_id
    from jetbridge.errors import OrderNotFound

    with pytest.raises(OrderNotFound, match="no order BA:PNR001 made by your client"):
        await orders.get("rival", made.order_id)
    with pytest.raises(OrderNotFound):
        await orders.prepare_cancel("rival", made.order_id)
    with pytest.raises(OrderNotFound):
        await orders.get("acme", "BA:NOSUCH")
    assert airline.calls["RETRIEVE"] == 1, "another client's lookup never reaches the airline"


async def test_the_key_is_stable_and_says_nothing(airline: Airline) -> None:
    orders = ScriptedOrders(airline)
    from mcp_bridge.orders import parse_party

    party = parse_party([ADULT], CONTACT)
    key = orders.idempotency_key("acme", "BA:OFFER1", party)
    assert key == orders.idempotency_key("acme", "BA:OFFER1", parse_party([ADULT], CONTACT))
    assert key != orders.idempotency_key("rival", "BA:OFFER1", party)
    assert key != orders.idempotency_key("acme", "BA:OFFER2", party)
    assert key.startswith("jbo_")
    assert "ada" not in key.lower()
    assert repr(party) == "OrderParty(<personal data>)"


async def test_subscribers_hear_of_changes(airline: Airline) -> None:
    orders = ScriptedOrders(airline)
    server, _ = _server(orders)
    await orders.price("anonymous", "BA:OFFER1")
    made = await orders.create(await orders.prepare_booking("anonymous", "BA:OFFER1", [ADULT], CONTACT))
    async with Client(server, mode="auto") as client:
        read = await client.read_resource(made.resource_uri)
        assert '"status":"confirmed"' in read.contents[0].text  # type: ignore[union-attr]
        async with client.listen(resource_subscriptions=[made.resource_uri]) as subscription:
            event = orders.book.get(made.order_id)
            assert event is not None
            changed = event.model_copy(
                update={
                    "order": event.order.model_copy(update={"status": OrderStatus.CANCELLED}),
                    "at": datetime.now(UTC),
                    "change": "airline_cancellation",
                }
            )
            orders.book.note(changed)
            async for update in subscription:
                assert getattr(update, "uri", None) == made.resource_uri
                break
        read = await client.read_resource(made.resource_uri)
        assert '"status":"cancelled"' in read.contents[0].text  # type: ignore[union-attr]
        with pytest.raises(MCPError):
            await client.read_resource("jetbridge://orders/BA:SOMEONEELSE")


async def ours_and_a_rivals(airline: Airline) -> tuple[ScriptedOrders, MCPServer, OrderResult, OrderResult]:
    """A server with one order of this session's client ("anonymous", in process) and one of a rival client."""
    orders = ScriptedOrders(airline)
    server, _ = _server(orders)
    await orders.price("anonymous", "BA:OFFER1")
    made = await orders.create(await orders.prepare_booking("anonymous", "BA:OFFER1", [ADULT], CONTACT))
    await orders.price("rival", "BA:OFFER1")
    theirs = await orders.create(await orders.prepare_booking("rival", "BA:OFFER1", [ADULT], CONTACT))
    return orders, server, made, theirs


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")
async def test_legacy_subscribers_hear_of_their_orders_only(airline: Airline) -> None:
    """A 2025-11-25 client subscribes with resources/subscribe and gets notifications/resources/updated."""
    orders, server, made, theirs = await ours_and_a_rivals(airline)
    heard: asyncio.Queue[str] = asyncio.Queue()

    async def on_message(message: Any) -> None:
        uri = getattr(getattr(message, "params", None), "uri", None)
        if uri is not None:
            heard.put_nowait(str(uri))

    async with Client(server, mode="legacy", message_handler=on_message) as client:
        await client.subscribe_resource(made.resource_uri)
        with pytest.raises(MCPError, match="of your client"):
            await client.subscribe_resource(theirs.resource_uri)
        event = orders.book.get(made.order_id)
        assert event is not None
        cancelled = event.order.model_copy(update={"status": OrderStatus.CANCELLED})
        orders.book.note(event.model_copy(update={"order": cancelled, "at": datetime.now(UTC)}))
        assert await asyncio.wait_for(heard.get(), 2.0) == made.resource_uri


async def test_an_order_the_airline_no_longer_has_is_booked_anew(airline: Airline) -> None:
    """Jetbridge's record of an order made with the same key is checked with the airline before it stands in."""
    async with opened(airline) as (client, person, _):
        await _call(client, "price_offer", offer_id="BA:OFFER1")
        first = await _call(client, "create_order", offer_id="BA:OFFER1", passengers=[ADULT], contact=CONTACT)
        airline.orders.clear()  # the airline lost it (or never kept it)
        again = await _call(client, "create_order", offer_id="BA:OFFER1", passengers=[ADULT], contact=CONTACT)
    assert again["reconciled"] is False
    assert first["reconciled"] is False
    assert airline.calls["CREATE"] == 2
    assert len(person.asked) == 2, "a new booking is confirmed again"


async def test_a_listen_stream_hears_of_its_own_clients_orders_only(airline: Airline) -> None:
    """2026-07-28: another client's order is left out of the acknowledged filter (the SDK alone honours any URI)."""
    _, server, made, theirs = await ours_and_a_rivals(airline)
    async with Client(server, mode="auto") as client:
        wanted = [made.resource_uri, theirs.resource_uri, "jetbridge://elsewhere/x"]
        async with client.listen(resource_subscriptions=wanted) as subscription:
            assert subscription.honored is not None
            assert subscription.honored.resource_subscriptions == [made.resource_uri]
        too_many = [f"jetbridge://orders/BA:X{n}" for n in range(MAX_LISTENED_ORDERS + 1)]
        with pytest.raises(MCPError, match=f"at most {MAX_LISTENED_ORDERS}"):
            async with client.listen(resource_subscriptions=too_many):
                pass
