"""The simulated airline APIs in memory (httpx.ASGITransport): auth, dialects, business errors, faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import defusedxml.ElementTree as SafeET
import httpx
import pytest
from starlette.types import ASGIApp

from infra.simulators import ndc, rest_delta, rest_virgin
from infra.simulators.faults import AirlineState, FaultConfig, FaultPatch
from infra.simulators.schedule import Schedule

DAY = (datetime.now(UTC) + timedelta(days=21)).date().isoformat()
KEY = {"X-API-Key": "test"}
N = f"{{{ndc.NDC_NS}}}"


def rq(origin: str = "LHR", destination: str = "JFK") -> bytes:
    return f"""<IATA_AirShoppingRQ xmlns="{ndc.NDC_NS}"><Request><FlightRequest>
      <FlightRequestOriginDestinationsCriteria><OriginDestCriteria>
        <OriginDepCriteria><Date>{DAY}</Date><IATA_LocationCode>{origin}</IATA_LocationCode></OriginDepCriteria>
        <DestArrivalCriteria><IATA_LocationCode>{destination}</IATA_LocationCode></DestArrivalCriteria>
      </OriginDestCriteria></FlightRequestOriginDestinationsCriteria></FlightRequest>
      <Paxs><Pax><PaxID>PAX1</PaxID><PTC>ADT</PTC></Pax></Paxs>
    </Request></IATA_AirShoppingRQ>""".encode()


@pytest.fixture(scope="module")
def schedule() -> Schedule:
    return Schedule()


@pytest.fixture
def state() -> AirlineState:
    return AirlineState("BA", FaultConfig())


async def client_for(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as client:
        yield client


@pytest.fixture
async def ba(state: AirlineState, schedule: Schedule) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(ndc.build_app(state, schedule)):
        yield client


async def test_health_needs_no_key_but_shopping_does(ba: httpx.AsyncClient) -> None:
    assert (await ba.get("/health")).json() == {"status": "ok", "airline": "BA"}
    assert (await ba.post("/ndc/AirShopping", content=rq())).status_code == 401
    bearer = await ba.post("/ndc/AirShopping", content=rq(), headers={"Authorization": "Bearer k"})
    assert bearer.status_code == 200


async def test_ndc_answers_offers_referencing_its_data_lists(ba: httpx.AsyncClient) -> None:
    response = await ba.post("/ndc/AirShopping", content=rq(), headers=KEY)
    root = SafeET.fromstring(response.content)
    assert root.tag == f"{N}IATA_AirShoppingRS"
    segment_ids = {e.text for e in root.iter(f"{N}PaxSegmentID")}
    offers = root.findall(f".//{N}Offer")
    assert offers
    for offer in offers:
        assert offer.find(f"{N}TotalPrice/{N}TotalAmount").get("CurCode") == "USD"
        for ref in offer.iter(f"{N}PaxSegmentRefID"):
            assert ref.text in segment_ids


async def test_ndc_business_errors_are_errors_with_http_200(ba: httpx.AsyncClient) -> None:
    response = await ba.post("/ndc/AirShopping", content=rq(origin="QQQ"), headers=KEY)
    assert response.status_code == 200
    root = SafeET.fromstring(response.content)
    assert root.findtext(f"{N}Errors/{N}Error/{N}Code") == "304"


async def test_ndc_unserved_route_answers_no_offers(ba: httpx.AsyncClient) -> None:
    response = await ba.post("/ndc/AirShopping", content=rq("JFK", "LAX"), headers=KEY)
    assert SafeET.fromstring(response.content).findall(f".//{N}Offer") == []


async def test_ndc_simulator_refuses_a_doctype_in_the_request(ba: httpx.AsyncClient) -> None:
    body = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + rq()
    response = await ba.post("/ndc/AirShopping", content=body, headers=KEY)
    assert SafeET.fromstring(response.content).findtext(f"{N}Errors/{N}Error/{N}Code") == "911"


async def test_http_500_fault_answers_500_and_malformed_truncates_the_xml(
    ba: httpx.AsyncClient, state: AirlineState
) -> None:
    state.config = FaultPatch(fault="http_500").apply(state.config)
    assert (await ba.post("/ndc/AirShopping", content=rq(), headers=KEY)).status_code == 500
    state.config = FaultPatch(fault="malformed").apply(state.config)
    broken = await ba.post("/ndc/AirShopping", content=rq(), headers=KEY)
    assert broken.status_code == 200
    with pytest.raises(SafeET.ParseError):
        SafeET.fromstring(broken.content)


def test_setting_a_fault_without_a_rate_means_always() -> None:
    config = FaultConfig(fault="slow", fault_rate=0.2)
    assert FaultPatch(fault="http_500").apply(config).fault_rate == 1.0
    assert FaultPatch(latency_ms=5).apply(config) == config.model_copy(update={"latency_ms": 5})


async def test_virgin_speaks_query_parameters_and_minor_units(schedule: Schedule) -> None:
    state = AirlineState("VS", FaultConfig())
    async for vs in client_for(rest_virgin.build_app(state, schedule)):
        params = {"from": "LHR", "to": "JFK", "departDate": DAY, "adults": "2", "cabinClass": "upper"}
        body = (await vs.get("/api/v2/flights/search", params=params, headers=KEY)).json()
        assert body["itineraries"]
        assert all(isinstance(i["price"]["totalMinor"], int) for i in body["itineraries"])
        bad = await vs.get("/api/v2/flights/search", params={**params, "cabinClass": "first"}, headers=KEY)
        assert bad.status_code == 400
        state.config = FaultPatch(fault="malformed").apply(state.config)
        broken = await vs.get("/api/v2/flights/search", params=params, headers=KEY)
        with pytest.raises(json.JSONDecodeError):
            json.loads(broken.content)


async def test_delta_speaks_a_json_body_and_decimal_strings(schedule: Schedule) -> None:
    state = AirlineState("DL", FaultConfig())
    request = {
        "tripType": "ONE_WAY",
        "originAirportCode": "LHR",
        "destinationAirportCode": "JFK",
        "slices": [{"origin": "LHR", "destination": "JFK", "departureDate": DAY}],
        "passengers": [{"type": "ADT", "count": 1}],
        "cabin": "DELTA_ONE",
    }
    async for dl in client_for(rest_delta.build_app(state, schedule)):
        body = (await dl.post("/shop/v1/offers", json=request, headers=KEY)).json()
        offers = [o for s in body["offerSets"] for o in s["offers"]]
        assert offers
        assert all(isinstance(o["totalPrice"]["amount"], str) and o["cabin"] == "DELTA_ONE" for o in offers)
        wrong = await dl.post("/shop/v1/offers", json={**request, "tripType": "ROUND_TRIP"}, headers=KEY)
        assert wrong.status_code == 422
