"""The REST kind's order side with the Delta and Virgin Atlantic mappings, against httpx.MockTransport: what each
dialect sends, how its answers and errors become OrderState / PricedOffer / the error tree, and signed changes."""

from __future__ import annotations

import asyncio
import json
import types
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from connectors.airlines import delta, virgin_atlantic
from connectors.base import build_connector
from connectors.kinds.rest import RestConnector
from connectors.orders import OrderChangeParser, sign_body
from infra.simulators import rest_delta, rest_virgin
from infra.simulators.faults import AirlineState, FaultConfig
from infra.simulators.schedule import Schedule
from jetbridge.airlines import Airline
from jetbridge.errors import (
    AirlineBadResponse,
    AirlineRejected,
    AirlineThrottled,
    AirlineTimeout,
    AirlineUnavailable,
    ConfigurationError,
    JetbridgeError,
    OfferExpired,
    OfferUnavailable,
    OrderNotFound,
    OrderRefused,
    PriceChanged,
    SeatsUnavailable,
)
from jetbridge.http import build_http_client
from jetbridge.passengers import Contact, OrderParty, Passenger, TravelDocument
from schemas.models import OrderState, OrderStatus, PricedOffer

VS = Airline(code="VS", name="Virgin Atlantic", kind="rest", endpoint="http://vs.test", mapping="virgin_atlantic")
DL = Airline(code="DL", name="Delta", kind="rest", endpoint="http://dl.test/", mapping="delta")
DL_KEY = "dev-key-dl"
VS_KEY = "dev-key-vs"

PARTY = OrderParty(
    passengers=[
        Passenger(
            given_name="Amelia",
            family_name="Quigglesworth",
            date_of_birth=date(1984, 3, 9),
            document=TravelDocument(number="P1234567", issuing_country="GB", expires_on=date(2031, 1, 31)),
        ),
        Passenger(given_name="Teodor", family_name="Zbyszewski", date_of_birth=date(2019, 7, 1)),
    ],
    contact=Contact(email="amelia.q@example.org", phone="+44 7700 900123"),
)
PERSONAL = ["Amelia", "Quigglesworth", "Teodor", "Zbyszewski", "P1234567", "1984-03-09", "amelia.q@", "7700 900123"]

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def _no_call(_: httpx.Request) -> httpx.Response:
    raise AssertionError("no HTTP call expected")


NO_HTTP = httpx.AsyncClient(transport=httpx.MockTransport(_no_call))


@pytest.fixture(autouse=True)
def dev_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # The airlines' credentials unset: the connectors send (and verify with) the development keys.
    for variable in ("JB_CREDENTIAL_DL", "JB_CREDENTIAL_VS"):
        monkeypatch.delenv(variable, raising=False)


# ---- the airlines' answers, as their APIs send them ----


def dl_segment(number: str, origin: str, destination: str, departs: str) -> dict[str, Any]:
    return {
        "marketingCarrier": "DL",
        "flightNumber": number,
        "origin": {"code": origin},
        "destination": {"code": destination},
        "scheduledDeparture": departs,
        "scheduledArrival": "2026-12-01T11:45:00",
        "equipment": {"code": "321"},
    }


DL_ITINERARY = {
    "slices": [
        {"sliceId": "S1", "durationMinutes": 375, "segments": [dl_segment("401", "JFK", "LAX", "2026-12-01T08:30:00")]}
    ]
}


def dl_order(
    status: str = "CONFIRMED", *, order_id: str = "H7QX2M", created: str = "2026-11-20T10:00:00+00:00"
) -> dict[str, Any]:
    return {
        "orderId": order_id,
        "orderStatus": status,
        "offerId": "DL-OFFER-1",
        "clientReference": "ref-1",
        "totalPrice": {"amount": "612.40", "currencyCode": "USD"},
        "passengers": [
            {"passengerId": "P1", "firstName": "Amelia", "lastName": "Quigglesworth"},
            {"passengerId": "P2", "firstName": "Teodor", "lastName": "Zbyszewski"},
        ],
        "itinerary": DL_ITINERARY,
        "createdAt": created,
        "updatedAt": "2026-11-20T10:00:05+00:00",
    }


def dl_priced(original: str | None = None) -> dict[str, Any]:
    return {
        "pricedOffer": {
            "offerId": "DL-OFFER-1",
            "totalPrice": {"amount": "612.40", "currencyCode": "USD"},
            "originalTotalPrice": {"amount": "580.00", "currencyCode": "USD"} if original else None,
            "expiresAt": "2026-11-20T10:30:00+00:00",
            "passengerCount": 2,
            "travelDocumentRequired": False,
            "itinerary": DL_ITINERARY,
        }
    }


def vs_legs() -> list[dict[str, Any]]:
    return [
        {
            "direction": "outbound",
            "durationMinutes": 445,
            "flights": [
                {
                    "flightNo": "VS3",
                    "from": "LHR",
                    "to": "JFK",
                    "departsAt": "2026-12-14T08:00",
                    "arrivesAt": "2026-12-14T11:05",
                }
            ],
        },
        {
            "direction": "inbound",
            "durationMinutes": 410,
            "flights": [
                {
                    "flightNo": "VS4",
                    "from": "JFK",
                    "to": "LHR",
                    "departsAt": "2026-12-21T19:10",
                    "arrivesAt": "2026-12-22T07:00",
                }
            ],
        },
    ]


def vs_booking(
    status: str = "confirmed", *, reference: str = "VX9K2P", created: str = "2026-11-20T10:00:00Z"
) -> dict[str, Any]:
    return {
        "bookingReference": reference,
        "status": status,
        "itineraryId": "VS-ITIN-1",
        "clientReference": "ref-1",
        "price": {"totalMinor": 123456, "currency": "GBP", "decimals": 2},
        "travellerCount": 2,
        "legs": vs_legs(),
        "travellers": [
            {"givenName": "Amelia", "surname": "Quigglesworth"},
            {"givenName": "Teodor", "surname": "Zbyszewski"},
        ],
        "createdAt": created,
        "updatedAt": "2026-11-20T10:00:05Z",
    }


def vs_priced(previous: int | None = None) -> dict[str, Any]:
    return {
        "itineraryId": "VS-ITIN-1",
        "price": {"totalMinor": 123456, "currency": "GBP", "decimals": 2},
        "priceChanged": previous is not None,
        "previousPrice": {"totalMinor": previous, "currency": "GBP", "decimals": 2} if previous else None,
        "validUntil": "2026-11-20T10:30:00Z",
        "travellerCount": 2,
        "passportRequired": True,
        "legs": vs_legs(),
    }


# ---- plumbing ----


def answer(body: Any, status: int = 200, **headers: str) -> Handler:
    async def handler(_: httpx.Request) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers={"content-type": "application/json", **headers})

    return handler


class Recorder:
    """A handler that records the requests it gets and answers with ``reply``."""

    def __init__(self, reply: Handler) -> None:
        self.reply = reply
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.reply(request)

    @property
    def only(self) -> httpx.Request:
        (request,) = self.requests
        return request


async def run(
    airline: Airline, handler: Handler, operation: str, *args: Any, timeout_s: float = 2.0, **kwargs: Any
) -> Any:
    async with build_http_client(transport=httpx.MockTransport(handler)) as http:
        connector = RestConnector(airline, http)
        return await getattr(connector, operation)(*args, request_id="req-1", timeout_s=timeout_s, **kwargs)


async def create(airline: Airline, handler: Handler, *, timeout_s: float = 2.0) -> OrderState:
    result: OrderState = await run(
        airline,
        handler,
        "create_order",
        "OFFER-1",
        PARTY,
        accepted_total=Decimal("612.40"),
        currency="USD",
        client_reference="ref-1",
        timeout_s=timeout_s,
    )
    return result


# ---- what each dialect sends ----


async def test_delta_price_posts_the_offer_id_with_a_bearer_key() -> None:
    recorder = Recorder(answer(dl_priced(original="580.00")))
    priced: PricedOffer = await run(DL, recorder, "price", "DL-OFFER-1")
    request = recorder.only
    assert (request.method, request.url.path) == ("POST", "/shop/v1/offers/price")
    assert request.headers["authorization"] == f"Bearer {DL_KEY}"
    assert json.loads(request.content) == {"offerId": "DL-OFFER-1"}
    assert priced == PricedOffer(
        offer_id="DL-OFFER-1",
        total_amount=Decimal("612.40"),
        currency="USD",
        previous_amount=Decimal("580.00"),
        expires_at=datetime(2026, 11, 20, 10, 30, tzinfo=UTC),
        passenger_count=2,
        documents_required=False,
        flights=["DL401 JFK-LAX 2026-12-01T08:30"],
    )


async def test_virgin_price_gets_the_itinerary_with_its_key_header_and_minor_units() -> None:
    recorder = Recorder(answer(vs_priced(previous=120000)))
    priced: PricedOffer = await run(VS, recorder, "price", "VS-ITIN/1")
    request = recorder.only
    assert request.method == "GET"
    # An offer id is opaque: a slash in it cannot walk the path.
    assert request.url.raw_path == b"/api/v2/itineraries/VS-ITIN%2F1/price"
    assert request.headers["x-api-key"] == VS_KEY
    assert (priced.total_amount, priced.previous_amount, priced.currency) == (
        Decimal("1234.56"),
        Decimal("1200.00"),
        "GBP",
    )
    assert priced.documents_required is True
    assert priced.flights == ["VS3 LHR-JFK 2026-12-14T08:00", "VS4 JFK-LHR 2026-12-21T19:10"]


async def test_delta_create_sends_passengers_contact_accepted_total_and_reference_in_the_body() -> None:
    recorder = Recorder(answer({"order": dl_order()}, 201))
    order = await create(DL, recorder)
    request = recorder.only
    assert (request.method, request.url.path) == ("POST", "/order/v1/orders")
    assert json.loads(request.content) == {
        "offerId": "OFFER-1",
        "clientReference": "ref-1",
        "acceptedTotalPrice": {"amount": "612.40", "currencyCode": "USD"},
        "passengers": [
            {
                "passengerId": "P1",
                "firstName": "Amelia",
                "lastName": "Quigglesworth",
                "birthDate": "1984-03-09",
                "travelDocument": {
                    "documentType": "PASSPORT",
                    "documentNumber": "P1234567",
                    "issuingCountryCode": "GB",
                    "expirationDate": "2031-01-31",
                },
            },
            {"passengerId": "P2", "firstName": "Teodor", "lastName": "Zbyszewski", "birthDate": "2019-07-01"},
        ],
        "contact": {"emailAddress": "amelia.q@example.org", "phoneNumber": "+44 7700 900123"},
    }
    assert order == OrderState(
        order_id="H7QX2M",
        airline="DL",
        status=OrderStatus.CONFIRMED,
        offer_id="DL-OFFER-1",
        total_amount=Decimal("612.40"),
        currency="USD",
        passenger_count=2,
        flights=["DL401 JFK-LAX 2026-12-01T08:30"],
        client_reference="ref-1",
        created_at=datetime(2026, 11, 20, 10, 0, tzinfo=UTC),
        updated_at=datetime(2026, 11, 20, 10, 0, 5, tzinfo=UTC),
    )


async def test_virgin_create_sends_the_reference_in_its_header_and_the_expected_price_in_minor_units() -> None:
    recorder = Recorder(answer(vs_booking(), 201))
    order = await create(VS, recorder)
    request = recorder.only
    assert (request.method, request.url.path) == ("POST", "/api/v2/bookings")
    assert request.headers["x-client-reference"] == "ref-1"
    body = json.loads(request.content)
    assert body["itineraryId"] == "OFFER-1"
    assert body["expectedPrice"] == {"totalMinor": 61240, "currency": "USD", "decimals": 2}
    assert body["travellers"][0]["passport"] == {
        "type": "passport",
        "number": "P1234567",
        "issuingCountry": "GB",
        "expiry": "2031-01-31",
    }
    assert "passport" not in body["travellers"][1]
    assert body["contactDetails"] == {"email": "amelia.q@example.org", "mobile": "+44 7700 900123"}
    assert (order.order_id, order.status, order.total_amount, order.passenger_count) == (
        "VX9K2P",
        OrderStatus.CONFIRMED,
        Decimal("1234.56"),
        2,
    )


@pytest.mark.parametrize(
    ("airline", "body"),
    [(DL, {"order": dl_order()}), (VS, vs_booking())],
    ids=["DL", "VS"],
)
async def test_an_order_answer_keeps_no_passenger_names(airline: Airline, body: dict[str, Any]) -> None:
    order = await create(airline, answer(body, 201))
    text = order.model_dump_json()
    assert order.passenger_count == 2
    assert not [value for value in PERSONAL if value in text]


@pytest.mark.parametrize(
    ("airline", "path", "found", "empty"),
    [
        (
            DL,
            "/order/v1/orders",
            {"orders": [dl_order(order_id="OLD111", created="2026-11-20T09:00:00+00:00"), dl_order()]},
            {"orders": []},
        ),
        (
            VS,
            "/api/v2/bookings",
            {"bookings": [vs_booking(), vs_booking(reference="OLD111", created="2026-11-20T09:00:00Z")], "count": 2},
            {"bookings": [], "count": 0},
        ),
    ],
    ids=["DL", "VS"],
)
async def test_find_order_asks_by_reference_and_answers_the_latest_or_none(
    airline: Airline, path: str, found: dict[str, Any], empty: dict[str, Any]
) -> None:
    recorder = Recorder(answer(found))
    order = await run(airline, recorder, "find_order", "ref-1")
    assert (recorder.only.method, recorder.only.url.path) == ("GET", path)
    assert recorder.only.url.params["clientReference"] == "ref-1"
    assert order is not None
    assert order.order_id in ("H7QX2M", "VX9K2P")  # the latest created, wherever it is in the list
    assert await run(airline, answer(empty), "find_order", "ref-1") is None


@pytest.mark.parametrize(
    ("airline", "found"),
    [
        (DL, {"orders": [dl_order(order_id="FIRST1"), dl_order(order_id="SECND2")]}),
        (VS, {"bookings": [vs_booking(reference="FIRST1"), vs_booking(reference="SECND2")], "count": 2}),
    ],
    ids=["DL", "VS"],
)
async def test_find_order_breaks_a_tie_within_one_second_for_the_order_listed_last(
    airline: Airline, found: dict[str, Any]
) -> None:
    order = await run(airline, answer(found), "find_order", "ref-1")
    assert order is not None
    assert order.order_id == "SECND2"


@pytest.mark.parametrize(
    ("airline", "operation", "method", "path", "body"),
    [
        (DL, "retrieve_order", "GET", b"/order/v1/orders/H7QX2M", {"order": dl_order()}),
        (DL, "cancel_order", "POST", b"/order/v1/orders/H7QX2M/cancel", {"order": dl_order("CANCELLED")}),
        (VS, "retrieve_order", "GET", b"/api/v2/bookings/H7QX2M", vs_booking()),
        (VS, "cancel_order", "DELETE", b"/api/v2/bookings/H7QX2M", vs_booking("cancelled")),
    ],
    ids=["DL-get", "DL-cancel", "VS-get", "VS-cancel"],
)
async def test_retrieve_and_cancel_use_each_dialects_route(
    airline: Airline, operation: str, method: str, path: bytes, body: dict[str, Any]
) -> None:
    recorder = Recorder(answer(body))
    order: OrderState = await run(airline, recorder, operation, "H7QX2M")
    assert (recorder.only.method, recorder.only.url.raw_path) == (method, path)
    assert order.status is (OrderStatus.CANCELLED if operation == "cancel_order" else OrderStatus.CONFIRMED)


async def test_an_order_id_is_quoted_into_the_path() -> None:
    recorder = Recorder(answer({"order": dl_order()}))
    await run(DL, recorder, "retrieve_order", "../admin?x=1")
    assert recorder.only.url.raw_path == b"/order/v1/orders/..%2Fadmin%3Fx%3D1"


def test_an_order_request_hides_its_body_and_headers_from_repr() -> None:
    request = delta.create_request("O", PARTY, accepted_total=Decimal("1"), currency="USD", client_reference="r")
    assert not [value for value in PERSONAL if value in repr(request)]
    assert "Amelia" not in repr(
        virgin_atlantic.create_request("O", PARTY, accepted_total=Decimal("1"), currency="USD", client_reference="r")
    )


# ---- errors ----


def dl_error(code: str, **extra: Any) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": f"{code.lower()} (simulated)", **extra}]}


def vs_error(code: str, **extra: Any) -> dict[str, Any]:
    return {"errorCode": code, "errors": [{"field": "itineraryId", "message": f"{code.lower()} (simulated)"}], **extra}


@pytest.mark.parametrize(
    ("airline", "operation", "status", "body", "error"),
    [
        (DL, "price", 404, dl_error("OFFER_NOT_FOUND"), OfferUnavailable),
        (DL, "price", 410, dl_error("OFFER_EXPIRED"), OfferExpired),
        (DL, "price", 409, dl_error("SOLD_OUT"), SeatsUnavailable),
        (DL, "create_order", 422, dl_error("ORDER_FAILED"), OrderRefused),
        (DL, "create_order", 422, dl_error("TRAVEL_DOCUMENT_REQUIRED"), OrderRefused),
        (DL, "retrieve_order", 404, dl_error("ORDER_NOT_FOUND"), OrderNotFound),
        (DL, "cancel_order", 404, dl_error("ORDER_NOT_FOUND"), OrderNotFound),
        (VS, "price", 404, vs_error("ITINERARY_NOT_FOUND"), OfferUnavailable),
        (VS, "price", 410, vs_error("ITINERARY_EXPIRED"), OfferExpired),
        (VS, "create_order", 409, vs_error("NO_AVAILABILITY"), SeatsUnavailable),
        (VS, "create_order", 422, vs_error("BOOKING_FAILED"), OrderRefused),
        (VS, "create_order", 422, vs_error("PASSPORT_REQUIRED"), OrderRefused),
        (VS, "retrieve_order", 404, vs_error("BOOKING_NOT_FOUND"), OrderNotFound),
        # Error bodies the mapping cannot read: the status alone decides.
        (DL, "price", 404, b"<html>not here</html>", OfferUnavailable),
        (DL, "cancel_order", 404, {"weird": True}, OrderNotFound),
        (VS, "price", 410, b"", OfferExpired),
        (VS, "create_order", 409, vs_error("SOMETHING_NEW"), OrderRefused),
        (DL, "create_order", 422, b"{", OrderRefused),
        # Other statuses keep the mapping shopping has.
        (DL, "create_order", 400, dl_error("INVALID_REQUEST"), AirlineRejected),
        (VS, "price", 401, {"error": "unauthorized"}, AirlineRejected),
        (DL, "cancel_order", 500, b"Internal Server Error", AirlineUnavailable),
        (VS, "create_order", 429, b"Too Many Requests", AirlineThrottled),
        # A 404 on find is a wrong path, never "no order" (which would let the worker book a second time).
        (DL, "find_order", 404, dl_error("ORDER_NOT_FOUND"), AirlineRejected),
    ],
)
async def test_airline_errors_map_onto_the_error_tree(
    airline: Airline, operation: str, status: int, body: Any, error: type[JetbridgeError]
) -> None:
    handler = answer(body, status, **({"retry-after": "2"} if status == 429 else {}))
    args: tuple[Any, ...] = ("X1",)
    kwargs: dict[str, Any] = {}
    if operation == "create_order":
        args = ("X1", PARTY)
        kwargs = {"accepted_total": Decimal("1.00"), "currency": "USD", "client_reference": "ref-1"}
    with pytest.raises(error) as raised:
        await run(airline, handler, operation, *args, **kwargs)
    assert type(raised.value) is error


@pytest.mark.parametrize(
    ("airline", "body"),
    [
        (DL, dl_error("PRICE_CHANGED", currentTotalPrice={"amount": "650.10", "currencyCode": "USD"})),
        (VS, vs_error("PRICE_CHANGED", currentPrice={"totalMinor": 65010, "currency": "USD", "decimals": 2})),
    ],
    ids=["DL", "VS"],
)
async def test_a_price_change_on_create_carries_the_new_amount(airline: Airline, body: dict[str, Any]) -> None:
    with pytest.raises(PriceChanged) as raised:
        await create(airline, answer(body, 409))
    assert (raised.value.amount, raised.value.currency) == ("650.10", "USD")


@pytest.mark.parametrize(
    ("airline", "body"),
    [
        (DL, {"order": {**dl_order(), "totalPrice": {"amount": 612.4, "currencyCode": "USD"}}}),
        (DL, {"order": dl_order("ON_HOLD")}),
        (DL, {"order": {**dl_order(), "passengers": []}}),
        (DL, b'{"order": {"orderId": NaN}}'),
        (VS, {**vs_booking(), "bookingReference": "<script>"}),
        (VS, {**vs_booking(), "status": "pending"}),
        (VS, b"<html>502 Bad Gateway</html>"),
    ],
    ids=["DL-number-amount", "DL-status", "DL-no-passengers", "DL-nan", "VS-id", "VS-status", "VS-html"],
)
async def test_an_order_answer_that_breaks_the_contract_is_a_bad_response(airline: Airline, body: Any) -> None:
    with pytest.raises(AirlineBadResponse):
        await create(airline, answer(body, 201))


async def test_a_create_that_gets_no_answer_in_time_is_an_airline_timeout() -> None:
    async def never(_: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    with pytest.raises(AirlineTimeout):
        await create(DL, never, timeout_s=0.2)


async def test_passengers_appear_in_no_log_line_or_error_message() -> None:
    bad = {"order": {**dl_order(), "orderStatus": "Amelia Quigglesworth"}}
    messages: list[str] = []
    with capture_logs() as logs:
        for handler in (answer(bad, 201), answer(dl_error("ORDER_FAILED"), 422), answer(b"{", 201)):
            with pytest.raises(JetbridgeError) as raised:
                await create(DL, handler)
            messages.append(str(raised.value))
    text = json.dumps(logs, default=str) + " ".join(messages)
    assert logs, "the failures were logged"
    assert not [value for value in PERSONAL if value in text]


@pytest.mark.parametrize(
    ("airline", "body"),
    [
        (DL, dl_error("TRAVEL_DOCUMENT_REQUIRED")),
        (VS, vs_error("PASSPORT_REQUIRED")),
    ],
    ids=["DL", "VS"],
)
async def test_passenger_data_an_airline_echoes_in_a_refusal_is_blanked_out(
    airline: Airline, body: dict[str, Any]
) -> None:
    echoed = "AMELIA QUIGGLESWORTH (born 1984-03-09, passport P1234567, +44 7700 900123) needs a visa"
    for error in body["errors"]:
        error["message"] = echoed
    with capture_logs() as logs, pytest.raises(OrderRefused) as raised:
        await create(airline, answer(body, 422))
    text = str(raised.value) + json.dumps(logs, default=str)
    assert "needs a visa" in str(raised.value)
    assert not [value for value in PERSONAL if value.lower() in text.lower()]


# ---- mappings without orders ----


def _search_only() -> types.ModuleType:
    module = types.ModuleType("search_only")
    for name in ("auth_headers", "build_request", "parse"):
        setattr(module, name, getattr(delta, name))
    return module


async def test_a_mapping_without_order_functions_still_shops_and_refuses_orders() -> None:
    async def refuse(_: httpx.Request) -> httpx.Response:
        raise AssertionError("an order call of a mapping without orders must not reach the airline")

    async with build_http_client(transport=httpx.MockTransport(refuse)) as http:
        connector = RestConnector(DL, http, mapping=_search_only())
        with pytest.raises(AirlineRejected, match="takes no orders"):
            await connector.price("X", request_id="r", timeout_s=1.0)
        with pytest.raises(AirlineRejected, match="takes no orders"):
            await connector.find_order("ref", request_id="r", timeout_s=1.0)
        with pytest.raises(AirlineRejected, match="takes no orders"):
            connector.parse_order_change(b"{}", {})


async def test_a_mapping_with_only_some_order_functions_is_a_configuration_error() -> None:
    module = _search_only()
    module.price_request = delta.price_request  # type: ignore[attr-defined]  # a half-done mapping module
    async with build_http_client() as http:
        with pytest.raises(ConfigurationError, match="lacks"):
            RestConnector(DL, http, mapping=module)


async def test_the_registry_built_rest_connectors_take_orders_and_changes() -> None:
    async with build_http_client() as http:
        for airline in (DL, VS):
            assert isinstance(build_connector(airline, http), OrderChangeParser)


# ---- airline-initiated changes (webhooks) ----


def dl_change(
    event: str = "ORDER_SCHEDULE_CHANGED", reason: Any = "Schedule change: aircraft rotation"
) -> dict[str, Any]:
    order = dl_order("SCHEDULE_CHANGED")
    del order["passengers"][0]["firstName"]
    return {
        "eventId": "e1",
        "eventType": event,
        "occurredAt": "2026-11-21T07:00:00Z",
        "reasonText": reason,
        "order": order,
    }


def vs_change(kind: str = "booking.cancelled", reason: Any = "Flight cancelled") -> dict[str, Any]:
    booking = vs_booking("cancelled")
    del booking["travellers"]
    return {
        "id": "evt_1",
        "type": kind,
        "createdAt": "2026-11-21T07:00:00Z",
        "data": {"reason": reason, "booking": booking},
    }


def connector(airline: Airline) -> RestConnector:
    # Reading a change makes no HTTP call: a client that can never send stands in.
    return RestConnector(airline, NO_HTTP)


def signed(body: bytes, key: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Jetbridge-Signature": sign_body(body, key)}


async def test_a_signed_delta_schedule_change_becomes_an_order_change() -> None:
    body = json.dumps(dl_change()).encode()
    change = connector(DL).parse_order_change(body, signed(body, DL_KEY))
    assert change.change == "schedule_change"
    assert change.reason == "Schedule change: aircraft rotation"
    assert change.at == datetime(2026, 11, 21, 7, 0, tzinfo=UTC)
    assert (change.order.order_id, change.order.status, change.order.airline) == ("H7QX2M", OrderStatus.CHANGED, "DL")
    assert change.order.flights == ["DL401 JFK-LAX 2026-12-01T08:30"]


async def test_a_signed_virgin_cancellation_becomes_an_order_change() -> None:
    body = json.dumps(vs_change()).encode()
    change = connector(VS).parse_order_change(body, {"x-jetbridge-signature": sign_body(body, VS_KEY)})
    assert (change.change, change.order.status, change.order.order_id) == (
        "airline_cancellation",
        OrderStatus.CANCELLED,
        "VX9K2P",
    )


async def test_the_signature_is_checked_with_the_airlines_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JB_CREDENTIAL_DL", "the-real-delta-key")
    dl = Airline(
        code="DL", name="Delta", kind="rest", endpoint="http://dl.test", mapping="delta", credential="JB_CREDENTIAL_DL"
    )
    body = json.dumps(dl_change()).encode()
    assert connector(dl).parse_order_change(body, signed(body, "the-real-delta-key")).change == "schedule_change"
    with pytest.raises(AirlineRejected, match="signature"):
        connector(dl).parse_order_change(body, signed(body, DL_KEY))


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Jetbridge-Signature": "sha256=00"}, {"X-Jetbridge-Signature": sign_body(b"other body", DL_KEY)}],
    ids=["missing", "wrong", "another-body"],
)
async def test_a_change_without_the_right_signature_is_refused(headers: dict[str, str]) -> None:
    body = json.dumps(dl_change()).encode()
    with pytest.raises(AirlineRejected, match="signature"):
        connector(DL).parse_order_change(body, headers)


@pytest.mark.parametrize(
    ("airline", "key", "body"),
    [
        (DL, DL_KEY, json.dumps(dl_change(event="ORDER_UPGRADED")).encode()),
        (DL, DL_KEY, b'{"eventType": '),
        (VS, VS_KEY, json.dumps(vs_change(kind="booking.moved")).encode()),
        (VS, VS_KEY, json.dumps({**vs_change(), "data": {"booking": {"bookingReference": "X"}}}).encode()),
    ],
    ids=["DL-unknown-event", "DL-truncated", "VS-unknown-type", "VS-missing-fields"],
)
async def test_an_unreadable_change_is_a_bad_response(airline: Airline, key: str, body: bytes) -> None:
    with pytest.raises(AirlineBadResponse):
        connector(airline).parse_order_change(body, signed(body, key))


async def test_a_changes_reason_is_cleaned_and_capped_like_airline_display_text() -> None:
    body = json.dumps(vs_change(reason="Flight\u0000 cancelled\u202e\n" + "x" * 300)).encode()
    change = connector(VS).parse_order_change(body, signed(body, VS_KEY))
    assert change.reason is not None
    assert change.reason.startswith("Flight cancelled x")
    assert len(change.reason) == 80


def test_each_rest_simulator_listens_to_its_order_desk_once_however_often_its_app_is_built() -> None:
    # A cleared ``refuse`` fault builds the app again on the same airline state.
    schedule = Schedule()
    for build in (rest_delta.build_app, rest_virgin.build_app):
        state = AirlineState("DL", FaultConfig())
        build(state, schedule)
        build(state, schedule)
        assert len([p for p in state.orders.listeners if isinstance(p, rest_delta.WebhookPusher)]) == 1
