"""One list of connector kinds (jetbridge.airlines.ConnectorKind), and a factory registered for each."""

from __future__ import annotations

import httpx
import pytest

import connectors.kinds  # noqa: F401  (registers every built-in kind)
from connectors.base import build_connector, register_kind, registered_kinds
from jetbridge.airlines import Airline, ConnectorKind
from jetbridge.errors import ConfigurationError


def test_every_connector_kind_has_a_registered_factory() -> None:
    assert registered_kinds() == frozenset(ConnectorKind)


def test_a_kind_outside_the_list_cannot_be_registered() -> None:
    with pytest.raises(ConfigurationError, match="no connector kind 'soap'"):
        register_kind("soap", lambda airline, http: pytest.fail("never built"))


async def test_an_airline_of_an_unknown_kind_gets_no_connector() -> None:
    airline = Airline(code="ZZ", name="Test Air", kind="soap", endpoint="http://127.0.0.1:9")
    async with httpx.AsyncClient() as http:
        with pytest.raises(ConfigurationError, match="airline ZZ: no connector kind 'soap'"):
            build_connector(airline, http)
