"""The order worker: one airline's order calls (price, create, retrieve, cancel) from its orders topic to the
airline and back, exactly one reply each, every effect once.

    jb.airline.<IATA>.orders.v1 ──▶ OrderWorker ──▶ the airline (its OrderConnector, inside its AirlineGuard)
                                        ├─▶ jb.orders.v1          OrderEvent: created, cancelled, retrieved (changed)
                                        ├─▶ jb.order-replies.v1   OrderReply, key request_id, the call's headers
                                        └─▶ jb.dlq.v1             poison, and failures a replay could settle

At-least-once, effects once (ARCHITECTURE.md, promise 2): a call's offset is committed only after its event, reply
and dead letter are acknowledged, so a crash replays it; a replayed create is reconciled like any other (below).
A partition handed to another member of the group is handed over only once the calls in flight on it finished
(or ``drain_timeout_s`` passed), so two workers never work on the same idempotency key at once.

``OrderRunner`` decides what one call comes to, apart from Kafka (tested on its own):

- every airline call runs inside the airline's `AirlineGuard` (breaker and rate limit shared with search), within
  the call's deadline; the airline's business answers (offer unavailable or expired, sold out, price changed,
  order refused, not found) go through the guard as answers, so the breaker never counts them as failures;
- CREATE is not idempotent at the airline; it is an Idempotent Receiver on the call's idempotency key (the order's
  client reference at the airline). Calls with the same key are serialised in the process (the topic is keyed by
  it, so across processes too). The airline is asked for the key first (``find_order``): an order found (not
  cancelled) is the answer, ``reconciled``. Otherwise one create (policy ``order_create``: one attempt, never
  retried blindly). An unknown outcome (timeout, connection dropped, 5xx, an answer we cannot read) is looked up
  again before anything else: found, the answer; not found with budget left, created again (same reference); the
  budget gone or the lookup failed, UNKNOWN (``order_outcome_unknown``, retriable: the same call again never books
  twice). Never two creates without a lookup between them;
- CANCEL whose outcome is unknown is looked up the same way (``retrieve_order``): cancelled, OK; else the error;
  the lookup failing, UNKNOWN. RETRIEVE and CANCEL of an order the view knows as another client's are answered
  ``order_not_found`` without calling the airline;
- the passengers are opened from their seal (bound to the request id) only for the create and never logged.

Poison (an undecodable call, a seal that does not open, passengers that do not validate, a call missing what its
operation needs) is dead-lettered, payload byte for byte (the passengers in it stay sealed), and answered ERROR
when it decoded. Airline failures are answered ERROR or UNKNOWN and dead-lettered as ``belongs_in_dlq`` says,
except the airline's business answers and timeouts: those are the answer, not a lost event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeGuard, TypeVar

import structlog
from confluent_kafka import Message, TopicPartition
from pydantic import ValidationError

from connectors.order_events import OrderEvents, OrderView
from connectors.orders import OrderConnector, order_id_of
from connectors.resilience import AirlineGuard, CallOutcome, Clock, SystemClock
from connectors.worker import OffsetTracker, call_context
from jetbridge import tracing
from jetbridge.airlines import ORDER_CREATE, Airline
from jetbridge.dlq import Backoff, DeadLetterChannel, DeadLetterSend, DlqHeaders, belongs_in_dlq, dead_letter, scrub
from jetbridge.errors import (
    AirlineBadResponse,
    AirlineError,
    AirlineTimeout,
    AirlineUnavailable,
    ConfigurationError,
    DecodeError,
    InvalidInput,
    JetbridgeError,
    KafkaError,
    OfferUnavailable,
    OrderNotFound,
    OrderOutcomeUnknown,
    OrderRefused,
    PriceChanged,
)
from jetbridge.health_board import HealthBoard
from jetbridge.kafka import AsyncConsumer, AsyncProducer, decode_headers
from jetbridge.log import get_logger
from jetbridge.metrics import ERRORS, ORDER_CALLS
from jetbridge.passengers import OrderParty
from jetbridge.pii import PiiSeal
from jetbridge.routing import call_budget_s
from jetbridge.topics import TopicNames
from schemas.codec import AvroCodec
from schemas.models import (
    ChangeSource,
    DeadLetter,
    ErrorInfo,
    OrderCall,
    OrderEvent,
    OrderOperation,
    OrderReply,
    OrderReplyStatus,
    OrderState,
    OrderStatus,
    PricedOffer,
    now_utc,
)

__all__ = ["Handled", "OrderCapable", "OrderRunner", "OrderWorker", "Received", "has_order_operations", "order_reply"]

log = get_logger(__name__)

T = TypeVar("T")

# Past the connector's own time limit, the worker's backstop (as the search worker's).
BACKSTOP_S = 2.0
# Creates one call may make (each after a lookup that found nothing): the deadline bounds them too.
MAX_CREATES = 3
_IDLE_POLL_S = 0.5
_COMMIT_EVERY_S = 0.2
# The airline's answers to an order operation: told in the reply, never a breaker failure nor a dead letter.
_ANSWERS: tuple[type[JetbridgeError], ...] = (OfferUnavailable, PriceChanged, OrderRefused, OrderNotFound)
# Failures after which a create or cancel may have happened at the airline (its outcome is unknown).
_AMBIGUOUS: tuple[type[JetbridgeError], ...] = (AirlineTimeout, AirlineUnavailable, AirlineBadResponse)


class OrderCapable(OrderConnector, Protocol):
    """A connector's order side, and its ``aclose`` (what `connectors.base.build_connector` returns)."""

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Received:
    """One consumed record, as the worker needs it (kept apart from confluent-kafka's Message for tests)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]

    @classmethod
    def of(cls, message: Message) -> Received:
        raw = message.headers() or []
        key = message.key()
        return cls(
            topic=str(message.topic()),
            partition=int(message.partition() or 0),
            offset=int(message.offset() or 0),
            key=key.encode() if isinstance(key, str) else key,
            value=message.value(),
            headers=list(raw.items()) if isinstance(raw, dict) else list(raw),
        )


@dataclass(frozen=True, slots=True)
class Handled:
    """What one call came to: its reply, the order event published before it, the failure to dead-letter."""

    reply: OrderReply
    event: OrderEvent | None = None
    failure: BaseException | None = None

    @property
    def outcome(self) -> str:
        """The metric's label: ok, reconciled, unknown, or the error's code (a bounded set)."""
        reply = self.reply
        if reply.status is OrderReplyStatus.OK:
            return "reconciled" if reply.reconciled else "ok"
        if reply.status is OrderReplyStatus.UNKNOWN:
            return "unknown"
        return reply.error.code if reply.error is not None else "error"


@dataclass(frozen=True, slots=True)
class _Answer:
    """The airline said no (an `_ANSWERS` error): carried through the guard as a result, so the breaker counts an
    answer, not a failure."""

    error: JetbridgeError


def order_reply(
    call: OrderCall,
    *,
    kind: str,
    started: float,
    attempts: int,
    error: JetbridgeError | None = None,
    unknown: bool = False,
    price: PricedOffer | None = None,
    order: OrderState | None = None,
    reconciled: bool = False,
) -> OrderReply:
    """The one reply to ``call``: OK with its price or order, ERROR with the error, or UNKNOWN."""
    status = OrderReplyStatus.UNKNOWN if unknown else OrderReplyStatus.OK if error is None else OrderReplyStatus.ERROR
    return OrderReply(
        request_id=call.request_id,
        correlation_id=call.correlation_id,
        reply_to=call.reply_to,
        airline=call.airline,
        operation=call.operation,
        status=status,
        error=None if error is None else ErrorInfo(code=error.code, message=_told(error), retriable=error.retriable),
        price=price,
        order=order,
        reconciled=reconciled,
        connector_kind=kind,
        latency_ms=int((time.monotonic() - started) * 1000),
        attempts=attempts,
        produced_at=now_utc(),
    )


def _told(error: JetbridgeError) -> str:
    """The error's message as the agent reads it: scrubbed (airline text), capped; a new price said."""
    text = error.message
    if isinstance(error, PriceChanged) and error.amount and error.amount not in text:
        text = f"{text} (new total {error.amount} {error.currency or ''})".replace(" )", ")")
    return scrub(text)[:500]


class _KeyLocks:
    """One lock per idempotency key, for as long as a call holds or waits for it (the process's Idempotent
    Receiver: two calls with one key never run at once)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


# Process-wide: every worker of the process (two of one airline in tests) shares them.
_KEYS = _KeyLocks()


class OrderRunner:
    """What one order call comes to at the airline (no Kafka): see the module's doc."""

    def __init__(
        self,
        airline: Airline,
        connector: OrderConnector,
        guard: AirlineGuard,
        seal: PiiSeal,
        *,
        view: OrderView | None = None,
        margin: timedelta = timedelta(milliseconds=250),
        clock: Clock | None = None,
    ) -> None:
        create = airline.retry_policy(ORDER_CREATE)
        if create.max_attempts != 1:
            raise ConfigurationError(
                f"airline {airline.code}: retry policy {ORDER_CREATE} must have max_attempts 1 (a create is never "
                f"repeated before the order is looked up), not {create.max_attempts}"
            )
        self.airline = airline
        self.connector = connector
        self.guard = guard
        self._seal = seal
        self._view = view
        self._margin = margin
        self._clock = clock or SystemClock()

    async def run(self, call: OrderCall) -> Handled:
        """Answer ``call``; raises only for a bug (the worker answers ERROR and dead-letters it)."""
        started = time.monotonic()
        budget_end = self._clock.monotonic() + call_budget_s(call.deadline, self._margin, now_utc())
        try:
            if call.operation is OrderOperation.PRICE:
                return await self._price(call, started, budget_end)
            if call.operation is OrderOperation.CREATE:
                return await self._create(call, started, budget_end)
            return await self._on_order(call, started, budget_end)
        except (DecodeError, InvalidInput) as poison:
            # The call cannot be run as it is: told to the agent and kept for an operator.
            return Handled(self._reply(call, started, 0, error=poison), failure=poison)

    def failed(self, call: OrderCall, error: BaseException, started: float) -> Handled:
        """The answer to a call whose run raised (a bug): ERROR, and the call dead-lettered."""
        told = (
            error if isinstance(error, JetbridgeError) else JetbridgeError(f"internal error ({type(error).__name__})")
        )
        return Handled(self._reply(call, started, 0, error=told), failure=error)

    # ---- operations ----
    async def _price(self, call: OrderCall, started: float, budget_end: float) -> Handled:
        offer_id = _required(call.offer_id, "offer_id", call)
        rid = call.request_id
        outcome = await self._guarded(
            lambda t: self.connector.price(offer_id, request_id=rid, timeout_s=t), budget_end, "order"
        )
        if outcome.error is not None:
            return self._failure(call, started, outcome.attempts, outcome.error)
        return Handled(self._reply(call, started, outcome.attempts, price=outcome.result))

    async def _create(self, call: OrderCall, started: float, budget_end: float) -> Handled:
        offer_id = _required(call.offer_id, "offer_id", call)
        key = _required(call.idempotency_key, "idempotency_key", call)
        total = _required(call.accepted_total, "accepted_total", call)
        currency = _required(call.currency, "currency", call)
        party = self._open_party(call)
        rid = call.request_id

        async def create(timeout_s: float) -> OrderState:
            return await self.connector.create_order(
                offer_id,
                party,
                accepted_total=total,
                currency=currency,
                client_reference=key,
                request_id=rid,
                timeout_s=timeout_s,
            )

        async with _KEYS.hold(f"{self.airline.code}:{key}"):
            # Made by an earlier attempt of this call (a replay, a retry after UNKNOWN)? Then that is the answer.
            found = await self._find(key, rid, budget_end)
            attempts = found.attempts
            if found.error is not None:
                return self._failure(call, started, attempts, found.error)  # nothing created: safe to say so
            if found.result is not None:
                return self._made(call, started, attempts, found.result, reconciled=True)
            uncertain: JetbridgeError | None = None  # why the last create's outcome was unknown
            for creates in range(1, MAX_CREATES + 1):
                made = await self._guarded(create, budget_end, ORDER_CREATE)
                attempts += made.attempts
                if made.error is None and made.result is not None:
                    return self._made(call, started, attempts, made.result, reconciled=False)
                error = made.error or AirlineBadResponse("create_order returned nothing")
                if made.attempts == 0 or not isinstance(error, _AMBIGUOUS):
                    # The airline was not asked (no budget, circuit open, no token) or said no: nothing was made by
                    # this attempt; but an earlier unknown outcome stays unknown.
                    if uncertain is not None:
                        return self._unknown(call, started, attempts, uncertain)
                    return self._failure(call, started, attempts, error)
                uncertain = error
                log.warning("order create outcome unknown; looking it up", error_code=error.code, create=creates)
                found = await self._find(key, rid, budget_end)
                attempts += found.attempts
                if found.error is not None:
                    return self._unknown(call, started, attempts, error)
                if found.result is not None:
                    return self._made(call, started, attempts, found.result, reconciled=True)
                await self._pause_before_create(creates, budget_end)
            return self._unknown(call, started, attempts, uncertain or _nothing("create_order"))

    async def _on_order(self, call: OrderCall, started: float, budget_end: float) -> Handled:
        """RETRIEVE and CANCEL: of the airline's order ``call.order_id``."""
        airline_order = _required(call.order_id, "order_id", call)
        order_id = order_id_of(self.airline.code, airline_order)
        known = self._view.get(order_id) if self._view is not None else None
        if known is not None and known.client_id != call.client_id:
            # Another client's order: the same answer as for no order at all, and the airline is not asked.
            return self._failure(call, started, 0, OrderNotFound(f"no order {order_id} for this client"))
        rid = call.request_id
        retrieve = self.connector.retrieve_order
        if call.operation is OrderOperation.RETRIEVE:
            got = await self._guarded(
                lambda t: retrieve(airline_order, request_id=rid, timeout_s=t), budget_end, "order"
            )
            if got.error is not None or got.result is None:
                return self._failure(call, started, got.attempts, got.error or _nothing("retrieve_order"))
            changed = known is None or _seen(known.order) != _seen(got.result)
            event = self._event(call, got.result, "retrieved") if changed else None
            return Handled(self._reply(call, started, got.attempts, order=got.result), event=event)
        cancel = self.connector.cancel_order
        done = await self._guarded(lambda t: cancel(airline_order, request_id=rid, timeout_s=t), budget_end, "order")
        attempts = done.attempts
        if done.error is None and done.result is not None:
            return self._made(call, started, attempts, done.result, reconciled=False, change="cancelled")
        error = done.error or _nothing("cancel_order")
        if done.attempts == 0 or not isinstance(error, _AMBIGUOUS):
            return self._failure(call, started, attempts, error)
        log.warning("order cancel outcome unknown; looking it up", error_code=error.code)
        got = await self._guarded(lambda t: retrieve(airline_order, request_id=rid, timeout_s=t), budget_end, "order")
        attempts += got.attempts
        if got.error is not None or got.result is None:
            return self._unknown(call, started, attempts, error)
        if got.result.status is OrderStatus.CANCELLED:
            return self._made(call, started, attempts, got.result, reconciled=True, change="cancelled")
        return self._failure(call, started, attempts, error)  # not cancelled: the cancel did not happen

    # ---- the airline, guarded ----
    async def _find(self, key: str, rid: str, budget_end: float) -> CallOutcome[OrderState | None]:
        """The live order made with ``key`` (None: none, or only a cancelled one)."""
        found = await self._guarded(
            lambda t: self.connector.find_order(key, request_id=rid, timeout_s=t), budget_end, "order"
        )
        if found.result is not None and found.result.status is OrderStatus.CANCELLED:
            return CallOutcome(None, None, found.attempts)
        return found

    async def _guarded(
        self, operation: Callable[[float], Awaitable[T]], budget_end: float, policy: str
    ) -> CallOutcome[T]:
        """One operation inside the airline's guard and the call's budget; the airline's answers as errors."""
        code = self.airline.code

        async def attempt(timeout_s: float) -> T | _Answer:
            try:
                return await asyncio.wait_for(operation(timeout_s), timeout=timeout_s + BACKSTOP_S)
            except TimeoutError:
                raise AirlineTimeout(f"{code} did not answer within {timeout_s:.2f} s") from None
            except _ANSWERS as answer:
                return _Answer(answer)
            except (AirlineError, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - a connector's bug: its outcome is unknown, its text unsafe
                raise AirlineBadResponse(f"{code} connector failed ({type(exc).__name__})") from None

        left = budget_end - self._clock.monotonic()
        outcome = await self.guard.call(attempt, budget_s=left, operation=policy)
        if isinstance(outcome.result, _Answer):
            return CallOutcome(None, outcome.result.error, outcome.attempts, outcome.first_failed_at)
        return CallOutcome(outcome.result, outcome.error, outcome.attempts, outcome.first_failed_at)

    async def _pause_before_create(self, creates: int, budget_end: float) -> None:
        """The create policy's backoff before creating again, when it leaves time for the attempt."""
        policy = self.airline.retry_policy(ORDER_CREATE)
        wait = policy.backoff_s(creates)
        if self._clock.monotonic() + wait + policy.min_attempt_ms / 1000 <= budget_end:
            await self._clock.sleep(wait)

    # ---- the passengers ----
    def _open_party(self, call: OrderCall) -> OrderParty:
        """The sealed passengers, opened for this call alone; poison (DecodeError) when they do not open or
        validate. No message here quotes a value: pydantic's would."""
        if call.passengers_sealed is None:
            raise InvalidInput("passengers_sealed", "required for CREATE")
        plain = self._seal.open(call.passengers_sealed, bound_to=call.request_id)
        try:
            party = OrderParty.model_validate_json(plain)
        except ValidationError as exc:
            where = sorted({".".join(str(p) for p in e["loc"]) + f" ({e['type']})" for e in exc.errors()})
            raise DecodeError(f"sealed passengers do not validate: {', '.join(where)[:300]}") from None
        if call.passenger_count and len(party.passengers) != call.passenger_count:
            raise DecodeError(f"sealed passengers: {len(party.passengers)}, the call says {call.passenger_count}")
        return party

    # ---- answers ----
    def _reply(self, call: OrderCall, started: float, attempts: int, **fields: Any) -> OrderReply:
        return order_reply(call, kind=self.airline.kind, started=started, attempts=attempts, **fields)

    def _made(
        self,
        call: OrderCall,
        started: float,
        attempts: int,
        order: OrderState,
        *,
        reconciled: bool,
        change: str = "created",
    ) -> Handled:
        reply = self._reply(call, started, attempts, order=order, reconciled=reconciled)
        return Handled(reply, event=self._event(call, order, change))

    def _failure(self, call: OrderCall, started: float, attempts: int, error: JetbridgeError) -> Handled:
        kept = belongs_in_dlq(error) and not isinstance(error, _ANSWERS)
        return Handled(self._reply(call, started, attempts, error=error), failure=error if kept else None)

    def _unknown(self, call: OrderCall, started: float, attempts: int, cause: JetbridgeError) -> Handled:
        what = "created" if call.operation is OrderOperation.CREATE else "cancelled"
        error = OrderOutcomeUnknown(
            f"{self.airline.code} did not confirm whether the order was {what} ({cause.code}); the same call again "
            "looks it up first and never books twice"
        )
        # Dead-lettered too: an operator's replay settles it the same way (looked up first).
        return Handled(self._reply(call, started, attempts, error=error, unknown=True), failure=error)

    def _event(self, call: OrderCall, order: OrderState, change: str) -> OrderEvent:
        return OrderEvent(
            order_id=order_id_of(self.airline.code, order.order_id),
            client_id=call.client_id,
            order=order,
            change=change,
            changed_by=ChangeSource.AGENT,
            reason=None,
            request_id=call.request_id,
            at=now_utc(),
        )


def _required(value: T | None, field: str, call: OrderCall) -> T:
    if value is None or value == "":
        raise InvalidInput(field, f"required for {call.operation.value}")
    return value


def _nothing(operation: str) -> AirlineBadResponse:
    return AirlineBadResponse(f"{operation} returned nothing")


def _seen(state: OrderState) -> dict[str, Any]:
    """An order as the topic keeps it (timestamps to the millisecond), to tell whether a retrieve changed it."""
    seen = state.model_dump()
    for name, value in seen.items():
        if isinstance(value, datetime):
            seen[name] = value.replace(microsecond=value.microsecond // 1000 * 1000)
    return seen


class OrderWorker:
    """One airline's order worker: a member of consumer group ``jb.orders.<IATA>`` (behind the topic prefix)."""

    def __init__(
        self,
        airline: Airline,
        *,
        codec: AvroCodec,
        producer: AsyncProducer,
        consumer_config: dict[str, Any],
        connector: OrderCapable,
        seal: PiiSeal,
        events: OrderEvents,
        calls_topic: str | None = None,
        replies_topic: str | None = None,
        dlq_topic: str | None = None,
        group_id: str | None = None,
        instance: str = "",
        session_timeout_ms: int = 6000,
        concurrency: int = 4,
        deadline_margin_ms: int = 250,
        guard: AirlineGuard | None = None,
        health: HealthBoard | None = None,
        clock: Clock | None = None,
        dlq_send: DeadLetterSend | None = None,
        dlq_backoff: Backoff | None = None,
        drain_timeout_s: float = 10.0,
    ) -> None:
        names = TopicNames()
        self.airline = airline
        self.calls_topic = calls_topic or names.order_calls(airline.code)
        self.replies_topic = replies_topic or names.order_replies
        self.dlq_topic = dlq_topic or names.dlq
        self.group_id = group_id or f"jb.orders.{airline.code}"
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}"
        self.connector = connector
        self._codec = codec
        self._producer = producer
        self._events = events
        if guard is None:
            # Its own guard (tests, a process without the airline's search worker), following the shared health.
            guard = AirlineGuard(
                airline, instance=self.instance, clock=clock, publish=health.publish if health is not None else None
            )
            if health is not None:
                health.subscribe(airline.code, guard.adopt)
        self.guard = guard
        self.runner = OrderRunner(
            airline,
            connector,
            guard,
            seal,
            view=events.view,
            margin=timedelta(milliseconds=deadline_margin_ms),
            clock=clock,
        )
        self.dead_letters = DeadLetterChannel(
            dlq_send or self._send_dead_letter, stage=f"orders.{airline.code}", backoff=dlq_backoff
        )
        self._concurrency = concurrency
        self._free = concurrency
        self._slot_freed = asyncio.Event()
        self._drain_timeout_s = drain_timeout_s
        self._tracker = OffsetTracker()
        # Calls in flight per partition, for the handover on revoke (waited for on the consumer's thread).
        self._running_on: Counter[int] = Counter()
        self._running_changed = threading.Condition()
        self._backlog: deque[tuple[Received, int]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.assigned = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.handled = 0
        self.rebalances = 0
        config = consumer_config | {
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 500,
            "partition.assignment.strategy": "cooperative-sticky",
            # Partitions added to the airline's topic (`topics apply` after its registry entry's count was raised)
            # are taken on within seconds: a producer sends there after its own refresh (up to five minutes), and a
            # call that lands there before these 10 s waits at most that long (a search's may miss its deadline).
            "topic.metadata.refresh.interval.ms": 10_000,
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(100, session_timeout_ms // 3),
            # Order traffic is low and each call may be long: prefetch little.
            "queued.min.messages": 10,
        }
        if instance:
            config["group.instance.id"] = f"{instance}-orders-{airline.code}"
        self._consumer = AsyncConsumer(config)

    # ---- the loop ----
    async def run(self) -> None:
        """Consume until ``stop()``; then finish what is in flight and commit it."""
        self._loop = asyncio.get_running_loop()
        await self._consumer.subscribe(
            [self.calls_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        commit_task = asyncio.create_task(self._commit_loop())
        log.info("order worker started", airline=self.airline.code, kind=self.airline.kind, topic=self.calls_topic)
        paused = False
        try:
            while not self._stopping.is_set():
                self._start_waiting()
                busy = bool(self._backlog)  # calls wait for a slot: stop fetching (backpressure), go on polling
                if busy:
                    await self._consumer.pause_assigned()  # every round: partitions assigned meanwhile too
                    paused = True
                    self._slot_freed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._slot_freed.wait(), _IDLE_POLL_S)
                elif paused:
                    await self._consumer.resume_assigned()
                    paused = False
                messages = await self._consumer.consume(max(1, self._free), 0.0 if busy else _IDLE_POLL_S)
                for message in messages:
                    if message.error() is not None:
                        log.warning("consume error", airline=self.airline.code, error=str(message.error()))
                        continue
                    received = Received.of(message)
                    epoch = self._tracker.started(received.partition, received.offset)
                    if epoch is not None:
                        self._backlog.append((received, epoch))
        finally:
            self.dead_letters.close()
            await self._drain()
            commit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await commit_task
            await self._commit()
            await self._consumer.close()
            with contextlib.suppress(Exception):
                await self.connector.aclose()

    def stop(self) -> None:
        self._stopping.set()

    def health(self) -> dict[str, Any]:
        """This worker's part of the process's health answer."""
        return {
            "placed": self.assigned.is_set(),
            "partitions": self._tracker.owned(),
            "rebalances": self.rebalances,
            # Times its consumer was fenced out of the group and replaced by a new one (jetbridge/kafka.py).
            "rejoined": self._consumer.replaced,
            "in_flight": self._concurrency - self._free,
            "handled": self.handled,
            "dlq": self.dead_letters.state(),
        }

    def _start_waiting(self) -> None:
        while self._backlog and self._free > 0:
            received, epoch = self._backlog.popleft()
            if not self._tracker.owns(received.partition, epoch):
                continue  # revoked while it waited: its new owner reads it
            self._free -= 1
            with self._running_changed:
                self._running_on[received.partition] += 1
            task = asyncio.create_task(self._handle(received, epoch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=self._drain_timeout_s)
        for task in late:
            task.cancel()  # left uncommitted: replayed (and reconciled) later, never lost
        if late:
            log.warning("order calls cancelled at shutdown; replayed later", airline=self.airline.code, calls=len(late))
            await asyncio.gather(*late, return_exceptions=True)

    # ---- one call ----
    async def _handle(self, received: Received, epoch: int) -> None:
        headers = decode_headers(received.headers)
        try:
            # The bridge's order call span is the parent of this one.
            with call_context(
                self.airline.code,
                self.calls_topic,
                self.group_id,
                headers,
                received.partition,
                received.offset,
                (received.key or b"").decode(errors="replace"),
            ):
                handled = await self.process(received, headers)
                if handled is not None:
                    reply = handled.reply
                    tracing.annotate(
                        {"jetbridge.reply.status": reply.status.value, "jetbridge.attempts": reply.attempts},
                        error_code=reply.error.code if reply.error else None,
                    )
            if self._tracker.finished(received.partition, received.offset, epoch):
                self.handled += 1
        except KafkaError as exc:
            # The DLQ channel closed at shutdown with this call's dead letter unwritten.
            log.warning(
                "order call left uncommitted; it will be replayed",
                airline=self.airline.code,
                partition=received.partition,
                offset=received.offset,
                error=exc.message,
            )
        finally:
            self._free += 1
            self._slot_freed.set()
            with self._running_changed:
                self._running_on[received.partition] -= 1
                self._running_changed.notify_all()

    async def process(self, received: Received, headers: dict[str, str]) -> Handled | None:
        """Answer one record: event, reply, dead letter, each acknowledged before the next; None for a record
        that does not decode (dead-lettered, no reply: there is nobody to address it to)."""
        try:
            call = await self._codec.decode(received.value, OrderCall)
        except Exception as exc:  # noqa: BLE001 - poison never stops the worker
            ERRORS.labels(self.dead_letters.stage, getattr(exc, "code", "internal")).inc()
            ORDER_CALLS.labels(self.airline.code, "unknown", "poison").inc()
            await self._dead_letter(received, headers, exc, 1)
            return None
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(operation=call.operation.value):
            try:
                handled = await self.runner.run(call)
            except Exception as exc:  # noqa: BLE001 - one bad call never stops the worker
                log.error("order call failed", error=type(exc).__name__)
                handled = self.runner.failed(call, exc, started)
            try:
                if handled.event is not None:
                    await self._events.publish(handled.event, received.headers)
            except KafkaError as exc:
                # Not told as done: the order's record is missing. The same call again finds the order and says so.
                handled = Handled(self.runner.failed(call, exc, started).reply, failure=exc)
            try:
                await self._producer.send(
                    self.replies_topic,
                    key=call.request_id,
                    value=self._codec.encode(self.replies_topic, handled.reply),
                    headers=received.headers,
                )
            except KafkaError as exc:
                handled = Handled(handled.reply, handled.event, failure=exc)
            if handled.failure is not None:
                await self._dead_letter(received, headers, handled.failure, max(1, handled.reply.attempts))
            self._measure(call, handled)
        return handled

    def _measure(self, call: OrderCall, handled: Handled) -> None:
        reply = handled.reply
        ORDER_CALLS.labels(self.airline.code, call.operation.value.lower(), handled.outcome).inc()
        if reply.error is not None:
            ERRORS.labels(self.dead_letters.stage, reply.error.code).inc()
        log.info(
            "order call answered",
            status=reply.status.value,
            error_code=reply.error.code if reply.error else None,
            reconciled=reply.reconciled,
            attempts=reply.attempts,
            latency_ms=reply.latency_ms,
            order_id=reply.order.order_id if reply.order else None,
            order_change=handled.event.change if handled.event else None,
        )

    async def _dead_letter(self, received: Received, headers: dict[str, str], error: BaseException, n: int) -> None:
        record, dlq_headers = dead_letter(
            topic=received.topic,
            partition=received.partition,
            offset=received.offset,
            key=received.key,
            value=received.value,
            headers=headers,
            stage=self.dead_letters.stage,
            error=error,
            attempts=n,
        )
        await self.dead_letters.publish(record, dlq_headers, received.key)
        log.warning("order call dead-lettered", error_code=record.error_code, offset=received.offset)

    async def _send_dead_letter(self, key: bytes | str | None, record: DeadLetter, headers: DlqHeaders) -> None:
        await self._producer.send(
            self.dlq_topic, key=key, value=self._codec.encode(self.dlq_topic, record), headers=list(headers)
        )

    # ---- offsets and the group ----
    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        self._tracker.assign(tp.partition for tp in partitions if tp.topic == self.calls_topic)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.assigned.set)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # On the consumer's thread, while the partitions are still ours: the calls in flight on them finish first
        # (the event loop runs them meanwhile), so their new owner never works on a key this worker still works on.
        self.rebalances += 1
        mine = [tp.partition for tp in partitions if tp.topic == self.calls_topic]
        give_up = time.monotonic() + self._drain_timeout_s
        with self._running_changed:
            while any(self._running_on[p] > 0 for p in mine) and time.monotonic() < give_up:
                self._running_changed.wait(give_up - time.monotonic())
        self._tracker.hand_over(consumer, self.calls_topic, mine)

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        self._tracker.revoke(tp.partition for tp in partitions if tp.topic == self.calls_topic)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(_COMMIT_EVERY_S)
            await self._commit()

    async def _commit(self) -> None:
        await self._tracker.commit(self._consumer, self.calls_topic)


def has_order_operations(connector: object) -> TypeGuard[OrderCapable]:
    """Whether a connector implements the order operations (an airline whose connector does not gets no order
    worker: its order calls wait on the topic)."""
    wanted = ("price", "create_order", "find_order", "retrieve_order", "cancel_order", "aclose")
    return all(callable(getattr(connector, name, None)) for name in wanted)
