"""A connector worker judges the addresses its airline's host resolves to (connectors/egress.py): the gate at
start and every so often, the transports on every new connection. Resolvers are injected (a name the test
makes up resolves where the test says); the connections go to real simulator servers, no broker."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
from collections.abc import AsyncIterator, Sequence

import httpx
import httpx2
import pytest
from structlog.testing import capture_logs

from connectors.base import build_connector
from connectors.egress import EndpointGate, guarded_mcp_transport, guarded_transport
from infra.simulators import Simulators
from jetbridge.airlines import Airline
from jetbridge.endpoints import PrivateEndpoints
from jetbridge.errors import AirlineQuarantined, AirlineUnavailable
from jetbridge.http import build_http_client
from tests.integration.simulators_fixture import control_client, running_simulators
from tests.support import factories as f


class Dns:
    """A resolver with the answers a test gives it, counting the lookups."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


def airline(endpoint: str, *listed: str, code: str = "ZZ") -> Airline:
    return Airline(
        code=code, name="Test Air", kind="ndc", endpoint=endpoint, private_endpoints=PrivateEndpoints.parse(listed)
    )


async def test_an_airline_whose_public_name_resolves_to_a_private_address_is_refused_until_it_no_longer_does() -> None:
    dns = Dns({"ndc.zz-air.example": ["151.101.1.1", "10.0.0.7"]})
    gate = EndpointGate(airline("https://ndc.zz-air.example/ndc"), resolver=dns)
    with capture_logs() as logs:
        reason = await gate.check()
    assert reason is not None
    assert reason.startswith("host ndc.zz-air.example resolves to 10.0.0.7, a private address")
    refusal = gate.refusal()
    assert isinstance(refusal, AirlineQuarantined)
    assert refusal.code == "airline_quarantined"
    assert not refusal.retriable
    assert refusal.message.startswith("ZZ: endpoint refused, not called: host ndc.zz-air.example resolves to 10.0.0.7")
    assert gate.state()["refused"] == reason
    assert gate.state()["addresses"] == ["151.101.1.1", "10.0.0.7"]
    [line] = [e for e in logs if e["log_level"] == "error"]
    assert line["event"] == "airline endpoint refused: not called until the registry allows it"
    assert (line["airline"], line["reason"]) == ("ZZ", reason)

    dns.answers["ndc.zz-air.example"] = ["151.101.1.1"]
    assert await gate.check() is None
    assert gate.refusal() is None


async def test_a_listed_address_lets_the_name_that_resolves_to_it_be_called() -> None:
    dns = Dns({"ndc.zz-air.example": ["10.0.0.7"]})
    gate = EndpointGate(airline("https://ndc.zz-air.example/ndc", "10.0.0.0/8"), resolver=dns)
    assert await gate.check() is None
    assert gate.refusal() is None


async def test_localhost_is_refused_when_only_its_address_is_listed_without_a_lookup() -> None:
    dns = Dns({"localhost": ["127.0.0.1"]})
    gate = EndpointGate(airline("http://localhost:9201", "127.0.0.1"), resolver=dns)
    reason = await gate.check()
    assert reason is not None
    assert reason.startswith("host localhost is a loopback name; an airline endpoint must be public")
    assert 'add "localhost" to private_endpoints_allowed' in reason
    assert dns.lookups == [], "refused by its name"


async def test_a_name_that_does_not_resolve_is_not_refused_each_connection_judges_it_again() -> None:
    gate = EndpointGate(airline("https://ndc.zz-air.example/ndc"), resolver=Dns({}))
    with capture_logs() as logs:
        assert await gate.check() is None
    assert gate.refusal() is None
    assert [e["event"] for e in logs] == ["airline endpoint does not resolve now; each connection judges its addresses"]


async def test_the_gate_looks_again_every_recheck_interval() -> None:
    dns = Dns({"ndc.zz-air.example": ["151.101.1.1"]})
    gate = EndpointGate(airline("https://ndc.zz-air.example/ndc"), resolver=dns, recheck_s=0.01)
    assert await gate.check() is None
    watching = asyncio.create_task(gate.watch())
    try:
        dns.answers["ndc.zz-air.example"] = ["169.254.169.254"]  # rebound to the metadata service
        async with asyncio.timeout(5):
            while gate.refusal() is None:  # noqa: ASYNC110 - the gate's state is a plain attribute
                await asyncio.sleep(0.01)
        assert "cloud metadata" in (gate.reason or "")
    finally:
        watching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watching


# ---- every new connection, against real servers ----


@pytest.fixture(scope="module")
async def sims() -> AsyncIterator[Simulators]:
    async with running_simulators(["BA", "AY"]) as running:
        yield running


def at_made_up_name(sims: Simulators, code: str, name: str, *listed: str) -> Airline:
    """The simulated airline, its endpoint written with a name no DNS knows (the test's resolver does)."""
    url = httpx.URL(sims.endpoint(code))
    return dataclasses.replace(
        sims.airline(code),
        endpoint=str(url.copy_with(host=name)),
        private_endpoints=PrivateEndpoints.parse(listed),
    )


async def ba_calls(sims: Simulators) -> int:
    async with control_client(sims) as control:
        calls: int = (await control.get("/airlines/BA")).json()["BA"]["calls"]
        return calls


async def test_a_connection_goes_to_the_judged_address_of_a_listed_name(sims: Simulators) -> None:
    ba = at_made_up_name(sims, "BA", "ndc.ba-sim.example", "ndc.ba-sim.example")
    dns = Dns({"ndc.ba-sim.example": ["127.0.0.1"]})
    before = await ba_calls(sims)
    async with build_http_client(timeout_s=5.0, transport=guarded_transport(ba, resolver=dns)) as http:
        connector = build_connector(ba, http)
        try:
            offers = await connector.search(f.criteria(), request_id="egress-ok", timeout_s=3.0)
        finally:
            await connector.aclose()
    assert offers, "the simulator answered, reached at the address the resolver gave"
    assert dns.lookups == ["ndc.ba-sim.example"]
    assert await ba_calls(sims) == before + 1


async def test_a_connection_to_a_name_resolving_to_an_address_not_listed_is_never_made(sims: Simulators) -> None:
    ba = at_made_up_name(sims, "BA", "ndc.ba-sim.example", "10.0.0.0/8")
    dns = Dns({"ndc.ba-sim.example": ["127.0.0.1"]})
    before = await ba_calls(sims)
    async with build_http_client(timeout_s=5.0, transport=guarded_transport(ba, resolver=dns)) as http:
        connector = build_connector(ba, http)
        try:
            with capture_logs() as logs, pytest.raises(AirlineUnavailable, match="ConnectError"):
                await connector.search(f.criteria(), request_id="egress-refused", timeout_s=3.0)
        finally:
            await connector.aclose()
    assert await ba_calls(sims) == before, "the airline saw no call"
    [line] = [e for e in logs if e["log_level"] == "error"]
    assert line["event"].startswith("connection to airline refused")
    assert "host ndc.ba-sim.example resolves to 127.0.0.1, a loopback address" in line["reason"]


async def test_the_mcp_kind_s_own_pool_judges_its_connections_too(sims: Simulators) -> None:
    dns = Dns({"mcp.ay-sim.example": ["127.0.0.1"]})
    listed = at_made_up_name(sims, "AY", "mcp.ay-sim.example", "127.0.0.1")
    health = httpx.URL(listed.endpoint).copy_with(path="/health")
    async with httpx2.AsyncClient(transport=guarded_mcp_transport(listed, resolver=dns), timeout=5.0) as http:
        assert (await http.get(str(health))).status_code == 200
    unlisted = at_made_up_name(sims, "AY", "mcp.ay-sim.example")
    async with httpx2.AsyncClient(transport=guarded_mcp_transport(unlisted, resolver=dns), timeout=5.0) as http:
        with pytest.raises(httpx2.ConnectError, match=re.escape("resolves to 127.0.0.1, a loopback address")):
            await http.get(str(health))
