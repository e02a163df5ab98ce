"""What a connector kind is, and the name→factory registry the worker picks kinds from.

A connector does I/O with one airline system and returns normalised offers; it knows nothing of Kafka.
Adding a kind is a module in `connectors/kinds/` that calls `register_kind`; adding an airline is an
entry in `connectors/airlines.toml` (plus a mapping module in `connectors/airlines/` for proprietary REST).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import httpx

from jetbridge.airlines import Airline
from jetbridge.errors import ConfigurationError
from schemas.models import Offer, SearchCriteria

__all__ = ["AirlineConnector", "ConnectorFactory", "build_connector", "register_kind"]


class AirlineConnector(Protocol):
    """Search one airline. Raises a subclass of `jetbridge.errors.AirlineError` on any failure."""

    kind: str

    async def search(self, criteria: SearchCriteria, *, request_id: str, timeout_s: float) -> list[Offer]: ...

    async def aclose(self) -> None: ...


ConnectorFactory = Callable[[Airline, httpx.AsyncClient], AirlineConnector]

_KINDS: dict[str, ConnectorFactory] = {}


def register_kind(kind: str, factory: ConnectorFactory) -> None:
    _KINDS[kind] = factory


def build_connector(airline: Airline, http: httpx.AsyncClient) -> AirlineConnector:
    """The connector for ``airline``'s kind, sharing the given HTTP client."""
    # Importing the package registers every built-in kind.
    import connectors.kinds  # noqa: F401

    factory = _KINDS.get(airline.kind)
    if factory is None:
        raise ConfigurationError(f"airline {airline.code}: no connector kind {airline.kind!r}")
    return factory(airline, http)
