"""The proprietary-REST connector kind: the HTTP part is generic, the dialect lives in a mapping module.

Each REST airline names a module in `connectors/airlines/` (registry field ``mapping``) that satisfies
`RestMapping`: how to send the key, how to turn `SearchCriteria` into a request, and how to turn the
decoded JSON answer into offers. This module does the rest: budget, body cap, JSON decoding, errors.

Orders (`connectors.orders.OrderConnector`, `OrderChangeParser`): a module that also defines every function of
`RestOrderMapping` takes orders; one that defines none of them only shops, and its order calls are refused with
``AirlineRejected`` (a permanent answer the agent gets, never retried; the worker goes on); one that defines only
some is a ``ConfigurationError`` at start-up (a typo, not a choice). The generic part maps the answers:

    200/201                                  → the mapping's parser
    404, 409, 410, 422 with the dialect's error body → the mapping's ``order_error`` (OfferUnavailable,
                                               OfferExpired, SeatsUnavailable, PriceChanged, OrderRefused,
                                               OrderNotFound)
    the same statuses, body not understood   → 404: OfferUnavailable (price, create) or OrderNotFound
                                               (retrieve, cancel); 410: OfferExpired; 409/422: OrderRefused
    anything else                            → as for shopping (`connectors.kinds.http_call`): 5xx and 429
                                               unavailable or throttled, other 4xx rejected, timeout AirlineTimeout

``find_order`` keeps every 4xx a rejection: a 404 there is a wrong path, not "no order" (an answer that would
make the worker create a second order).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol, TypeVar, cast

import httpx

from connectors.airlines import load_mapping
from connectors.base import AirlineConnector, register_kind
from connectors.kinds import normalise as N
from connectors.kinds.boundary import MAPPING_ERRORS, api_key, guarded_call, guarded_search
from connectors.kinds.http_call import AirlineReply, exchange
from connectors.kinds.normalise import decode_json
from connectors.orders import OrderChange, verify_signature
from jetbridge.airlines import Airline, ConnectorKind
from jetbridge.errors import (
    AirlineBadResponse,
    AirlineError,
    AirlineRejected,
    ConfigurationError,
    JetbridgeError,
    OfferExpired,
    OfferUnavailable,
    OrderError,
    OrderNotFound,
    OrderRefused,
)
from jetbridge.passengers import OrderParty
from schemas.models import Offer, OrderState, PricedOffer, SearchCriteria

__all__ = [
    "ORDER_ERROR_STATUSES",
    "ORDER_FUNCTIONS",
    "RestConnector",
    "RestMapping",
    "RestOrderMapping",
    "RestRequest",
    "flight_line",
    "latest_order",
]

T = TypeVar("T")
E = TypeVar("E", bound=JetbridgeError)

# What reading an unreadable error body raises (it then falls back on its status).
_UNREADABLE: tuple[type[Exception], ...] = (AirlineBadResponse, *MAPPING_ERRORS)
# The statuses whose bodies say which offer or order problem it is (the rest keep exchange's mapping).
ORDER_ERROR_STATUSES = frozenset({404, 409, 410, 422})
ORDER_FUNCTIONS = (
    "price_request",
    "parse_priced",
    "create_request",
    "find_request",
    "parse_found",
    "retrieve_request",
    "cancel_request",
    "parse_order",
    "order_error",
    "parse_change",
)
_SEARCH_FUNCTIONS = ("auth_headers", "build_request", "parse")


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One call in the airline's dialect; ``path`` is relative to the airline's endpoint.

    The body and headers of an order carry passengers' personal data: they stay out of ``repr``."""

    method: Literal["GET", "POST", "DELETE"]
    path: str
    params: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)


class RestMapping(Protocol):
    """What an airline's mapping module provides for shopping (as module-level functions)."""

    def auth_headers(self, key: str) -> dict[str, str]: ...

    def build_request(self, criteria: SearchCriteria) -> RestRequest | None:
        """The request for the criteria, or None when the airline sells nothing that could match."""
        ...

    def parse(self, body: Any, *, airline: str, criteria: SearchCriteria) -> list[Offer]: ...


class RestOrderMapping(Protocol):
    """What an airline's mapping module provides for orders (module-level functions, all or none)."""

    def price_request(self, offer_id: str) -> RestRequest: ...

    def parse_priced(self, body: Any, *, airline: str) -> PricedOffer: ...

    def create_request(
        self, offer_id: str, party: OrderParty, *, accepted_total: Decimal, currency: str, client_reference: str
    ) -> RestRequest: ...

    def find_request(self, client_reference: str) -> RestRequest: ...

    def parse_found(self, body: Any, *, airline: str) -> OrderState | None:
        """The latest order in a find answer, or None when it lists none."""
        ...

    def retrieve_request(self, order_id: str) -> RestRequest: ...

    def cancel_request(self, order_id: str) -> RestRequest: ...

    def parse_order(self, body: Any, *, airline: str) -> OrderState:
        """An order answer (create, retrieve, cancel)."""
        ...

    def order_error(self, status: int, body: Any, *, airline: str) -> AirlineError | OrderError | None:
        """The error a dialect's error body names; None when it names none this mapping knows."""
        ...

    def parse_change(self, body: Any, *, airline: str) -> OrderChange:
        """A change notification the airline pushed (its signature already checked)."""
        ...


def flight_line(*, carrier_code: object, number: object, origin: object, destination: object, departs: object) -> str:
    """One flight of an order as `OrderState.flights` holds it: ``DL401 JFK-LAX 2026-12-01T08:30`` (local time)."""
    return (
        f"{N.carrier(carrier_code, 'flight.carrier')}{N.flight_number(number, 'flight.number')} "
        f"{N.airport(origin, 'flight.origin')}-{N.airport(destination, 'flight.destination')} "
        f"{N.local_time(departs, 'flight.departure')}"
    )


def latest_order(orders: list[OrderState]) -> OrderState | None:
    """The most recently created of the orders a find answered (listed oldest first), or None when none.

    Ties (times in whole seconds) go to the one listed last: the airline lists them in the order it made them."""
    latest: OrderState | None = None
    for order in orders:
        if latest is None or _made(order) >= _made(latest):
            latest = order
    return latest


def _made(order: OrderState) -> datetime:
    return order.created_at or order.updated_at


def _order_side(mapping: object, name: str) -> RestOrderMapping | None:
    present = [f for f in ORDER_FUNCTIONS if callable(getattr(mapping, f, None))]
    if not present:
        return None
    missing = [f for f in ORDER_FUNCTIONS if f not in present]
    if missing:
        raise ConfigurationError(f"mapping module {name} has order functions but lacks {', '.join(missing)}")
    return cast(RestOrderMapping, mapping)


class RestConnector:
    """Shops and orders with one proprietary-REST airline through its mapping module over the shared HTTP client."""

    kind = "rest"

    def __init__(self, airline: Airline, http: httpx.AsyncClient, mapping: RestMapping | None = None) -> None:
        if mapping is None:
            if airline.mapping is None:
                raise ConfigurationError(f"airline {airline.code}: a rest airline needs a mapping module")
            mapping = cast(RestMapping, load_mapping(airline.mapping, required=_SEARCH_FUNCTIONS))
        self._airline = airline
        self._http = http
        self._mapping = mapping
        self._orders = _order_side(mapping, airline.mapping or str(getattr(mapping, "__name__", "given")))
        self._base = airline.endpoint.rstrip("/")

    async def _exchange(
        self, request: RestRequest, timeout_s: float, keep_statuses: frozenset[int] = frozenset()
    ) -> AirlineReply:
        return await exchange(
            self._http,
            self._airline.code,
            request.method,
            self._base + request.path,
            timeout_s=timeout_s,
            headers={
                "Accept": "application/json",
                **request.headers,
                **self._mapping.auth_headers(api_key(self._airline).get_secret_value()),
            },
            params=request.params or None,
            json=request.json,
            keep_statuses=keep_statuses,
        )

    async def search(self, criteria: SearchCriteria, *, request_id: str, timeout_s: float) -> list[Offer]:
        async def call() -> list[Offer]:
            request = self._mapping.build_request(criteria)
            if request is None:
                return []
            reply = await self._exchange(request, timeout_s)
            body = decode_json(self._airline.code, reply.body)
            return self._mapping.parse(body, airline=self._airline.code, criteria=criteria)

        return await guarded_search(self._airline, self.kind, request_id=request_id, timeout_s=timeout_s, search=call)

    # ---- orders (connectors.orders.OrderConnector) ----

    def _order_mapping(self) -> RestOrderMapping:
        if self._orders is None:
            raise AirlineRejected(f"{self._airline.code}: this airline's mapping takes no orders through Jetbridge")
        return self._orders

    async def price(self, offer_id: str, *, request_id: str, timeout_s: float) -> PricedOffer:
        orders = self._order_mapping()
        return await self._order_call(
            "price",
            orders.price_request(offer_id),
            lambda body: orders.parse_priced(body, airline=self._airline.code),
            request_id=request_id,
            timeout_s=timeout_s,
        )

    async def create_order(
        self,
        offer_id: str,
        party: OrderParty,
        *,
        accepted_total: Decimal,
        currency: str,
        client_reference: str,
        request_id: str,
        timeout_s: float,
    ) -> OrderState:
        orders = self._order_mapping()
        request = orders.create_request(
            offer_id, party, accepted_total=accepted_total, currency=currency, client_reference=client_reference
        )
        return await self._order_call(
            "create_order",
            request,
            lambda body: orders.parse_order(body, airline=self._airline.code),
            request_id=request_id,
            timeout_s=timeout_s,
            private=_personal_terms(party),
        )

    async def find_order(self, client_reference: str, *, request_id: str, timeout_s: float) -> OrderState | None:
        orders = self._order_mapping()
        return await self._order_call(
            "find_order",
            orders.find_request(client_reference),
            lambda body: orders.parse_found(body, airline=self._airline.code),
            request_id=request_id,
            timeout_s=timeout_s,
            keep_statuses=frozenset(),
        )

    async def retrieve_order(self, order_id: str, *, request_id: str, timeout_s: float) -> OrderState:
        orders = self._order_mapping()
        return await self._order_call(
            "retrieve_order",
            orders.retrieve_request(order_id),
            lambda body: orders.parse_order(body, airline=self._airline.code),
            request_id=request_id,
            timeout_s=timeout_s,
        )

    async def cancel_order(self, order_id: str, *, request_id: str, timeout_s: float) -> OrderState:
        orders = self._order_mapping()
        return await self._order_call(
            "cancel_order",
            orders.cancel_request(order_id),
            lambda body: orders.parse_order(body, airline=self._airline.code),
            request_id=request_id,
            timeout_s=timeout_s,
        )

    async def _order_call(
        self,
        operation: str,
        request: RestRequest,
        parse: Callable[[Any], T],
        *,
        request_id: str,
        timeout_s: float,
        keep_statuses: frozenset[int] = ORDER_ERROR_STATUSES,
        private: re.Pattern[str] | None = None,
    ) -> T:
        async def call() -> T | OrderError:
            reply = await self._exchange(request, timeout_s, keep_statuses)
            if reply.status in keep_statuses:
                error = _redacted(self._order_error(operation, reply), private)
                # An OrderError (no such order) is an answer, not an airline failure: it leaves the boundary as
                # a value and is raised past it, so the boundary neither logs it as a fault nor rewraps it.
                if isinstance(error, OrderError):
                    return error
                raise error
            return parse(decode_json(self._airline.code, reply.body))

        outcome = await guarded_call(
            self._airline, self.kind, operation, request_id=request_id, timeout_s=timeout_s, call=call
        )
        if isinstance(outcome, OrderError):
            raise outcome
        return outcome

    def _order_error(self, operation: str, reply: AirlineReply) -> AirlineError | OrderError:
        code = self._airline.code
        error: AirlineError | OrderError | None = None
        try:
            body = decode_json(code, reply.body)
            error = self._order_mapping().order_error(reply.status, body, airline=code)
        except _UNREADABLE:
            error = None  # an error body we cannot read: its status still says enough
        if error is not None:
            return error
        if reply.status == 404:
            if operation in ("retrieve_order", "cancel_order"):
                return OrderNotFound(f"{code}: the airline has no such order")
            return OfferUnavailable(f"{code}: the airline does not know the offer (HTTP 404)")
        if reply.status == 410:
            return OfferExpired(f"{code}: the offer has expired (HTTP 410)")
        return OrderRefused(f"{code}: {operation} refused (HTTP {reply.status})")

    # ---- airline-initiated changes (connectors.orders.OrderChangeParser) ----

    def parse_order_change(self, body: bytes, headers: Mapping[str, str]) -> OrderChange:
        """Check the airline's signature, then read its change notification (AirlineBadResponse when unreadable)."""
        code = self._airline.code
        orders = self._order_mapping()
        verify_signature(code, body, headers, api_key(self._airline).get_secret_value())
        decoded = decode_json(code, body)
        try:
            return orders.parse_change(decoded, airline=code)
        except MAPPING_ERRORS as exc:
            raise AirlineBadResponse(f"{code}: order change notification breaks the contract ({_what(exc)})") from exc

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to whoever built it."""


def _what(exc: Exception) -> str:
    # Never the text of a pydantic error: it quotes the input. Our UntrustedValue names only the field.
    count = getattr(exc, "error_count", None)
    if callable(count):
        return f"{count()} invalid field(s)"
    if isinstance(exc, N.UntrustedValue):
        return str(exc)[:160]
    return type(exc).__name__


def _personal_terms(party: OrderParty) -> re.Pattern[str] | None:
    """What of the party an airline could echo in a refusal (names, birth dates, documents, contact), as one pattern."""
    terms = {party.contact.email, party.contact.phone}
    for passenger in party.passengers:
        terms |= {passenger.given_name, passenger.family_name, passenger.date_of_birth.isoformat()}
        if passenger.document is not None:
            terms.add(passenger.document.number)
    # A one-letter name identifies nobody, and would blank every such letter of the message.
    kept = sorted((t for t in terms if len(t) > 1), key=len, reverse=True)
    return re.compile("|".join(rf"(?<!\w){re.escape(t)}(?!\w)" for t in kept), re.IGNORECASE) if kept else None


def _redacted(error: E, private: re.Pattern[str] | None) -> E:
    """The error with any of the party's personal data the airline echoed in its reason blanked out."""
    if private is None:
        return error
    text = private.sub("<personal data>", error.message)
    if text != error.message:
        error.message = text
        error.args = (text,)
    return error


def _factory(airline: Airline, http: httpx.AsyncClient) -> AirlineConnector:
    return RestConnector(airline, http)


register_kind(ConnectorKind.REST, _factory)
