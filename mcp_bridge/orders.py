"""The bridge's order work behind the MCP order tools: price, book with the person's consent, get, cancel.

Each operation is one airline's request-reply through the backbone: an `OrderCall` on the airline's order topic
(``jb.airline.<IATA>.orders.v1``), answered by its connector with one `OrderReply` on ``jb.order-replies.v1``
(this instance's `ReplyCorrelator`). The connectors also publish each order as it stands on ``jb.orders.v1``,
which every bridge instance reads whole (`jetbridge.order_book.OrderBook`): an agent sees only the orders its
client made, an order already made with the same idempotency key is answered instead of booked again, and
subscribed agents hear of changes.

Booking, step by step (README "Orders"):

1. ``price_offer``: the airline's live price; kept as the client's quote for the offer (`OrderMemory`).
2. ``create_order``: the arguments checked (names, dates of birth, documents where the airline needs them) and
   the idempotency key derived from client, offer and passengers (keyed: `PiiSeal.fingerprint`); an order already
   made with that key is returned as it is. Otherwise the client's quote (none: ``offer_not_priced``), the spend
   cap (``spend_cap_exceeded``), and only then the person's confirmation (`prepare_booking` gives the text); a
   declined or absent one calls nothing.
3. The call, with the passengers sealed (`jetbridge.pii`) and the confirmed total: the airline books at most that.
   An unknown outcome (the connector could not establish whether the airline made the order by the deadline)
   is told as such (``order_outcome_unknown``, retriable): the same create_order again is reconciled with the
   airline (looked up by the key) before anything is created, so there are never two orders.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from pydantic import BaseModel, Field, ValidationError
from redis.asyncio import Redis

from jetbridge import tracing
from jetbridge.airlines import AirlineRegistry
from jetbridge.errors import (
    AirlineError,
    BackboneUnavailable,
    InvalidInput,
    JetbridgeError,
    OfferNotPriced,
    OrderNotFound,
    OrderOutcomeUnknown,
    SpendCapExceeded,
)
from jetbridge.kafka import event_headers
from jetbridge.log import get_logger
from jetbridge.order_book import OrderBook
from jetbridge.passengers import OrderParty, passenger_type
from jetbridge.pii import PiiSeal, load_seal
from jetbridge.runtime import Runtime, kafka_config
from jetbridge.topics import TopicNames
from mcp_bridge.correlator import ReplyCorrelator
from mcp_bridge.entitlements import ClientRegistry
from mcp_bridge.order_memory import OrderMemory, Quote
from mcp_bridge.service import arguments_sha256
from mcp_bridge.validation import excerpt
from schemas.models import (
    ChangeSource,
    OrderCall,
    OrderEvent,
    OrderOperation,
    OrderReply,
    OrderReplyStatus,
    OrderState,
    OrderStatus,
    now_utc,
)

__all__ = [
    "ORDER_URI",
    "Booking",
    "Cancellation",
    "OrderResult",
    "OrderService",
    "PriceResult",
    "arguments_digest",
    "open_orders",
    "order_uri",
    "parse_party",
    "redacted",
]

log = get_logger(__name__)

# Past the order deadline the bridge waits this much more for the connector's reply before saying the outcome is
# unknown (the connector answers UNKNOWN itself by the deadline when it could not find out).
ORDER_GRACE_S = 1.0
# How long get_order and cancel_order wait for an order made moments ago through another bridge instance to be
# read from jb.orders.v1.
BOOK_WAIT_S = 1.5
ORDER_URI = "jetbridge://orders/{order_id}"

_OFFER_REF = re.compile(r"^([A-Z0-9]{2}):([A-Za-z0-9._~\-]{1,100})$")
_ORDER_REF = re.compile(r"^([A-Z0-9]{2}):([A-Za-z0-9\-]{1,40})$")


def order_uri(order_id: str) -> str:
    return ORDER_URI.format(order_id=order_id)


def _errors_by_code() -> dict[str, type[JetbridgeError]]:
    found: dict[str, type[JetbridgeError]] = {}
    pending: list[type[JetbridgeError]] = [JetbridgeError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


_ERRORS = _errors_by_code()


class PriceResult(BaseModel):
    offer_id: str
    airline: str
    total_amount: str
    currency: str
    price_changed: bool = Field(description="Whether the airline's price differs from the one it offered before.")
    previous_amount: str | None = Field(default=None, description="The total before the change, when it changed.")
    expires_at: str
    passenger_count: int
    documents_required: bool = Field(
        description="Whether create_order needs a travel document (passport or national id) for every passenger."
    )
    flights: list[str]


class OrderResult(BaseModel):
    order_id: str = Field(description="Jetbridge's order id, <IATA>:<the airline's booking reference>.")
    airline: str
    status: str = Field(description="confirmed, changed (by the airline: see flights) or cancelled.")
    total_amount: str
    currency: str
    passenger_count: int
    flights: list[str]
    created_at: str | None = None
    updated_at: str
    resource_uri: str = Field(description="Subscribe to this resource to hear of changes the airline makes.")
    reconciled: bool = Field(
        default=False,
        description="create_order: the order was already made (an earlier attempt whose outcome was unknown, or "
        "the same order asked twice) and is returned instead of booking again.",
    )
    live: bool = Field(
        default=True,
        description="get_order: false when the airline could not be asked and this is "
        "the order as Jetbridge last knew it.",
    )


def _money(amount: Decimal) -> str:
    return f"{amount:.2f}"


def result_of(order_id: str, state: OrderState, *, reconciled: bool = False, live: bool = True) -> OrderResult:
    return OrderResult(
        order_id=order_id,
        airline=state.airline,
        status=state.status.value.lower(),
        total_amount=_money(state.total_amount),
        currency=state.currency,
        passenger_count=state.passenger_count,
        flights=list(state.flights),
        created_at=state.created_at.isoformat() if state.created_at else None,
        updated_at=state.updated_at.isoformat(),
        resource_uri=order_uri(order_id),
        reconciled=reconciled,
        live=live,
    )


def _field_of(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def parse_party(passengers: object, contact: object) -> OrderParty:
    """The passengers and contact as the agent gave them, checked; `InvalidInput` names the first bad field
    (``passengers[1].date_of_birth``) without quoting its value (personal data)."""
    try:
        return OrderParty.model_validate({"passengers": passengers, "contact": contact})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _field_of(tuple(first["loc"]))
        reason = first["msg"]
        # pydantic's messages quote patterns, not values; the value itself is never repeated.
        raise InvalidInput(field or "passengers", reason) from None


@dataclass(frozen=True, slots=True)
class Booking:
    """A create_order ready to be confirmed: what will be booked, for whom, at what total (or the order already
    made with the same key)."""

    client_id: str
    offer_id: str
    airline: str
    airline_offer_id: str
    idempotency_key: str
    party: OrderParty
    quote: Quote | None
    existing: OrderEvent | None = None

    def confirmation(self) -> str:
        """What the person is asked: shown by the client, never logged (it names the passengers)."""
        assert self.quote is not None
        q = self.quote
        names = ", ".join(f"{p.given_name} {p.family_name}" for p in self.party.passengers)
        flights = "; ".join(q.flights)
        return (
            f"Book {q.airline} offer {self.offer_id} for {len(self.party.passengers)} passenger(s): {names}. "
            f"Flights: {flights}. Total {_money(q.total_amount)} {q.currency}, charged by the airline. Confirm?"
        )


@dataclass(frozen=True, slots=True)
class Cancellation:
    client_id: str
    order: OrderEvent

    def confirmation(self) -> str:
        state = self.order.order
        return (
            f"Cancel order {self.order.order_id} ({'; '.join(state.flights)}; {state.passenger_count} passenger(s); "
            f"{_money(state.total_amount)} {state.currency})? The airline's fare rules decide any refund."
        )


class OrderService:
    def __init__(
        self,
        runtime: Runtime,
        correlator: ReplyCorrelator[OrderReply],
        book: OrderBook,
        memory: OrderMemory,
        seal: PiiSeal,
        clients: ClientRegistry,
        on_booked: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._on_booked = on_booked  # the client's look-to-book window starts again
        self._rt = runtime
        self._correlator = correlator
        self.book = book
        self.memory = memory
        self._seal = seal
        self._clients = clients
        self._topics = TopicNames(runtime.settings.topic_prefix)

    @property
    def airlines(self) -> AirlineRegistry:
        return self._rt.airlines

    # ---- references ----
    def _airline_of(self, client_id: str, code: str, field: str) -> str:
        airline = self._rt.airlines.get(code)
        if airline is None or not airline.enabled:
            raise InvalidInput(field, f"names airline {code}, which Jetbridge does not connect to")
        _, allowance = self._clients.allowance(client_id)
        if allowance.airlines is not None and code not in allowance.airlines:
            raise InvalidInput(field, f"names airline {code}, which your client may not use")
        return code

    def offer_ref(self, client_id: str, offer_id: object) -> tuple[str, str]:
        if not isinstance(offer_id, str) or (m := _OFFER_REF.match(offer_id)) is None:
            raise InvalidInput(
                "offer_id", f"{excerpt(str(offer_id))} is not an offer id of a search result (<IATA>:<id>)"
            )
        return self._airline_of(client_id, m.group(1), "offer_id"), m.group(2)

    def order_ref(self, order_id: object) -> tuple[str, str]:
        if not isinstance(order_id, str) or (m := _ORDER_REF.match(order_id)) is None:
            raise InvalidInput("order_id", f"{excerpt(str(order_id))} is not a Jetbridge order id (<IATA>:<reference>)")
        return m.group(1), m.group(2)

    async def _own_order(self, client_id: str, order_id: object) -> OrderEvent:
        """The order, if this client made it; the same `OrderNotFound` whether it does not exist or is another's."""
        self.order_ref(order_id)
        assert isinstance(order_id, str)
        event = self.book.get(order_id) or await self.book.wait_for(order_id, BOOK_WAIT_S)
        if event is None or event.client_id != client_id:
            raise OrderNotFound(f"no order {order_id} made by your client")
        return event

    # ---- price ----
    async def price(self, client_id: str, offer_id: object) -> PriceResult:
        airline, native = self.offer_ref(client_id, offer_id)
        assert isinstance(offer_id, str)
        reply = await self._call(client_id, airline, OrderOperation.PRICE, subject=native, offer_id=native)
        priced = reply.price
        if priced is None:
            raise BackboneUnavailable(f"{airline} answered the price of {offer_id} without one")
        await self.memory.put_quote(
            client_id,
            Quote(
                offer_id=offer_id,
                airline=airline,
                total_amount=priced.total_amount,
                currency=priced.currency,
                expires_at=priced.expires_at,
                passenger_count=priced.passenger_count,
                documents_required=priced.documents_required,
                flights=list(priced.flights),
            ),
        )
        changed = priced.previous_amount is not None and priced.previous_amount != priced.total_amount
        return PriceResult(
            offer_id=offer_id,
            airline=airline,
            total_amount=_money(priced.total_amount),
            currency=priced.currency,
            price_changed=changed,
            previous_amount=_money(priced.previous_amount) if changed and priced.previous_amount is not None else None,
            expires_at=priced.expires_at.isoformat(),
            passenger_count=priced.passenger_count,
            documents_required=priced.documents_required,
            flights=list(priced.flights),
        )

    # ---- create ----
    def idempotency_key(self, client_id: str, offer_id: str, party: OrderParty) -> str:
        """The same client, offer and passengers give the same key, in every bridge instance (keyed hash: it
        says nothing of the passengers to whoever reads it on a topic)."""
        people = [
            [
                p.given_name.casefold(),
                p.family_name.casefold(),
                p.date_of_birth.isoformat(),
                p.document.number if p.document else None,
            ]
            for p in party.passengers
        ]
        canonical = json.dumps([client_id, offer_id, people], separators=(",", ":"), ensure_ascii=False)
        return "jbo_" + self._seal.fingerprint(canonical.encode())[:40]

    async def prepare_booking(self, client_id: str, offer_id: object, passengers: object, contact: object) -> Booking:
        """Everything create_order checks before the person is asked; nothing here calls an airline."""
        airline, native = self.offer_ref(client_id, offer_id)
        assert isinstance(offer_id, str)
        party = parse_party(passengers, contact)
        key = self.idempotency_key(client_id, offer_id, party)
        existing = self.book.by_reference(key)
        if (
            existing is not None
            and existing.client_id == client_id
            and existing.order.status is not OrderStatus.CANCELLED
        ):
            standing = await self._still_standing(client_id, existing)
            if standing is not None:
                return Booking(client_id, offer_id, airline, native, key, party, None, standing)
        quote = await self.memory.quote(client_id, offer_id)
        if quote is None:
            raise OfferNotPriced(
                f"price {offer_id} with price_offer first (or again: a price is kept until the offer expires); "
                "create_order books at the total the person confirms, which is the airline's latest price"
            )
        self._check_passengers(party, quote)
        cap = self._spend_cap(client_id)
        if cap:
            spent = await self.memory.spent(client_id)
            if spent + quote.total_amount > cap:
                raise SpendCapExceeded(
                    f"booking {_money(quote.total_amount)} {quote.currency} would take your client past its daily "
                    f"spend cap of {_money(cap)} (spent today: {_money(spent)}); nothing was booked",
                    retry_after_s=_until_midnight_s(),
                )
        return Booking(client_id, offer_id, airline, native, key, party, quote)

    async def _still_standing(self, client_id: str, known: OrderEvent) -> OrderEvent | None:
        """The order made with the same key, as the airline holds it now; None when the airline no longer has it
        (or cancelled it): then the booking goes on as a new one. An airline that cannot be asked is taken at
        Jetbridge's word (the order as last known), never as a reason to book again."""
        airline, native = self.order_ref(known.order_id)
        try:
            reply = await self._call(client_id, airline, OrderOperation.RETRIEVE, subject=native, order_id=native)
        except OrderNotFound:
            log.warning("an order made with this key is gone at the airline; booking anew", order_id=known.order_id)
            return None
        except (AirlineError, BackboneUnavailable):
            return known
        assert reply.order is not None
        self._noted(client_id, reply, change="retrieved")
        if reply.order.status is OrderStatus.CANCELLED:
            return None
        return self.book.get(known.order_id) or known

    def _check_passengers(self, party: OrderParty, quote: Quote) -> None:
        if len(party.passengers) != quote.passenger_count:
            raise InvalidInput(
                "passengers",
                f"the offer is priced for {quote.passenger_count} passenger(s), {len(party.passengers)} given",
            )
        today = datetime.now(UTC).date()
        travels = _first_departure(quote) or today
        for i, person in enumerate(party.passengers):
            if person.date_of_birth >= today:
                raise InvalidInput(f"passengers[{i}].date_of_birth", "must be in the past")
            if person.date_of_birth < today - timedelta(days=125 * 365):
                raise InvalidInput(f"passengers[{i}].date_of_birth", "is more than 125 years ago")
            if quote.documents_required and person.document is None:
                raise InvalidInput(
                    f"passengers[{i}].document", f"is required: {quote.airline} needs a travel document on this trip"
                )
            if person.document is not None and person.document.expires_on <= travels:
                raise InvalidInput(f"passengers[{i}].document.expires_on", "must be after the day of travel")
        if not any(passenger_type(p.date_of_birth, travels) == "adult" for p in party.passengers):
            raise InvalidInput(
                "passengers", "at least one passenger must be an adult (12 or older) on the day of travel"
            )

    def _spend_cap(self, client_id: str) -> Decimal:
        _, allowance = self._clients.allowance(client_id)
        return Decimal(str(allowance.daily_spend_cap))

    async def create(self, booking: Booking) -> OrderResult:
        """Book, once the person confirmed (see the module's doc)."""
        if booking.existing is not None:
            return result_of(booking.existing.order_id, booking.existing.order, reconciled=True)
        quote = booking.quote
        assert quote is not None
        cap = self._spend_cap(booking.client_id)
        ok, spent = await self.memory.reserve(booking.client_id, quote.total_amount, cap)
        if not ok:
            raise SpendCapExceeded(
                f"booking {_money(quote.total_amount)} {quote.currency} would take your client past its daily spend "
                f"cap of {_money(cap)} (spent today: {_money(spent)}); nothing was booked",
                retry_after_s=_until_midnight_s(),
            )
        request_id = str(uuid.uuid4())
        sealed = self._seal.seal(booking.party.model_dump_json().encode(), bound_to=request_id)
        try:
            reply = await self._call(
                booking.client_id,
                booking.airline,
                OrderOperation.CREATE,
                subject=booking.idempotency_key,
                request_id=request_id,
                offer_id=booking.airline_offer_id,
                idempotency_key=booking.idempotency_key,
                accepted_total=quote.total_amount,
                currency=quote.currency,
                passenger_count=len(booking.party.passengers),
                passengers_sealed=sealed,
            )
        except OrderOutcomeUnknown:
            raise  # the reservation stays: the order may well have been made
        except JetbridgeError:
            await self.memory.release(booking.client_id, quote.total_amount)
            raise
        assert reply.order is not None
        if reply.order.total_amount != quote.total_amount:
            # Booked at a lower price than confirmed: the cap counts what was spent.
            await self.memory.release(booking.client_id, quote.total_amount - reply.order.total_amount)
        if self._on_booked is not None:
            await self._on_booked(booking.client_id)
        return self._noted(booking.client_id, reply, change="created", reconciled=reply.reconciled)

    # ---- get, cancel ----
    async def get(self, client_id: str, order_id: object) -> OrderResult:
        known = await self._own_order(client_id, order_id)
        airline, native = self.order_ref(order_id)
        try:
            reply = await self._call(client_id, airline, OrderOperation.RETRIEVE, subject=native, order_id=native)
        except (AirlineError, BackboneUnavailable) as exc:
            log.warning("order retrieved from the book: the airline could not be asked", error_code=exc.code)
            return result_of(known.order_id, known.order, live=False)
        return self._noted(client_id, reply, change="retrieved")

    async def prepare_cancel(self, client_id: str, order_id: object) -> Cancellation:
        return Cancellation(client_id, await self._own_order(client_id, order_id))

    async def cancel(self, cancellation: Cancellation) -> OrderResult:
        order = cancellation.order
        if order.order.status is OrderStatus.CANCELLED:
            return result_of(order.order_id, order.order)
        airline, native = self.order_ref(order.order_id)
        reply = await self._call(
            cancellation.client_id, airline, OrderOperation.CANCEL, subject=native, order_id=native
        )
        return self._noted(cancellation.client_id, reply, change="cancelled")

    def _noted(self, client_id: str, reply: OrderReply, *, change: str, reconciled: bool = False) -> OrderResult:
        """The order of a reply, recorded in this instance's book at once (the connector published it too)."""
        state = reply.order
        assert state is not None
        order_id = f"{state.airline}:{state.order_id}"
        known = self.book.get(order_id)
        if known is None or known.order != state:
            self.book.note(
                OrderEvent(
                    order_id=order_id,
                    client_id=client_id,
                    order=state,
                    change=change,
                    changed_by=ChangeSource.AGENT,
                    request_id=reply.request_id,
                    at=state.updated_at,
                )
            )
        return result_of(order_id, state, reconciled=reconciled)

    # ---- the call ----
    async def _call(
        self,
        client_id: str,
        airline: str,
        operation: OrderOperation,
        *,
        subject: str,
        request_id: str | None = None,
        **fields: Any,
    ) -> OrderReply:
        """Publish one order call and wait for its reply until the order deadline plus a grace."""
        settings = self._rt.settings
        request_id = request_id or str(uuid.uuid4())
        loop = asyncio.get_running_loop()
        started = loop.time()
        topic = self._topics.order_calls(airline)
        with (
            structlog.contextvars.bound_contextvars(
                request_id=request_id, correlation_id=request_id, airline=airline, operation=operation.value.lower()
            ),
            # The order call's span (child of the agent's, when it sent a traceparent): the connector's is its child.
            tracing.span(
                f"order {operation.value.lower()} {airline}",
                kind=tracing.SpanKind.CLIENT,
                attributes=tracing.messaging(
                    topic,
                    "send",
                    subject,
                    {
                        tracing.REQUEST_ID: request_id,
                        "jetbridge.stage": "bridge",
                        "jetbridge.airline": airline,
                        "jetbridge.order.operation": operation.value.lower(),
                    },
                ),
            ) as call_span,
        ):
            created = now_utc()
            deadline = created + timedelta(milliseconds=settings.order_deadline_ms)
            call = OrderCall(
                request_id=request_id,
                correlation_id=request_id,
                client_id=client_id,
                reply_to=self._correlator.instance_id,
                airline=airline,
                operation=operation,
                deadline=deadline,
                created_at=created,
                **fields,
            )
            give_up = started + settings.order_deadline_ms / 1000 + ORDER_GRACE_S
            waiter = self._correlator.expect(request_id)
            try:
                try:
                    await asyncio.wait_for(
                        self._rt.producer.send(
                            topic,
                            key=subject,
                            value=self._rt.codec.encode(topic, call),
                            headers=event_headers(
                                request_id=request_id,
                                correlation_id=request_id,
                                client_id=client_id,
                                deadline_ms=int(deadline.timestamp() * 1000),
                                traceparent=tracing.traceparent_of(call_span),
                            ),
                        ),
                        max(0.0, give_up - loop.time()),
                    )
                except (TimeoutError, JetbridgeError):
                    raise BackboneUnavailable(
                        f"Jetbridge could not send the {operation.value.lower()} call to {airline}; nothing was "
                        "sent to the airline, try again in 5 s",
                        retry_after_s=5.0,
                    ) from None
                try:
                    reply = await asyncio.wait_for(waiter, max(0.0, give_up - loop.time()))
                except TimeoutError:
                    log.error("order call unanswered by its deadline")
                    raise self._unanswered(operation, airline) from None
            finally:
                self._correlator.forget(request_id)
            log.info(
                "order call answered",
                status=reply.status.value,
                error_code=reply.error.code if reply.error else None,
                reconciled=reply.reconciled,
                elapsed_ms=int((loop.time() - started) * 1000),
            )
            tracing.annotate(
                {"jetbridge.reply.status": reply.status.value, "jetbridge.reconciled": reply.reconciled},
                error_code=reply.error.code if reply.error else None,
            )
        if reply.status is OrderReplyStatus.OK:
            if (operation is OrderOperation.PRICE and reply.price is None) or (
                operation is not OrderOperation.PRICE and reply.order is None
            ):
                raise BackboneUnavailable(f"{airline}'s connector answered {operation.value.lower()} without a result")
            return reply
        if reply.status is OrderReplyStatus.UNKNOWN:
            raise self._unanswered(operation, airline)
        error = reply.error
        code = error.code if error else "airline"
        cls = _ERRORS.get(code, AirlineError)
        message = error.message if error else f"{airline} refused"
        try:
            raise cls(message)
        except TypeError:  # an error class that needs more than a message
            raise AirlineError(message) from None

    @staticmethod
    def _unanswered(operation: OrderOperation, airline: str) -> JetbridgeError:
        if operation in (OrderOperation.CREATE, OrderOperation.CANCEL):
            what = "made the order" if operation is OrderOperation.CREATE else "cancelled the order"
            return OrderOutcomeUnknown(
                f"whether {airline} {what} could not be established in time. Call the same tool again with the same "
                "arguments: Jetbridge looks the order up at the airline first, so it is never made twice"
            )
        return BackboneUnavailable(
            f"{airline} did not answer the {operation.value.lower()} call in time; try again in 5 s", retry_after_s=5.0
        )


def _first_departure(quote: Quote) -> date | None:
    for line in quote.flights:
        parts = line.split()
        if len(parts) >= 3:
            try:
                return datetime.fromisoformat(parts[2]).date()
            except ValueError:
                continue
    return None


def _until_midnight_s() -> float:
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return max(1.0, (midnight - now).total_seconds())


def redacted(arguments: Mapping[str, object]) -> dict[str, object]:
    """An order tool's arguments with the passengers and contact reduced to a count: what an audit may hash."""
    kept = {k: v for k, v in arguments.items() if k not in ("passengers", "contact")}
    if "passengers" in arguments:
        passengers = arguments["passengers"]
        kept["passenger_count"] = len(passengers) if isinstance(passengers, list) else None
    return kept


def arguments_digest(arguments: Mapping[str, object]) -> str:
    """What the audit keeps of an order tool's arguments: their SHA-256 once redacted (no personal data, not even
    hashed), in the canonical form of every tool's (`mcp_bridge.service.arguments_sha256`)."""
    return arguments_sha256(redacted(arguments))


@contextlib.asynccontextmanager
async def open_orders(
    runtime: Runtime,
    instance_id: str,
    redis: Redis | None,
    clients: ClientRegistry,
    on_booked: Callable[[str], Awaitable[None]] | None = None,
) -> AsyncIterator[OrderService]:
    """The order service of one bridge instance: its order-reply correlator, its order book, its memory (quotes
    and spend, in ``redis`` when given) and the passenger-data seal; stopped when the block ends."""
    settings = runtime.settings
    topics = TopicNames(settings.topic_prefix)
    correlator: ReplyCorrelator[OrderReply] = ReplyCorrelator(
        instance_id=instance_id,
        topic=topics.order_replies,
        codec=runtime.codec,
        consumer_config=kafka_config(settings, f"{instance_id}-orders"),
        model=OrderReply,
    )
    book = OrderBook(topics.orders, runtime.codec, kafka_config(settings, f"{instance_id}-order-book"))
    memory = OrderMemory(redis, prefix=settings.topic_prefix)
    try:
        await correlator.start()
        await book.start()
        yield OrderService(runtime, correlator, book, memory, load_seal(settings), clients, on_booked)
    finally:
        await book.close()
        await correlator.close()
