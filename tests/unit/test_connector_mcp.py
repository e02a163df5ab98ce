"""The airline-MCP connector: Finnair's mapping, and transport failures against httpx2.MockTransport."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx2
import pytest

from connectors.airlines import finnair
from connectors.kinds.mcp import McpConnector
from jetbridge.airlines import Airline
from jetbridge.errors import AirlineBadResponse, AirlineRejected, AirlineTimeout, AirlineUnavailable
from schemas.models import Cabin, Offer, SearchCriteria

AY = Airline(code="AY", name="Finnair", kind="mcp", endpoint="http://ay.test/mcp")
CRITERIA = SearchCriteria(
    origin="HEL",
    destination="JFK",
    departure_date=date(2026, 12, 14),
    return_date=date(2026, 12, 20),
    adults=1,
    infants=1,
    cabin=Cabin.PREMIUM_ECONOMY,
    currency="EUR",
)


def finnair_offer(**changes: Any) -> dict[str, Any]:
    offer: dict[str, Any] = {
        "offer_id": "AY-1",
        "fare_family": "Premium Economy Classic",
        "travel_class": "premium_economy",
        "price": {"amount": 1499.9, "currency": "EUR"},
        "valid_until": "2026-12-01T10:30:00+00:00",
        "bounds": [
            {
                "bound_type": "outbound",
                "duration": "PT9H5M",
                "flights": [
                    {
                        "flight_number": "AY5",
                        "departure": {"airport": "HEL", "local_time": "2026-12-14T16:00"},
                        "arrival": {"airport": "JFK", "local_time": "2026-12-14T18:05"},
                        "aircraft_code": "359",
                    }
                ],
            }
        ],
    }
    offer.update(changes)
    return offer


def test_tool_arguments_use_finnairs_names() -> None:
    assert finnair.tool_arguments(CRITERIA) == {
        "origin": "HEL",
        "destination": "JFK",
        "departure_date": "2026-12-14",
        "return_date": "2026-12-20",
        "adults": 1,
        "children": 0,
        "infants": 1,
        "travel_class": "premium_economy",
        "currency": "EUR",
    }


def test_finnair_sells_no_first_so_no_call_is_made() -> None:
    assert finnair.tool_arguments(CRITERIA.model_copy(update={"cabin": Cabin.FIRST})) is None


def test_finnair_structured_content_becomes_offers() -> None:
    (offer,) = finnair.parse({"offers": [finnair_offer()]}, airline="AY", criteria=CRITERIA)
    assert offer.total_amount == Decimal("1499.90")
    assert (offer.cabin, offer.fare_brand, offer.currency) == (
        Cabin.PREMIUM_ECONOMY,
        "Premium Economy Classic",
        "EUR",
    )
    assert offer.expires_at == datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    (slice_,) = offer.slices
    assert (slice_.origin, slice_.destination, slice_.duration_minutes) == ("HEL", "JFK", 545)
    assert (slice_.segments[0].carrier, slice_.segments[0].flight_number) == ("AY", "5")


@pytest.mark.parametrize(
    "broken",
    [
        {"travel_class": "galactic"},
        {"price": {"amount": "1499.90", "currency": "EUR"}},
        {"price": {"amount": -5, "currency": "EUR"}},
        {"bounds": []},
        {"valid_until": "tomorrow"},
        {"offer_id": "has spaces and <tags>"},
    ],
)
def test_finnair_content_that_breaks_the_contract_raises_a_value_error(broken: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r".+"):
        finnair.parse({"offers": [finnair_offer(**broken)]}, airline="AY", criteria=CRITERIA)


Handler = Callable[[httpx2.Request], Coroutine[None, None, httpx2.Response]]


async def search(handler: Handler, *, timeout_s: float = 2.0) -> list[Offer]:
    connector = McpConnector(AY, transport=httpx2.MockTransport(handler))
    try:
        return await connector.search(CRITERIA, request_id="req-1", timeout_s=timeout_s)
    finally:
        await connector.aclose()


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_server_errors_and_throttling_are_unavailable(status: int) -> None:
    async def handler(_: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, text="Internal Server Error")

    with pytest.raises(AirlineUnavailable, match=str(status)):
        await search(handler)


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_rejected(status: int) -> None:
    async def handler(_: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, json={"error": "unauthorized"})

    with pytest.raises(AirlineRejected):
        await search(handler)


async def test_the_api_key_travels_in_finnairs_header() -> None:
    seen: list[str] = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.headers.get("x-api-key", ""))
        return httpx2.Response(401)

    with pytest.raises(AirlineRejected):
        await search(handler)
    assert seen
    assert set(seen) == {"dev-key-ay"}


async def test_a_refused_connection_is_unavailable() -> None:
    async def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    with pytest.raises(AirlineUnavailable):
        await search(handler)


async def test_a_body_that_is_not_json_rpc_is_a_bad_response() -> None:
    async def handler(_: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, text="<html>hello</html>", headers={"content-type": "application/json"})

    with pytest.raises(AirlineBadResponse):
        await search(handler)


async def test_an_answer_that_never_comes_times_out_within_the_budget_and_leaves_no_task() -> None:
    async def handler(_: httpx2.Request) -> httpx2.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    before = asyncio.all_tasks()
    started = time.perf_counter()
    with pytest.raises(AirlineTimeout):
        await search(handler, timeout_s=0.3)
    assert time.perf_counter() - started < 0.3 + 0.25
    assert asyncio.all_tasks() - before == set()
