"""Every connector kind against the real simulator servers (NDC, proprietary REST, airline MCP) on free ports,
with faults injected through the simulators' control API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import date, timedelta

import anyio
import httpx
import pytest

from connectors.base import AirlineConnector, build_connector
from connectors.kinds.mcp import McpConnector
from infra.simulators import Simulators
from jetbridge.errors import AirlineBadResponse, AirlineRejected, AirlineTimeout, AirlineUnavailable
from jetbridge.http import build_http_client
from jetbridge.settings import REPO_ROOT
from schemas.models import Cabin, SearchCriteria
from tests.integration.simulators_fixture import control_client, running_simulators

CODES = ["BA", "AA", "VS", "DL", "AY"]
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


@pytest.fixture(scope="module")
async def sims() -> AsyncIterator[Simulators]:
    async with running_simulators(CODES) as running:
        yield running


@pytest.fixture(scope="module")
async def connectors(sims: Simulators) -> AsyncIterator[dict[str, AirlineConnector]]:
    async with build_http_client(timeout_s=5.0) as http:
        built = {code: build_connector(sims.airline(code), http) for code in CODES}
        try:
            yield built
        finally:
            for connector in built.values():
                await connector.aclose()


@pytest.fixture
async def control(sims: Simulators) -> AsyncIterator[httpx.AsyncClient]:
    async with control_client(sims) as client:
        yield client


async def set_fault(control: httpx.AsyncClient, code: str, **settings: object) -> None:
    response = await control.put(f"/airlines/{code}", json=settings)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("code", CODES)
async def test_lhr_jfk_three_weeks_ahead_returns_offers_from_each_airline(
    connectors: dict[str, AirlineConnector], code: str
) -> None:
    offers = await connectors[code].search(LHR_JFK, request_id=f"it-{code}", timeout_s=BUDGET_S)
    assert offers
    for offer in offers:
        assert offer.airline == code
        assert offer.currency == "USD"
        assert offer.cabin is Cabin.ECONOMY
        (slice_,) = offer.slices
        assert (slice_.origin, slice_.destination) == ("LHR", "JFK")
        assert slice_.segments[0].carrier == code
        assert slice_.segments[0].departure_local.startswith(IN_THREE_WEEKS.isoformat())
        assert slice_.segments[0].arrival_local > slice_.segments[0].departure_local


async def test_many_concurrent_searches_across_every_kind_all_succeed(
    connectors: dict[str, AirlineConnector],
) -> None:
    calls = [
        connectors[code].search(LHR_JFK, request_id=f"it-fan-{code}-{n}", timeout_s=5.0)
        for code in CODES
        for n in range(8)
    ]
    results = await asyncio.gather(*calls)
    assert all(results)


@pytest.mark.parametrize("code", CODES)
async def test_a_return_trip_for_a_family_has_both_slices_and_the_same_answer_twice(
    connectors: dict[str, AirlineConnector], code: str
) -> None:
    criteria = LHR_JFK.model_copy(
        update={
            "return_date": IN_THREE_WEEKS + timedelta(days=7),
            "adults": 2,
            "children": 1,
            "cabin": Cabin.BUSINESS,
        }
    )
    first = await connectors[code].search(criteria, request_id="it-rt-1", timeout_s=BUDGET_S)
    second = await connectors[code].search(criteria, request_id="it-rt-2", timeout_s=BUDGET_S)
    assert first
    assert [(o.offer_id, o.total_amount, o.fare_brand) for o in first] == [
        (o.offer_id, o.total_amount, o.fare_brand) for o in second
    ]
    for offer in first:
        assert [(s.origin, s.destination) for s in offer.slices] == [("LHR", "JFK"), ("JFK", "LHR")]
        assert offer.cabin is Cabin.BUSINESS


@pytest.mark.parametrize("code", CODES)
async def test_a_question_the_airline_refuses_is_rejected(connectors: dict[str, AirlineConnector], code: str) -> None:
    unknown_airport = LHR_JFK.model_copy(update={"origin": "QQQ"})
    with pytest.raises(AirlineRejected):
        await connectors[code].search(unknown_airport, request_id="it-rej", timeout_s=BUDGET_S)


@pytest.mark.parametrize("code", CODES)
async def test_malformed_answers_are_bad_responses_and_clearing_the_fault_restores_service(
    connectors: dict[str, AirlineConnector], control: httpx.AsyncClient, code: str
) -> None:
    await set_fault(control, code, fault="malformed")
    with pytest.raises(AirlineBadResponse):
        await connectors[code].search(LHR_JFK, request_id="it-malformed", timeout_s=BUDGET_S)
    await set_fault(control, code, fault="none")
    assert await connectors[code].search(LHR_JFK, request_id="it-healed", timeout_s=BUDGET_S)


@pytest.mark.parametrize("code", CODES)
async def test_http_500_is_unavailable_and_clearing_the_fault_restores_service(
    connectors: dict[str, AirlineConnector], control: httpx.AsyncClient, code: str
) -> None:
    await set_fault(control, code, fault="http_500")
    with pytest.raises(AirlineUnavailable):
        await connectors[code].search(LHR_JFK, request_id="it-500", timeout_s=BUDGET_S)
    await set_fault(control, code, fault="none")
    assert await connectors[code].search(LHR_JFK, request_id="it-healed", timeout_s=BUDGET_S)


@pytest.mark.parametrize("code", CODES)
async def test_an_airline_slower_than_the_budget_times_out_within_a_small_margin(
    connectors: dict[str, AirlineConnector], control: httpx.AsyncClient, code: str
) -> None:
    await set_fault(control, code, fault="slow", slow_ms=5_000)
    budget = 0.5
    started = time.perf_counter()
    with pytest.raises(AirlineTimeout):
        await connectors[code].search(LHR_JFK, request_id="it-slow", timeout_s=budget)
    assert time.perf_counter() - started < budget + 0.3
    await set_fault(control, code, fault="none")
    assert await connectors[code].search(LHR_JFK, request_id="it-healed", timeout_s=BUDGET_S)


@pytest.mark.parametrize("code", CODES)
async def test_refused_connections_are_unavailable_until_the_airline_listens_again(
    connectors: dict[str, AirlineConnector], control: httpx.AsyncClient, code: str
) -> None:
    await set_fault(control, code, fault="refuse")
    assert (await control.get(f"/airlines/{code}")).json()[code]["listening"] is False
    with pytest.raises(AirlineUnavailable):
        await connectors[code].search(LHR_JFK, request_id="it-refused", timeout_s=BUDGET_S)
    await set_fault(control, code, fault="none")
    assert (await control.get(f"/airlines/{code}")).json()[code]["listening"] is True
    assert await connectors[code].search(LHR_JFK, request_id="it-healed", timeout_s=BUDGET_S)


async def test_a_fault_with_rate_zero_never_fires(
    connectors: dict[str, AirlineConnector], control: httpx.AsyncClient
) -> None:
    await set_fault(control, "DL", fault="http_500", fault_rate=0)
    for n in range(3):
        assert await connectors["DL"].search(LHR_JFK, request_id=f"it-rate-{n}", timeout_s=BUDGET_S)


async def test_reset_restores_every_airline(
    connectors: dict[str, AirlineConnector], control: httpx.AsyncClient
) -> None:
    await set_fault(control, "BA", fault="refuse")
    await set_fault(control, "AY", fault="http_500")
    assert (await control.post("/reset")).status_code == 200
    state = (await control.get("/airlines")).json()
    assert {code: (s["fault"], s["listening"]) for code, s in state.items()} == {c: ("none", True) for c in CODES}
    for code in ("BA", "AY"):
        assert await connectors[code].search(LHR_JFK, request_id="it-reset", timeout_s=BUDGET_S)


async def test_control_api_refuses_unknown_airlines_and_invalid_settings(control: httpx.AsyncClient) -> None:
    assert (await control.get("/health")).json()["status"] == "ok"
    assert (await control.put("/airlines/ZZ", json={"fault": "slow"})).status_code == 404
    assert (await control.put("/airlines/BA", json={"fault": "explode"})).status_code == 422
    assert (await control.put("/airlines/BA", json={"fault_rate": 2})).status_code == 422
    assert (await control.put("/airlines/BA", json={"latency": 5})).status_code == 422


async def test_airline_servers_answer_health_without_a_key_and_refuse_business_without_one(
    sims: Simulators,
) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        for code in CODES:
            assert (await client.get(sims.endpoint(code).rstrip("/") + "/health")).status_code == 200
        ndc = await client.post(sims.endpoint("BA") + "/ndc/AirShopping", content=b"<x/>")
        assert ndc.status_code == 401
        mcp = await client.post(sims.endpoint("AY"), json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert mcp.status_code == 401


def _mcp_client_tasks() -> set[asyncio.Task[object]]:
    # The simulators run in this process too: only the client side (SDK, httpx2, session owners) counts.
    def from_client(task: asyncio.Task[object]) -> bool:
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename if code is not None else ""
        return any(part in filename for part in ("/mcp/client/", "/httpx2/", "/connectors/kinds/mcp"))

    return {t for t in asyncio.all_tasks() if from_client(t)}


async def test_mcp_sessions_are_reused_through_faults_and_end_with_the_connector(
    sims: Simulators, control: httpx.AsyncClient
) -> None:
    others = _mcp_client_tasks()  # the module's shared connectors keep their own sessions open
    async with build_http_client(timeout_s=5.0) as http:
        connector = McpConnector(sims.airline("AY"), http)
        try:
            for n in range(3):
                assert await connector.search(LHR_JFK, request_id=f"it-reuse-{n}", timeout_s=BUDGET_S)
            await set_fault(control, "AY", fault="slow", slow_ms=5_000)
            with pytest.raises(AirlineTimeout):
                await connector.search(LHR_JFK, request_id="it-reuse-slow", timeout_s=0.3)
            await set_fault(control, "AY", fault="http_500")
            with pytest.raises(AirlineUnavailable):
                await connector.search(LHR_JFK, request_id="it-reuse-500", timeout_s=BUDGET_S)
            await set_fault(control, "AY", fault="none")
            assert await connector.search(LHR_JFK, request_id="it-reuse-healed", timeout_s=BUDGET_S)
            # A timeout and a 500 leave the session usable: one handshake for the whole run.
            assert connector.sessions.opened_count == 1
            assert _mcp_client_tasks() - others
        finally:
            await connector.aclose()
    assert _mcp_client_tasks() - others == set()


async def test_the_simulator_command_serves_every_airline_and_stops_on_sigterm() -> None:
    ports = [arg for code in CODES for arg in ("--port", f"{code}=0")]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "infra.simulators",
        *ports,
        "--control-port",
        "0",
        "--latency-ms",
        "0",
        cwd=REPO_ROOT,
        env={**os.environ, "JB_LOG_FORMAT": "json", "JB_SIM_FAULTS": "VS=malformed:0.5"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        ready: dict[str, object] = {}
        with anyio.fail_after(30):
            while not ready:
                line = await process.stderr.readline()
                assert line, "simulators exited before they were ready"
                if b"simulators ready" in line:
                    ready = json.loads(line)
        async with httpx.AsyncClient(base_url=str(ready["control"]), trust_env=False, timeout=5) as client:
            state = (await client.get("/airlines")).json()
        assert sorted(state) == sorted(CODES)
        assert all(s["listening"] and s["latency_ms"] == 0 for s in state.values())
        assert (state["VS"]["fault"], state["VS"]["fault_rate"]) == ("malformed", 0.5)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
