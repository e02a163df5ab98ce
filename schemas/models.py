"""Pydantic models that mirror the `.avsc` contracts in `schemas/avro/` field for field.

The `.avsc` files are the source of truth; `tests/unit/test_schemas.py` proves each model round-trips
through its schema. Timestamps are aware UTC datetimes (Avro timestamp-millis), dates are Avro dates,
money is an Avro decimal.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = [
    "AggregatorControl",
    "AirlineCall",
    "AirlineHealth",
    "AirlineOutcome",
    "AirlineResponse",
    "AirlineStatus",
    "AuditRecord",
    "Cabin",
    "ChangeSource",
    "CircuitState",
    "ControlKind",
    "DeadLetter",
    "DlqReplay",
    "ErrorInfo",
    "Event",
    "Offer",
    "OfferSource",
    "OrderCall",
    "OrderEvent",
    "OrderOperation",
    "OrderReply",
    "OrderReplyStatus",
    "OrderState",
    "OrderStatus",
    "PricedOffer",
    "ReplyStatus",
    "ResponseStatus",
    "SearchCriteria",
    "SearchReply",
    "SearchRequest",
    "Segment",
    "Slice",
    "now_utc",
]


def now_utc() -> datetime:
    """Now, truncated to the millisecond (what Avro timestamp-millis keeps)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Event(_Model):
    """A model that is the value of a topic; ``SCHEMA`` names its `.avsc` file."""

    SCHEMA: ClassVar[str]


class Cabin(StrEnum):
    ECONOMY = "ECONOMY"
    PREMIUM_ECONOMY = "PREMIUM_ECONOMY"
    BUSINESS = "BUSINESS"
    FIRST = "FIRST"


class SearchCriteria(_Model):
    origin: str
    destination: str
    departure_date: date
    return_date: date | None = None
    adults: int
    children: int = 0
    infants: int = 0
    cabin: Cabin
    currency: str = "USD"

    @property
    def passengers(self) -> int:
        return self.adults + self.children + self.infants


class SearchRequest(Event):
    SCHEMA: ClassVar[str] = "search_request.avsc"

    request_id: str
    correlation_id: str
    client_id: str
    reply_to: str
    criteria: SearchCriteria
    airlines: list[str] | None = None
    max_offers: int
    fresh: bool = False
    deadline: AwareDatetime
    created_at: AwareDatetime


class AirlineCall(Event):
    SCHEMA: ClassVar[str] = "airline_call.avsc"

    request_id: str
    correlation_id: str
    client_id: str
    airline: str
    criteria: SearchCriteria
    deadline: AwareDatetime
    attempt: int = 1
    created_at: AwareDatetime
    fresh: bool = False


class Segment(_Model):
    carrier: str
    flight_number: str
    origin: str
    destination: str
    departure_local: str
    arrival_local: str
    aircraft: str | None = None


class Slice(_Model):
    origin: str
    destination: str
    duration_minutes: int
    segments: list[Segment]


class Offer(_Model):
    offer_id: str
    airline: str
    total_amount: Decimal = Field(max_digits=12, decimal_places=2)
    currency: str
    cabin: Cabin
    fare_brand: str | None = None
    expires_at: AwareDatetime
    slices: list[Slice]

    def itinerary_key(self) -> tuple[str, ...]:
        """What makes two offers the same trip: flights flown, cabin and price (codeshares, duplicates)."""
        flights = tuple(f"{s.carrier}{s.flight_number}@{s.departure_local}" for sl in self.slices for s in sl.segments)
        return (*flights, self.cabin.value, f"{self.total_amount:.2f}", self.currency)


class ResponseStatus(StrEnum):
    OK = "OK"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"


class ErrorInfo(_Model):
    code: str
    message: str
    retriable: bool


class OfferSource(StrEnum):
    LIVE = "LIVE"
    CACHE = "CACHE"
    STALE = "STALE"


class AirlineResponse(Event):
    SCHEMA: ClassVar[str] = "airline_response.avsc"

    request_id: str
    correlation_id: str
    airline: str
    status: ResponseStatus
    offers: list[Offer] = Field(default_factory=list)
    error: ErrorInfo | None = None
    connector_kind: str
    latency_ms: int
    attempts: int = 1
    produced_at: AwareDatetime
    source: OfferSource = OfferSource.LIVE
    cached_at: AwareDatetime | None = None


class ReplyStatus(StrEnum):
    COMPLETE = "COMPLETE"
    PARTIAL = "PARTIAL"
    NO_AIRLINES = "NO_AIRLINES"
    UNANSWERED = "UNANSWERED"


class AirlineOutcome(StrEnum):
    OK = "OK"
    TIMEOUT = "TIMEOUT"
    ERROR = "ERROR"
    NOT_SERVED = "NOT_SERVED"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"


class AirlineStatus(_Model):
    airline: str
    status: AirlineOutcome
    error_code: str | None = None
    offer_count: int = 0
    latency_ms: int | None = None
    source: str | None = None
    age_ms: int | None = None


class SearchReply(Event):
    SCHEMA: ClassVar[str] = "search_reply.avsc"

    request_id: str
    correlation_id: str
    reply_to: str
    status: ReplyStatus
    offers: list[Offer]
    airlines: list[AirlineStatus]
    deadline: AwareDatetime
    completed_at: AwareDatetime


class ControlKind(StrEnum):
    PLAN = "PLAN"
    DEADLINE = "DEADLINE"


class AggregatorControl(Event):
    SCHEMA: ClassVar[str] = "aggregator_control.avsc"

    request_id: str
    correlation_id: str
    kind: ControlKind
    reply_to: str = ""
    expected_airlines: list[str] = Field(default_factory=list)
    not_served: list[str] = Field(default_factory=list)
    max_offers: int = 0
    deadline: AwareDatetime
    created_at: AwareDatetime
    skipped: dict[str, str] = Field(default_factory=dict)


class DeadLetter(Event):
    SCHEMA: ClassVar[str] = "dead_letter.avsc"

    original_topic: str
    original_partition: int
    original_offset: int
    original_key: bytes | None = None
    original_headers: dict[str, str] = Field(default_factory=dict)
    payload: bytes | None
    stage: str
    error_code: str
    error_message: str
    retriable: bool
    attempts: int
    request_id: str | None = None
    correlation_id: str | None = None
    first_failed_at: AwareDatetime
    failed_at: AwareDatetime
    error_class: str | None = None


class DlqReplay(Event):
    SCHEMA: ClassVar[str] = "dlq_replay.avsc"

    dlq_id: str
    dlq_topic: str
    replay_id: str
    replayed_at: AwareDatetime
    operator: str
    target_topic: str
    target_partition: int
    target_offset: int
    error_code: str
    forced: bool = False


class CircuitState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class AirlineHealth(Event):
    SCHEMA: ClassVar[str] = "airline_health.avsc"

    airline: str
    state: CircuitState
    since: AwareDatetime
    until: AwareDatetime | None = None
    reason: str = ""
    failure_rate: float = 0.0
    slow_rate: float = 0.0
    calls: int = 0
    throttled_until: AwareDatetime | None = None
    reporter: str
    reported_at: AwareDatetime
    quarantine: str | None = None
    quarantine_changed_at: AwareDatetime | None = None


class AuditRecord(Event):
    SCHEMA: ClassVar[str] = "audit_record.avsc"

    client_id: str
    request_id: str
    correlation_id: str
    tool: str
    outcome: str
    error_code: str | None = None
    duration_ms: int
    at: AwareDatetime
    arguments_sha256: str | None = None


# ---- Orders (issue 11): one airline's order operations, and the orders as they stand ----


class OrderOperation(StrEnum):
    PRICE = "PRICE"
    CREATE = "CREATE"
    RETRIEVE = "RETRIEVE"
    CANCEL = "CANCEL"


class OrderCall(Event):
    SCHEMA: ClassVar[str] = "order_call.avsc"

    request_id: str
    correlation_id: str
    client_id: str
    reply_to: str
    airline: str
    operation: OrderOperation
    offer_id: str | None = None
    order_id: str | None = None
    idempotency_key: str | None = None
    accepted_total: Decimal | None = None
    currency: str | None = None
    passenger_count: int = 0
    passengers_sealed: bytes | None = Field(default=None, repr=False)
    deadline: AwareDatetime
    created_at: AwareDatetime
    attempt: int = 1

    def subject(self) -> str:
        """The call's key: what calls must be handled in order by one worker (see the schema's doc)."""
        if self.operation is OrderOperation.CREATE and self.idempotency_key:
            return self.idempotency_key
        return self.order_id or self.offer_id or self.request_id


class OrderReplyStatus(StrEnum):
    OK = "OK"
    ERROR = "ERROR"
    UNKNOWN = "UNKNOWN"


class PricedOffer(_Model):
    offer_id: str
    total_amount: Decimal
    currency: str
    previous_amount: Decimal | None = None
    expires_at: AwareDatetime
    passenger_count: int
    documents_required: bool = False
    flights: list[str] = Field(default_factory=list)


class OrderStatus(StrEnum):
    CONFIRMED = "CONFIRMED"
    CHANGED = "CHANGED"
    CANCELLED = "CANCELLED"


class OrderState(_Model):
    order_id: str
    airline: str
    status: OrderStatus
    offer_id: str | None = None
    total_amount: Decimal
    currency: str
    passenger_count: int
    flights: list[str] = Field(default_factory=list)
    client_reference: str | None = None
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime


class OrderReply(Event):
    SCHEMA: ClassVar[str] = "order_reply.avsc"

    request_id: str
    correlation_id: str
    reply_to: str
    airline: str
    operation: OrderOperation
    status: OrderReplyStatus
    error: ErrorInfo | None = None
    price: PricedOffer | None = None
    order: OrderState | None = None
    reconciled: bool = False
    connector_kind: str
    latency_ms: int
    attempts: int = 1
    produced_at: AwareDatetime


class ChangeSource(StrEnum):
    AGENT = "AGENT"
    AIRLINE = "AIRLINE"


class OrderEvent(Event):
    SCHEMA: ClassVar[str] = "order_event.avsc"

    order_id: str
    client_id: str
    order: OrderState
    change: str
    changed_by: ChangeSource
    reason: str | None = None
    request_id: str | None = None
    at: AwareDatetime


# ---- MCP tasks (issue 11): the state of each task, shared by every bridge instance through jb.tasks.v1 ----

__all__ += ["TaskState", "TaskStatus"]


class TaskStatus(StrEnum):
    WORKING = "WORKING"
    INPUT_REQUIRED = "INPUT_REQUIRED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class TaskState(Event):
    SCHEMA: ClassVar[str] = "task_state.avsc"

    task_id: str
    client_id: str
    tool: str
    status: TaskStatus
    status_message: str | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    ttl_ms: int | None = None
    poll_interval_ms: int
    result: str | None = None
    error: str | None = None
    input_requests: str | None = None
    final: bool = True
    changing_until: AwareDatetime | None = None
    request_id: str | None = None
    instance: str
