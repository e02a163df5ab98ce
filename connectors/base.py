"""What a connector kind is, and the kind→factory registry the worker picks connectors from.

A connector does I/O with one airline system and returns normalised offers; it knows nothing of Kafka.
The kinds are `jetbridge.airlines.ConnectorKind`, one list; each has a module in `connectors/kinds/` that
calls `register_kind` for it. Adding an airline is an entry in `connectors/airlines.toml` (plus a mapping
module in `connectors/airlines/` for proprietary REST); adding a kind is a `ConnectorKind` member and its module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import httpx

from jetbridge.airlines import Airline, ConnectorKind
from jetbridge.errors import ConfigurationError
from schemas.models import Offer, SearchCriteria

__all__ = ["AirlineConnector", "ConnectorFactory", "build_connector", "register_kind", "registered_kinds"]


class AirlineConnector(Protocol):
    """Search one airline. Raises a subclass of `jetbridge.errors.AirlineError` on any failure."""

    kind: str

    async def search(self, criteria: SearchCriteria, *, request_id: str, timeout_s: float) -> list[Offer]: ...

    async def aclose(self) -> None: ...


ConnectorFactory = Callable[[Airline, httpx.AsyncClient], AirlineConnector]

_FACTORIES: dict[ConnectorKind, ConnectorFactory] = {}


def _kind(name: str) -> ConnectorKind:
    try:
        return ConnectorKind(name)
    except ValueError:
        known = ", ".join(ConnectorKind)
        raise ConfigurationError(f"no connector kind {name!r}; the kinds are {known} (ConnectorKind)") from None


def register_kind(kind: ConnectorKind | str, factory: ConnectorFactory) -> None:
    """Make ``factory`` build the connectors of ``kind`` (a `ConnectorKind`, or its name)."""
    _FACTORIES[_kind(kind)] = factory


def registered_kinds() -> frozenset[ConnectorKind]:
    """The kinds with a factory so far (every kind once `connectors.kinds` is imported)."""
    return frozenset(_FACTORIES)


def build_connector(airline: Airline, http: httpx.AsyncClient) -> AirlineConnector:
    """The connector for ``airline``'s kind, sharing the given HTTP client."""
    # Importing the package registers every built-in kind.
    import connectors.kinds  # noqa: F401

    try:
        factory = _FACTORIES[_kind(airline.kind)]
    except (ConfigurationError, KeyError):
        raise ConfigurationError(f"airline {airline.code}: no connector kind {airline.kind!r}") from None
    return factory(airline, http)
