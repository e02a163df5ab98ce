"""`jetbridge airlines approve|pins` connect to an airline's MCP server only where its worker would: a host that
resolves to an address the registry does not allow is refused before connecting, and so is every connection
to it (the simulated Finnair, reached under a public-looking name whose answers the test gives)."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest

from connectors.pin_review import review_pin
from connectors.pins import PinBook
from infra.simulators import Simulators
from jetbridge.airlines import Airline
from jetbridge.endpoints import PrivateEndpoints
from jetbridge.errors import AirlineUnavailable, ConfigurationError
from tests.integration.simulators_fixture import running_simulators

NAME = "mcp.ay-airline.example"


@pytest.fixture(scope="module")
async def sims() -> AsyncIterator[Simulators]:
    async with running_simulators(["AY"]) as running:
        yield running


class Dns:
    """Answers in turn: the first lookup gets ``answers[0]``, every later one the next (the last repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups = 0

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        if host != NAME:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        return answer


def ay_at_name(sims: Simulators) -> Airline:
    """The simulated Finnair under a public-looking name, with the simulators' address listed."""
    url = httpx.URL(sims.endpoint("AY")).copy_with(host=NAME)
    return dataclasses.replace(
        sims.airline("AY"), endpoint=str(url), private_endpoints=PrivateEndpoints.parse(["127.0.0.1"])
    )


async def test_a_name_resolving_to_an_address_not_listed_is_not_reviewed(sims: Simulators, tmp_path: Path) -> None:
    book = PinBook(tmp_path / "pins.toml")
    with pytest.raises(ConfigurationError, match=f"AY: endpoint refused, not connected to: host {NAME} resolves to"):
        await review_pin(ay_at_name(sims), book, timeout_s=5.0, resolver=Dns(["10.0.0.7"]))
    assert sims.status("AY")["AY"]["calls"] == 0


async def test_the_review_connects_only_to_addresses_judged_at_connection_time(
    sims: Simulators, tmp_path: Path
) -> None:
    # The name's answer turns private between the check and the connection (DNS rebinding): no connection.
    dns = Dns(["127.0.0.1"], ["10.0.0.7"])
    with pytest.raises(AirlineUnavailable, match="ConnectError"):
        await review_pin(ay_at_name(sims), PinBook(tmp_path / "pins.toml"), timeout_s=5.0, resolver=dns)
    assert dns.lookups >= 2, "checked first, then judged again when connecting"
