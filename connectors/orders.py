"""What a connector kind does for orders: price, create, find, retrieve and cancel, and the airline's own changes.

Like `connectors.base.AirlineConnector` for shopping, a kind's order side does I/O with one airline system and
returns normalised results (`schemas.models.PricedOffer`, `schemas.models.OrderState`); it knows nothing of
Kafka. The order worker (``connectors/order_worker.py``) runs the calls: retries, idempotency and reconciliation
live there, not in the kinds.

Errors, from `jetbridge.errors` (each kind maps its airline's answers onto them):

- ``OfferUnavailable`` (the airline does not know the offer), ``OfferExpired``, ``SeatsUnavailable``;
- ``PriceChanged`` (create: the airline's total is above the ``accepted_total``; carries the new amount);
- ``OrderRefused`` (the airline said no to a create or cancel, its reason in the message);
- ``OrderNotFound`` (retrieve or cancel of an order the airline does not have);
- ``AirlineTimeout`` / ``AirlineUnavailable`` / ``AirlineBadResponse`` as for shopping. A create that times out or
  loses its connection has an UNKNOWN outcome: the worker calls ``find_order`` before anything else.

The passengers (`jetbridge.passengers.OrderParty`) reach ``create_order`` opened from their seal; a kind sends them
to the airline and never logs them, nor puts them in an exception's message.

Airline-initiated changes (a schedule change, a cancellation) reach Jetbridge two ways:

- **webhooks** (NDC ``OrderChangeNotif``, REST JSON): the connectors process serves ``POST /webhooks/<IATA>``
  and hands the body and headers to the kind's ``parse_order_change`` (`OrderChangeParser`), which checks the
  airline's signature (HMAC-SHA256 of the body with the airline's credential, header ``X-Jetbridge-Signature:
  sha256=<hex>``) and returns the change;
- **a watch** (an airline MCP server's resource notifications): the kind's ``watch_orders`` (`OrderWatcher`)
  keeps a session subscribed and calls ``on_change`` for each change until cancelled.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Protocol, runtime_checkable

from pydantic import AwareDatetime, BaseModel, ConfigDict

from jetbridge.errors import AirlineRejected
from jetbridge.passengers import OrderParty
from schemas.models import OrderState, PricedOffer

__all__ = [
    "SIGNATURE_HEADER",
    "OrderChange",
    "OrderChangeParser",
    "OrderConnector",
    "OrderWatcher",
    "order_id_of",
    "sign_body",
    "verify_signature",
]

SIGNATURE_HEADER = "x-jetbridge-signature"


class OrderChange(BaseModel):
    """One change the airline made to an order on its own: the order as it now stands and what happened."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    order: OrderState
    change: str  # airline_cancellation | schedule_change | ... (lower-case words, from the kind's mapping)
    reason: str | None = None  # airline text: cleaned and capped (connectors.kinds.normalise) by the kind
    at: AwareDatetime


class OrderConnector(Protocol):
    """One airline's order operations (every kind's connector implements it next to ``search``)."""

    kind: str

    async def price(self, offer_id: str, *, request_id: str, timeout_s: float) -> PricedOffer: ...

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
    ) -> OrderState: ...

    async def find_order(self, client_reference: str, *, request_id: str, timeout_s: float) -> OrderState | None:
        """The order created with ``client_reference``, or None when the airline has none (reconciliation)."""
        ...

    async def retrieve_order(self, order_id: str, *, request_id: str, timeout_s: float) -> OrderState: ...

    async def cancel_order(self, order_id: str, *, request_id: str, timeout_s: float) -> OrderState: ...


@runtime_checkable
class OrderChangeParser(Protocol):
    """A kind whose airline pushes changes to a webhook."""

    def parse_order_change(self, body: bytes, headers: Mapping[str, str]) -> OrderChange: ...


@runtime_checkable
class OrderWatcher(Protocol):
    """A kind that watches the airline for changes itself (an MCP server's resource subscriptions)."""

    async def watch_orders(self, on_change: Callable[[OrderChange], Awaitable[None]]) -> None: ...


def sign_body(body: bytes, secret: str) -> str:
    """The signature header's value for a webhook body (what an airline, or a simulator, sends)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(airline: str, body: bytes, headers: Mapping[str, str], secret: str) -> None:
    """Refuse a webhook body the airline did not sign with its credential (``AirlineRejected``)."""
    given = {k.lower(): v for k, v in headers.items()}.get(SIGNATURE_HEADER, "")
    if not hmac.compare_digest(given, sign_body(body, secret)):
        raise AirlineRejected(f"{airline}: webhook signature missing or wrong; change not accepted")


def order_id_of(airline: str, airline_order_id: str) -> str:
    """Jetbridge's order id (the key of jb.orders.v1, what agents see): ``<IATA>:<the airline's order id>``."""
    return f"{airline}:{airline_order_id}"
