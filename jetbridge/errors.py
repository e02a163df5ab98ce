"""The one error tree of Jetbridge.

Every error carries a stable ``code`` (it travels in DLQ headers, airline statuses and MCP tool errors,
so never rename one) and a ``retriable`` flag that retry logic reads instead of guessing from messages.

    JetbridgeError
    ├── InvalidInput                      bad tool arguments (names the field); never retried
    ├── InsufficientScope                 the caller's token lacks the tool's scope (HTTP 403 at the bridge)
    ├── ConfigurationError                settings or airline registry that cannot work
    ├── SchemaError                       contract problems
    │   ├── SchemaRegistryError           registry unreachable or refusing (retriable)
    │   └── DecodeError                   bytes that are not a valid event (poison; never retried)
    ├── KafkaError                        produce/consume failures (retriable)
    ├── BackboneUnavailable               the broker or a stage cannot serve now (retriable, retry_after_s)
    ├── OverLimit                         the bridge will not take this client's call now (retriable,
    │   │                                 retry_after_s); nothing was published
    │   ├── ClientRateLimited             over the client's rate, or the bridge's in-flight cap (rate_limited)
    │   ├── QuotaExceeded                 the client's daily quota or look-to-book budget is used up
    │   └── SpendCapExceeded              an order would take the client past its daily spend cap
    ├── OrderError                        an order operation that cannot go on (never retried as it is)
    │   ├── ConfirmationDeclined          the person declined (or did not answer) the confirmation: nothing called
    │   ├── OfferNotPriced                create_order before price_offer: nothing to confirm a total against
    │   ├── OrderNotFound                 no such order, or not one this client made (the same answer for both)
    │   └── OrderOutcomeUnknown           the airline's outcome could not be established in time (retriable:
    │                                     the same create_order again never books twice)
    ├── DeadlineExceeded                  the request's deadline passed before work could finish
    │   └── RequestExpired                too old to answer safely (past the aggregator's reply window)
    └── AirlineError                      anything that went wrong talking to one airline
        ├── AirlineTimeout                no answer inside the time budget (retriable)
        ├── AirlineUnavailable            connection refused/reset, 5xx, 429 (retriable)
        │   └── AirlineThrottled          429, or 503 with Retry-After: slow down (retriable, retry_after_s)
        ├── AirlineRejected               4xx or an NDC <Errors> answer: the airline said no
        ├── AirlineBadResponse            a body we cannot parse or that breaks the contract
        ├── CircuitOpen                   the airline's circuit breaker is open: not called (fail fast)
        │   └── AirlineQuarantined        not called at all: its MCP tools differ from the approved pin, or its
        │                                 host resolves to an address the registry does not allow
        ├── RateLimited                   our rate limit for the airline had no room before the deadline
        ├── OfferUnavailable              the offer cannot be priced or booked: unknown, expired, or sold out
        │   ├── OfferExpired              past its expiry at the airline (search again)
        │   └── SeatsUnavailable          the seats ran out (search again)
        ├── PriceChanged                  the airline's price is not the one confirmed (price again, confirm again)
        └── OrderRefused                  the airline refused to create, change or cancel the order
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AirlineBadResponse",
    "AirlineError",
    "AirlineQuarantined",
    "AirlineRejected",
    "AirlineThrottled",
    "AirlineTimeout",
    "AirlineUnavailable",
    "BackboneUnavailable",
    "CircuitOpen",
    "ClientRateLimited",
    "ConfigurationError",
    "ConfirmationDeclined",
    "DeadlineExceeded",
    "DecodeError",
    "InsufficientScope",
    "InvalidInput",
    "JetbridgeError",
    "KafkaError",
    "OfferExpired",
    "OfferNotPriced",
    "OfferUnavailable",
    "OrderError",
    "OrderNotFound",
    "OrderOutcomeUnknown",
    "OrderRefused",
    "OverLimit",
    "PriceChanged",
    "QuotaExceeded",
    "RateLimited",
    "RequestExpired",
    "SchemaError",
    "SchemaRegistryError",
    "SeatsUnavailable",
    "SpendCapExceeded",
]


class JetbridgeError(Exception):
    """Base of every error Jetbridge raises on purpose."""

    code: ClassVar[str] = "internal"
    retriable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class InvalidInput(JetbridgeError):
    """A tool argument failed validation; ``field`` names it for the caller."""

    code = "invalid_input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class InsufficientScope(JetbridgeError):
    """A tool call whose token lacks the tool's scope: refused before the tool runs (403 at the bridge)."""

    code = "insufficient_scope"


class ConfigurationError(JetbridgeError):
    code = "configuration"


class SchemaError(JetbridgeError):
    code = "schema"


class SchemaRegistryError(SchemaError):
    code = "schema_registry"
    retriable = True


class DecodeError(SchemaError):
    code = "decode"


class KafkaError(JetbridgeError):
    code = "kafka"
    retriable = True


class BackboneUnavailable(JetbridgeError):
    """Jetbridge itself (the broker, or a stage behind the bridge) could not answer in time.

    What an agent gets instead of a hang: retriable, with a hint of when to try again.
    """

    code = "backbone_unavailable"
    retriable = True

    def __init__(self, message: str, *, retry_after_s: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OverLimit(JetbridgeError):
    """A tool call refused for the client's allowance or the bridge's load, before anything was published;
    ``retry_after_s`` (whole seconds, at least 1) is when trying again can succeed."""

    retriable = True

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ClientRateLimited(OverLimit):
    """The client's token bucket is empty, or the bridge holds as many searches as it may (load shedding).
    The same code as `RateLimited`: a rate limit had no room, here the agent's own."""

    code = "rate_limited"


class QuotaExceeded(OverLimit):
    """The client's daily quota, or its look-to-book budget (searches without a booking), is used up."""

    code = "quota_exceeded"


class DeadlineExceeded(JetbridgeError):
    code = "deadline_exceeded"


class RequestExpired(DeadlineExceeded):
    """A request met again so long after its deadline that whether it was answered is no longer known;
    it is dead-lettered instead of risking a second reply."""

    code = "request_expired"


class AirlineError(JetbridgeError):
    code = "airline"


class AirlineTimeout(AirlineError):
    code = "airline_timeout"
    retriable = True


class AirlineUnavailable(AirlineError):
    code = "airline_unavailable"
    retriable = True


class AirlineThrottled(AirlineUnavailable):
    """The airline asked us to slow down (429, or 503 with ``Retry-After``); ``retry_after_s`` is its wish,
    when it said one. Also raised when waiting it out would pass the request's deadline."""

    code = "airline_throttled"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AirlineRejected(AirlineError):
    code = "airline_rejected"


class AirlineBadResponse(AirlineError):
    code = "airline_bad_response"


class CircuitOpen(AirlineError):
    """The airline's circuit breaker is open, so it was not called. Not retried: the breaker decides when the
    airline is tried again (half-open probes)."""

    code = "circuit_open"


class RateLimited(AirlineError):
    """Our own rate limit for the airline (its credential's token bucket) had no room before the deadline."""

    code = "rate_limited"


class AirlineQuarantined(CircuitOpen):
    """The airline is not called at all: its MCP server lists tools that differ from the approved pin
    (``connectors/mcp_pins.toml``: until an operator approves them, ``jetbridge airlines approve <IATA>``), or its
    host resolves to a private, loopback or link-local address the registry does not list (until it does, or the
    host resolves to allowed addresses again). Like an open circuit it is told in the reply, not dead-lettered,
    and not retried; unlike one, no probe ends it. ``list_airlines`` shows it as status ``quarantined``."""

    code = "airline_quarantined"


class SpendCapExceeded(OverLimit):
    """An order's total would take the client past its daily spend cap (``mcp_bridge/clients.toml``)."""

    code = "spend_cap_exceeded"


class OrderError(JetbridgeError):
    """An order operation the bridge will not go on with; nothing (more) was sent to the airline."""

    code = "order"


class ConfirmationDeclined(OrderError):
    """The person declined the confirmation, cancelled it, or the client cannot ask: the airline was not called."""

    code = "confirmation_declined"


class OfferNotPriced(OrderError):
    """create_order for an offer this client has not priced (price_offer) lately: there is no total to confirm."""

    code = "offer_not_priced"


class OrderNotFound(OrderError):
    """No order by that id that this client made: the same answer whether it does not exist or is another's."""

    code = "order_not_found"


class OrderOutcomeUnknown(OrderError):
    """Whether the airline made (or cancelled) the order could not be established by the deadline. Retriable:
    the same call again is reconciled with the airline first, so it never makes a second order."""

    code = "order_outcome_unknown"
    retriable = True


class OfferUnavailable(AirlineError):
    """The airline cannot price or book the offer: it does not know it (or no longer)."""

    code = "offer_unavailable"


class OfferExpired(OfferUnavailable):
    code = "offer_expired"


class SeatsUnavailable(OfferUnavailable):
    code = "seats_unavailable"


class PriceChanged(AirlineError):
    """The airline's total is not the one the person confirmed; ``amount`` is the new one (a string, 2 places)."""

    code = "price_changed"

    def __init__(self, message: str, *, amount: str | None = None, currency: str | None = None) -> None:
        super().__init__(message)
        self.amount = amount
        self.currency = currency


class OrderRefused(AirlineError):
    """The airline refused to create, change or cancel the order (its reason in the message)."""

    code = "order_refused"
