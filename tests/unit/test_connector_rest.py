"""The REST connector with the Virgin Atlantic and Delta mappings, against httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors.airlines import delta, virgin_atlantic
from connectors.base import build_connector
from connectors.kinds.boundary import CANCEL_SLACK_S
from connectors.kinds.rest import RestConnector
from jetbridge.airlines import Airline
from jetbridge.errors import (
    AirlineBadResponse,
    AirlineRejected,
    AirlineTimeout,
    AirlineUnavailable,
    ConfigurationError,
)
from jetbridge.http import build_http_client
from schemas.models import Cabin, Offer, SearchCriteria

VS = Airline(code="VS", name="Virgin Atlantic", kind="rest", endpoint="http://vs.test", mapping="virgin_atlantic")
DL = Airline(code="DL", name="Delta", kind="rest", endpoint="http://dl.test/", mapping="delta")
CRITERIA = SearchCriteria(
    origin="LHR",
    destination="JFK",
    departure_date=date(2026, 12, 14),
    return_date=date(2026, 12, 21),
    adults=2,
    children=1,
    cabin=Cabin.ECONOMY,
    currency="GBP",
)

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def vs_flight(flight_no: str, origin: str, destination: str, departs: str, arrives: str) -> dict[str, Any]:
    return {
        "flightNo": flight_no,
        "from": origin,
        "to": destination,
        "departsAt": departs,
        "arrivesAt": arrives,
        "aircraft": {"code": "789", "name": "Boeing 787-9"},
    }


def vs_body(**price: Any) -> dict[str, Any]:
    return {
        "searchId": "abc",
        "itineraries": [
            {
                "id": "VS-1",
                "fareFamily": "Economy Classic",
                "cabinClass": "economy",
                "price": {"totalMinor": 123456, "currency": "GBP", "decimals": 2, **price},
                "validUntil": "2026-12-01T10:30:00Z",
                "legs": [
                    {
                        "direction": "outbound",
                        "durationMinutes": 445,
                        "flights": [vs_flight("VS3", "LHR", "JFK", "2026-12-14T08:00", "2026-12-14T11:05")],
                    },
                    {
                        "direction": "inbound",
                        "durationMinutes": 410,
                        "flights": [vs_flight("VS4", "JFK", "LHR", "2026-12-21T19:10", "2026-12-22T07:00")],
                    },
                ],
            }
        ],
    }


def dl_segment(number: str, origin: str, destination: str, departs: str, arrives: str) -> dict[str, Any]:
    return {
        "marketingCarrier": "DL",
        "flightNumber": number,
        "origin": {"code": origin},
        "destination": {"code": destination},
        "scheduledDeparture": departs,
        "scheduledArrival": arrives,
        "equipment": {"code": "359"},
    }


def dl_body(amount: Any = "987.65") -> dict[str, Any]:
    return {
        "offerSets": [
            {
                "offerSetId": "OS1",
                "itinerary": {
                    "slices": [
                        {
                            "sliceId": "S1",
                            "durationMinutes": 460,
                            "segments": [dl_segment("1", "LHR", "JFK", "2026-12-14T10:00:00", "2026-12-14T13:40:00")],
                        }
                    ]
                },
                "offers": [
                    {
                        "offerId": "DL-1",
                        "brand": {"id": "MAIN", "name": "Main Cabin"},
                        "cabin": "MAIN",
                        "totalPrice": {"amount": amount, "currencyCode": "USD"},
                        "expiresAt": "2026-12-01T10:30:00+00:00",
                    },
                    {
                        "offerId": "DL-2",
                        "brand": {"id": "COMFORT_PLUS", "name": "Comfort+"},
                        "cabin": "MAIN",
                        "totalPrice": {"amount": "1100.00", "currencyCode": "USD"},
                        "expiresAt": "2026-12-01T10:30:00+00:00",
                    },
                ],
            }
        ]
    }


def json_answer(body: Any, status: int = 200) -> Handler:
    async def handler(_: httpx.Request) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers={"content-type": "application/json"})

    return handler


async def search(
    airline: Airline, handler: Handler, *, criteria: SearchCriteria = CRITERIA, timeout_s: float = 2.0
) -> list[Offer]:
    async with build_http_client(transport=httpx.MockTransport(handler)) as http:
        connector = build_connector(airline, http)
        try:
            return await connector.search(criteria, request_id="req-1", timeout_s=timeout_s)
        finally:
            await connector.aclose()


async def test_virgin_request_uses_its_query_dialect_and_api_key_header() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=vs_body())

    await search(VS, handler)
    (request,) = seen
    assert request.method == "GET"
    assert request.url.path == "/api/v2/flights/search"
    assert dict(request.url.params) == {
        "from": "LHR",
        "to": "JFK",
        "departDate": "2026-12-14",
        "returnDate": "2026-12-21",
        "adults": "2",
        "children": "1",
        "infants": "0",
        "cabinClass": "economy",
        "currency": "GBP",
    }
    assert request.headers["x-api-key"] == "dev-key-vs"


async def test_virgin_minor_unit_prices_become_decimal_offers() -> None:
    (offer,) = await search(VS, json_answer(vs_body()))
    assert offer.total_amount == Decimal("1234.56")
    assert (offer.airline, offer.currency, offer.cabin, offer.fare_brand) == (
        "VS",
        "GBP",
        Cabin.ECONOMY,
        "Economy Classic",
    )
    assert offer.expires_at == datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    assert [(s.origin, s.destination, s.duration_minutes) for s in offer.slices] == [
        ("LHR", "JFK", 445),
        ("JFK", "LHR", 410),
    ]
    segment = offer.slices[0].segments[0]
    assert (segment.carrier, segment.flight_number, segment.departure_local) == (
        "VS",
        "3",
        "2026-12-14T08:00",
    )


async def test_virgin_answer_with_three_decimals_scales_correctly() -> None:
    (offer,) = await search(VS, json_answer(vs_body(totalMinor=1234567, decimals=3)))
    assert offer.total_amount == Decimal("1234.57")


async def test_virgin_is_not_asked_for_first_it_does_not_sell() -> None:
    async def handler(_: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    first = CRITERIA.model_copy(update={"cabin": Cabin.FIRST})
    assert await search(VS, handler, criteria=first) == []


async def test_delta_request_is_a_json_body_in_its_dialect_with_a_bearer_key() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=dl_body())

    await search(DL, handler, criteria=CRITERIA.model_copy(update={"cabin": Cabin.BUSINESS}))
    (request,) = seen
    assert (request.method, str(request.url)) == ("POST", "http://dl.test/shop/v1/offers")
    assert request.headers["authorization"] == "Bearer dev-key-dl"
    assert json.loads(request.content) == {
        "tripType": "ROUND_TRIP",
        "originAirportCode": "LHR",
        "destinationAirportCode": "JFK",
        "slices": [
            {"origin": "LHR", "destination": "JFK", "departureDate": "2026-12-14"},
            {"origin": "JFK", "destination": "LHR", "departureDate": "2026-12-21"},
        ],
        "passengers": [{"type": "ADT", "count": 2}, {"type": "CNN", "count": 1}],
        "cabin": "DELTA_ONE",
        "currencyCode": "GBP",
    }


async def test_delta_offer_sets_become_one_offer_per_brand() -> None:
    offers = await search(DL, json_answer(dl_body()))
    assert [(o.offer_id, o.total_amount, o.fare_brand) for o in offers] == [
        ("DL-1", Decimal("987.65"), "Main Cabin"),
        ("DL-2", Decimal("1100.00"), "Comfort+"),
    ]
    assert offers[0].slices == offers[1].slices
    assert offers[0].slices[0].segments[0].aircraft == "359"


@pytest.mark.parametrize("airline", [VS, DL], ids=["VS", "DL"])
@pytest.mark.parametrize("status", [500, 503, 429])
async def test_server_errors_and_throttling_are_unavailable(airline: Airline, status: int) -> None:
    with pytest.raises(AirlineUnavailable):
        await search(airline, json_answer({"error": "down"}, status))


@pytest.mark.parametrize("airline", [VS, DL], ids=["VS", "DL"])
@pytest.mark.parametrize("status", [400, 401, 403, 422])
async def test_client_errors_are_rejected(airline: Airline, status: int) -> None:
    with pytest.raises(AirlineRejected):
        await search(airline, json_answer({"errors": [{"code": "X"}]}, status))


@pytest.mark.parametrize("airline", [VS, DL], ids=["VS", "DL"])
@pytest.mark.parametrize(
    "body",
    [b'{"itineraries": [', b"<html>502</html>", b'{"offerSets": [{"x": NaN}]}', b"[" * 100_000],
    ids=["truncated", "html", "nan", "deep"],
)
async def test_malformed_json_is_a_bad_response(airline: Airline, body: bytes) -> None:
    with pytest.raises(AirlineBadResponse):
        await search(airline, json_answer(body))


async def test_virgin_body_missing_a_field_is_a_bad_response() -> None:
    body = vs_body()
    del body["itineraries"][0]["price"]["totalMinor"]
    with pytest.raises(AirlineBadResponse, match="invalid field"):
        await search(VS, json_answer(body))


async def test_delta_price_sent_as_a_number_breaks_the_contract() -> None:
    with pytest.raises(AirlineBadResponse):
        await search(DL, json_answer(dl_body(amount=987.65)))


@pytest.mark.parametrize("amount", ["-1.00", "1e400", "NaN", "12345678901234.00", "abc"])
async def test_delta_prices_that_are_not_sane_amounts_are_bad_responses(amount: str) -> None:
    with pytest.raises(AirlineBadResponse):
        await search(DL, json_answer(dl_body(amount=amount)))


async def test_untrusted_codes_from_the_airline_are_checked() -> None:
    body = vs_body()
    body["itineraries"][0]["legs"][0]["flights"][0]["to"] = "J'K"
    with pytest.raises(AirlineBadResponse, match="airport"):
        await search(VS, json_answer(body))


async def test_segments_that_do_not_connect_are_a_bad_response() -> None:
    body = dl_body()
    body["offerSets"][0]["itinerary"]["slices"][0]["segments"].append(
        dl_segment("2", "BOS", "LAX", "2026-12-14T15:00:00", "2026-12-14T18:00:00")
    )
    with pytest.raises(AirlineBadResponse, match="connect"):
        await search(DL, json_answer(body))


async def test_airline_display_text_is_stripped_of_control_characters_and_capped() -> None:
    body = vs_body()
    body["itineraries"][0]["fareFamily"] = "Economy\u0000\u202e Classic\n" + "x" * 150
    (offer,) = await search(VS, json_answer(body))
    assert offer.fare_brand is not None
    assert offer.fare_brand.startswith("Economy Classic x")
    assert len(offer.fare_brand) == 80


async def test_an_answer_that_never_comes_times_out_within_the_budget() -> None:
    async def handler(_: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    started = time.perf_counter()
    with pytest.raises(AirlineTimeout):
        await search(DL, handler, timeout_s=0.3)
    # MockTransport has no timeouts of its own, so this is the backstop: the budget plus its slack.
    assert time.perf_counter() - started < 0.3 + CANCEL_SLACK_S + 0.25


async def test_a_refused_connection_is_unavailable() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(AirlineUnavailable):
        await search(VS, handler)


async def test_a_redirect_is_not_followed_and_is_a_bad_response() -> None:
    async def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "http://elsewhere.test/"})

    with pytest.raises(AirlineBadResponse):
        await search(VS, handler)


async def test_a_rest_airline_without_a_known_mapping_module_is_a_configuration_error() -> None:
    async with build_http_client() as http:
        with pytest.raises(ConfigurationError):
            RestConnector(Airline(code="XX", name="X", kind="rest", endpoint="http://x", mapping="nope"), http)
        with pytest.raises(ConfigurationError):
            RestConnector(Airline(code="XX", name="X", kind="rest", endpoint="http://x", mapping="../os"), http)


def test_mapping_modules_satisfy_the_rest_mapping_protocol() -> None:
    for module in (virgin_atlantic, delta):
        assert callable(module.auth_headers)
        assert callable(module.build_request)
        assert callable(module.parse)
