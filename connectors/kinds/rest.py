"""The proprietary-REST connector kind: the HTTP part is generic, the dialect lives in a mapping module.

Each REST airline names a module in `connectors/airlines/` (registry field ``mapping``) that satisfies
`RestMapping`: how to send the key, how to turn `SearchCriteria` into a request, and how to turn the
decoded JSON answer into offers. This module does the rest: budget, body cap, JSON decoding, errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

import httpx

from connectors.airlines import load_mapping
from connectors.base import AirlineConnector, register_kind
from connectors.kinds.boundary import api_key, guarded_search
from connectors.kinds.http_call import exchange
from connectors.kinds.normalise import decode_json
from jetbridge.airlines import Airline, ConnectorKind
from jetbridge.errors import ConfigurationError
from schemas.models import Offer, SearchCriteria

__all__ = ["RestConnector", "RestMapping", "RestRequest"]


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One call in the airline's dialect; ``path`` is relative to the airline's endpoint."""

    method: Literal["GET", "POST"]
    path: str
    params: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None


class RestMapping(Protocol):
    """What an airline's mapping module provides (as module-level functions)."""

    def auth_headers(self, key: str) -> dict[str, str]: ...

    def build_request(self, criteria: SearchCriteria) -> RestRequest | None:
        """The request for the criteria, or None when the airline sells nothing that could match."""
        ...

    def parse(self, body: Any, *, airline: str, criteria: SearchCriteria) -> list[Offer]: ...


class RestConnector:
    """Shops one proprietary-REST airline through its mapping module over the shared HTTP client."""

    kind = "rest"

    def __init__(self, airline: Airline, http: httpx.AsyncClient, mapping: RestMapping | None = None) -> None:
        if mapping is None:
            if airline.mapping is None:
                raise ConfigurationError(f"airline {airline.code}: a rest airline needs a mapping module")
            mapping = cast(
                RestMapping,
                load_mapping(airline.mapping, required=("auth_headers", "build_request", "parse")),
            )
        self._airline = airline
        self._http = http
        self._mapping = mapping
        self._base = airline.endpoint.rstrip("/")

    async def search(self, criteria: SearchCriteria, *, request_id: str, timeout_s: float) -> list[Offer]:
        async def call() -> list[Offer]:
            request = self._mapping.build_request(criteria)
            if request is None:
                return []
            reply = await exchange(
                self._http,
                self._airline.code,
                request.method,
                self._base + request.path,
                timeout_s=timeout_s,
                headers={
                    "Accept": "application/json",
                    **self._mapping.auth_headers(api_key(self._airline).get_secret_value()),
                },
                params=request.params or None,
                json=request.json,
            )
            body = decode_json(self._airline.code, reply.body)
            return self._mapping.parse(body, airline=self._airline.code, criteria=criteria)

        return await guarded_search(self._airline, self.kind, request_id=request_id, timeout_s=timeout_s, search=call)

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to whoever built it."""


def _factory(airline: Airline, http: httpx.AsyncClient) -> AirlineConnector:
    return RestConnector(airline, http)


register_kind(ConnectorKind.REST, _factory)
