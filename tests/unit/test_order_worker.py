"""The order worker without a broker: what each order call comes to at a fake airline (the create's lookups and
reconciliation, the breaker left alone by the airline's refusals, poison), what the worker writes for it and in
which order, and the airlines' own changes through the webhook route."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import structlog

from connectors.order_events import AirlineChanges, OrderEvents
from connectors.order_worker import OrderRunner, OrderWorker, Received
from connectors.orders import OrderChange, sign_body
from connectors.resilience import AirlineGuard
from connectors.service import health_report
from jetbridge.airlines import ORDER_CREATE, Airline, RetryPolicy, load_registry
from jetbridge.errors import ConfigurationError, KafkaError
from jetbridge.health import HealthServer
from jetbridge.pii import PiiSeal
from jetbridge.topics import TopicNames
from schemas.codec import AvroCodec
from schemas.models import (
    ChangeSource,
    DeadLetter,
    OrderCall,
    OrderEvent,
    OrderOperation,
    OrderReply,
    OrderReplyStatus,
    OrderState,
    OrderStatus,
    now_utc,
)
from schemas.registry import SchemaRegistryClient
from tests.support.order_double import WEBHOOK_SECRET, FakeOrderAirline, WebhookAirline, party, party_json
from tests.support.registry_double import RegistryDouble

CODE = "ZZ"
AIRLINE = Airline(code=CODE, name="Test Air", kind="fake", endpoint="http://127.0.0.1:9", timeout_ms=2000)
SEAL = PiiSeal(b"k" * 32)
NAMES = (b"Ingrid", b"Marlowe", b"ingrid.mq", b"XK99", b"912 34")


class FakeClock:
    """Monotonic time that moves only when the airline times out or the guard sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


class View:
    """The process's view of jb.orders.v1, in memory."""

    def __init__(self, known: Sequence[OrderEvent] = ()) -> None:
        self.orders = {e.order_id: e for e in known}
        self.caught_up = asyncio.Event()
        self.caught_up.set()
        self.noted = asyncio.Event()

    def get(self, order_id: str) -> OrderEvent | None:
        return self.orders.get(order_id)

    def note(self, event: OrderEvent) -> None:
        self.orders[event.order_id] = event
        self.noted.set()

    async def wait_for(self, order_id: str, timeout_s: float) -> OrderEvent | None:
        return self.orders.get(order_id)


def call(operation: OrderOperation = OrderOperation.CREATE, **overrides: Any) -> OrderCall:
    request_id = overrides.pop("request_id", "r-1")
    values: dict[str, Any] = {
        "request_id": request_id,
        "correlation_id": "c-1",
        "client_id": "acme",
        "reply_to": "bridge-1",
        "airline": CODE,
        "operation": operation,
        "deadline": now_utc() + timedelta(seconds=20),
        "created_at": now_utc(),
    }
    if operation is OrderOperation.CREATE:
        values |= {
            "offer_id": "off-1",
            "idempotency_key": "key-1",
            "accepted_total": Decimal("420.00"),
            "currency": "EUR",
            "passenger_count": 1,
            "passengers_sealed": SEAL.seal(party_json(party()), bound_to=request_id),
        }
    elif operation is OrderOperation.PRICE:
        values["offer_id"] = "off-1"
    return OrderCall(**(values | overrides))


def runner(
    airline: FakeOrderAirline, clock: FakeClock, view: View | None = None, registry: Airline = AIRLINE
) -> OrderRunner:
    guard = AirlineGuard(registry, instance="t", clock=clock)
    return OrderRunner(registry, airline, guard, SEAL, view=view or View(), clock=clock)


def order_event(state: OrderState, client_id: str = "acme") -> OrderEvent:
    return OrderEvent(
        order_id=f"{CODE}:{state.order_id}",
        client_id=client_id,
        order=state,
        change="created",
        changed_by=ChangeSource.AGENT,
        at=now_utc(),
    )


async def made_order(airline: FakeOrderAirline, reference: str = "key-0") -> OrderState:
    return await airline.create_order(
        "off-0",
        party(),
        accepted_total=Decimal("500"),
        currency="EUR",
        client_reference=reference,
        request_id="setup",
        timeout_s=1,
    )


# ---- create: look up first, reconcile unknown outcomes ----


async def test_create_finds_the_order_an_earlier_attempt_made_and_does_not_create_again() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(advance=clock.advance)
    earlier = await made_order(airline, "key-1")
    airline.calls.clear()

    handled = await runner(airline, clock).run(call())

    assert airline.calls == ["find"]
    assert handled.reply.status is OrderReplyStatus.OK
    assert handled.reply.reconciled
    assert handled.reply.order == earlier
    assert handled.event is not None
    assert handled.event.change == "created"
    assert handled.event.client_id == "acme"
    assert handled.failure is None


async def test_create_makes_one_order_with_the_opened_passengers_and_the_key_as_reference() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(advance=clock.advance)

    handled = await runner(airline, clock).run(call())

    assert airline.calls == ["find", "create"]
    (made,) = airline.orders.values()
    assert made.party == party()
    assert made.state.client_reference == "key-1"
    assert handled.reply.status is OrderReplyStatus.OK
    assert not handled.reply.reconciled
    assert handled.reply.order == made.state
    assert handled.reply.attempts == 2
    assert handled.event is not None
    assert handled.event.order_id == f"{CODE}:{made.state.order_id}"
    assert handled.event.changed_by is ChangeSource.AGENT
    assert handled.event.request_id == "r-1"


async def test_create_that_times_out_after_the_airline_made_it_is_found_and_not_made_twice() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(create_script=["made_then_timeout"], advance=clock.advance)

    handled = await runner(airline, clock).run(call())

    assert airline.calls == ["find", "create", "find"]
    assert len(airline.orders_for("key-1")) == 1
    assert handled.reply.status is OrderReplyStatus.OK
    assert handled.reply.reconciled
    assert handled.event is not None
    assert handled.event.change == "created"


async def test_create_that_times_out_unmade_is_looked_up_then_created_again_with_the_same_reference() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(create_script=["timeout", "unavailable"], advance=clock.advance)

    handled = await runner(airline, clock).run(call())

    # Never two creates without a lookup between them.
    assert airline.calls == ["find", "create", "find", "create", "find", "create"]
    assert [s.client_reference for s in airline.orders_for("key-1")] == ["key-1"]
    assert handled.reply.status is OrderReplyStatus.OK
    assert not handled.reply.reconciled


async def test_create_whose_lookup_fails_after_a_timeout_is_unknown_and_retriable() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(
        create_script=["made_then_timeout"], advance=clock.advance, lookups_fail_after_create=True
    )

    handled = await runner(airline, clock).run(call())

    assert airline.calls.count("create") == 1
    assert handled.reply.status is OrderReplyStatus.UNKNOWN
    assert handled.reply.error is not None
    assert handled.reply.error.code == "order_outcome_unknown"
    assert handled.reply.error.retriable
    assert handled.event is None
    assert handled.failure is not None  # kept for an operator's replay (which looks it up first too)


async def test_create_is_unknown_when_the_budget_is_gone_after_a_timeout_and_nothing_is_found() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(create_script=["timeout"], advance=clock.advance, find_takes_s=0.3)
    # A 2 s create that times out and a 0.3 s lookup leave too little of the budget for another create.
    tight = call(deadline=now_utc() + timedelta(seconds=2.9))

    handled = await runner(airline, clock).run(tight)

    assert airline.calls.count("create") == 1
    assert airline.calls == ["find", "create", "find"]
    assert handled.reply.status is OrderReplyStatus.UNKNOWN
    assert not airline.orders


async def test_create_is_refused_without_creating_when_the_first_lookup_fails() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(find_failures=5, advance=clock.advance)

    handled = await runner(airline, clock).run(call())

    assert "create" not in airline.calls
    assert handled.reply.status is OrderReplyStatus.ERROR
    assert handled.reply.error is not None
    assert handled.reply.error.code == "airline_unavailable"
    assert handled.reply.error.retriable


async def test_same_idempotency_key_twice_at_once_makes_one_order() -> None:
    clock = FakeClock()
    hold = asyncio.Event()
    airline = FakeOrderAirline(advance=clock.advance, create_hold=hold)
    run = runner(airline, clock)

    first = asyncio.create_task(run.run(call(request_id="r-1")))
    second = asyncio.create_task(run.run(call(request_id="r-2")))
    await asyncio.sleep(0.05)
    assert airline.calls == ["find", "create"]  # the second waits for the key
    hold.set()
    answers = await asyncio.gather(first, second)

    assert len(airline.orders) == 1
    assert [a.reply.reconciled for a in answers] == [False, True]
    assert answers[0].reply.order == answers[1].reply.order


async def test_price_changed_is_an_error_naming_the_new_total_and_never_a_breaker_failure() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(advance=clock.advance)
    airline.price_amount = Decimal("455.10")
    run = runner(airline, clock)

    answers = [await run.run(call(request_id=f"r-{i}", idempotency_key=f"k-{i}")) for i in range(12)]

    error = answers[0].reply.error
    assert answers[0].reply.status is OrderReplyStatus.ERROR
    assert error is not None
    assert error.code == "price_changed"
    assert "455.10" in error.message
    assert all(a.failure is None for a in answers)  # an answer, not a dead letter
    failure_rate, _, calls = run.guard.breaker.window_rates()
    assert calls >= 12
    assert failure_rate == 0.0
    assert run.guard.snapshot()["state"] == "closed"


async def test_sold_out_and_unknown_offer_are_answers_not_dead_letters() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(create_script=["sold_out"], advance=clock.advance)
    run = runner(airline, clock)

    sold_out = await run.run(call())
    gone = await run.run(call(OrderOperation.PRICE, offer_id="gone-1"))

    assert sold_out.reply.error is not None
    assert sold_out.reply.error.code == "seats_unavailable"
    assert gone.reply.error is not None
    assert gone.reply.error.code == "offer_unavailable"
    assert sold_out.failure is None
    assert gone.failure is None


def test_a_registry_that_retries_creates_blindly_is_refused() -> None:
    retried = Airline(
        code=CODE, name="T", kind="fake", endpoint="http://127.0.0.1:9", retry={ORDER_CREATE: RetryPolicy()}
    )
    clock = FakeClock()
    with pytest.raises(ConfigurationError, match="max_attempts 1"):
        OrderRunner(retried, FakeOrderAirline(), AirlineGuard(retried, instance="t", clock=clock), SEAL)


def test_the_registry_file_refuses_a_create_policy_with_retries(tmp_path: Any) -> None:
    path = tmp_path / "airlines.toml"
    path.write_text('[defaults.retry.order_create]\nmax_attempts = 2\n[airlines.ZZ]\nname = "T"\nkind = "ndc"\n'
                    'endpoint = "https://zz.example"\nroutes = []\n')  # fmt: skip
    with pytest.raises(ConfigurationError, match="max_attempts must be 1"):
        load_registry(path)


# ---- price, retrieve, cancel ----


async def test_price_answers_the_priced_offer() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(advance=clock.advance)

    handled = await runner(airline, clock).run(call(OrderOperation.PRICE))

    assert handled.reply.status is OrderReplyStatus.OK
    assert handled.reply.price is not None
    assert handled.reply.price.total_amount == Decimal("420.00")
    assert handled.event is None


async def test_retrieve_publishes_an_event_only_when_the_order_changed_since_the_view_saw_it() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(advance=clock.advance)
    state = await made_order(airline)
    view = View([order_event(state)])
    run = runner(airline, clock, view)

    same = await run.run(call(OrderOperation.RETRIEVE, order_id=state.order_id))
    airline.change(state.order_id, OrderStatus.CHANGED, flights=["ZZ100 OSL-LHR 2026-12-01T09:05"])
    changed = await run.run(call(OrderOperation.RETRIEVE, order_id=state.order_id))

    assert same.reply.status is OrderReplyStatus.OK
    assert same.event is None
    assert changed.event is not None
    assert changed.event.change == "retrieved"
    assert changed.event.order.status is OrderStatus.CHANGED


async def test_retrieve_or_cancel_of_another_clients_order_is_not_found_without_asking_the_airline() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(advance=clock.advance)
    state = await made_order(airline)
    run = runner(airline, clock, View([order_event(state, client_id="globex")]))
    airline.calls.clear()

    answers = [
        await run.run(call(op, order_id=state.order_id)) for op in (OrderOperation.RETRIEVE, OrderOperation.CANCEL)
    ]

    assert airline.calls == []
    assert all(a.reply.error is not None and a.reply.error.code == "order_not_found" for a in answers)
    assert airline.orders[state.order_id].state.status is OrderStatus.CONFIRMED


async def test_cancel_answers_the_cancelled_order_with_an_event() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(advance=clock.advance)
    state = await made_order(airline)

    handled = await runner(airline, clock).run(call(OrderOperation.CANCEL, order_id=state.order_id))

    assert handled.reply.status is OrderReplyStatus.OK
    assert handled.event is not None
    assert handled.event.change == "cancelled"
    assert handled.event.order.status is OrderStatus.CANCELLED


async def test_cancel_that_times_out_is_settled_by_retrieving_the_order() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(cancel_script=["done_then_timeout", "done_then_timeout"], advance=clock.advance)
    state = await made_order(airline)

    handled = await runner(airline, clock).run(call(OrderOperation.CANCEL, order_id=state.order_id))

    assert airline.calls[-1] == "retrieve"
    assert handled.reply.status is OrderReplyStatus.OK
    assert handled.reply.reconciled
    assert handled.event is not None
    assert handled.event.change == "cancelled"


async def test_cancel_whose_outcome_cannot_be_looked_up_is_unknown() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(
        cancel_script=["not_done_timeout", "not_done_timeout"], retrieve_failures=5, advance=clock.advance
    )
    state = await made_order(airline)

    handled = await runner(airline, clock).run(call(OrderOperation.CANCEL, order_id=state.order_id))

    assert handled.reply.status is OrderReplyStatus.UNKNOWN
    assert handled.event is None


async def test_retrieve_of_an_order_the_airline_does_not_have_is_not_found() -> None:
    clock = FakeClock()
    handled = await runner(FakeOrderAirline(advance=clock.advance), clock).run(
        call(OrderOperation.RETRIEVE, order_id="NOPE01")
    )
    assert handled.reply.error is not None
    assert handled.reply.error.code == "order_not_found"
    assert handled.failure is None


# ---- poison ----


async def test_passengers_sealed_for_another_call_do_not_open_and_nothing_is_created() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(advance=clock.advance)
    moved = call(passengers_sealed=SEAL.seal(party_json(party()), bound_to="another-request"))

    handled = await runner(airline, clock).run(moved)

    assert airline.calls == []
    assert handled.reply.status is OrderReplyStatus.ERROR
    assert handled.reply.error is not None
    assert handled.reply.error.code == "decode"
    assert handled.failure is not None


async def test_passengers_that_do_not_validate_are_poison_and_no_value_is_quoted() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(advance=clock.advance)
    data = json.loads(party_json(party()))
    data["passengers"][0]["date_of_birth"] = "Ingrid Marlowe-Quist"  # a name where a date should be
    bad = call(passengers_sealed=SEAL.seal(json.dumps(data).encode(), bound_to="r-1"))

    with structlog.testing.capture_logs() as logs:
        handled = await runner(airline, clock).run(bad)

    assert airline.calls == []
    assert handled.reply.error is not None
    assert handled.reply.error.code == "decode"
    assert "passengers.0.date_of_birth" in handled.reply.error.message
    said = handled.reply.error.message + repr(logs) + str(handled.failure)
    assert not any(name.decode() in said for name in NAMES)


async def test_a_create_without_its_idempotency_key_is_refused_as_poison() -> None:
    clock = FakeClock()
    airline = FakeOrderAirline(advance=clock.advance)

    handled = await runner(airline, clock).run(call(idempotency_key=None))

    assert airline.calls == []
    assert handled.reply.error is not None
    assert handled.reply.error.code == "invalid_input"
    assert "idempotency_key" in handled.reply.error.message
    assert handled.failure is not None


# ---- the worker: what it writes, in which order ----


@dataclass
class Sent:
    topic: str
    key: bytes | str | None
    value: bytes | None
    headers: list[tuple[str, Any]]


@dataclass
class FakeProducer:
    sent: list[Sent] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def send(
        self, topic: str, *, key: bytes | str | None, value: bytes | None, headers: Sequence[Any] | None = None
    ) -> None:
        if topic in self.refuse:
            raise KafkaError(f"produce to {topic} failed: test")
        self.sent.append(Sent(topic, key, value, list(headers or [])))


NAMES_T = TopicNames("u.")


@pytest.fixture
async def codec() -> AsyncIterator[AvroCodec]:
    registry = RegistryDouble()
    async with registry.client() as http:
        made = AvroCodec(SchemaRegistryClient("http://registry.test", http))
        for topic, model in (
            (NAMES_T.order_calls(CODE), OrderCall),
            (NAMES_T.order_replies, OrderReply),
            (NAMES_T.orders, OrderEvent),
            (NAMES_T.dlq, DeadLetter),
        ):
            await made.register(topic, model)
        yield made


def worker(codec: AvroCodec, producer: FakeProducer, airline: FakeOrderAirline, clock: FakeClock) -> OrderWorker:
    view = View()
    return OrderWorker(
        AIRLINE,
        codec=codec,
        producer=producer,  # type: ignore[arg-type]  # the fake has send(), all the worker uses
        consumer_config={"bootstrap.servers": "127.0.0.1:1"},
        connector=airline,
        seal=SEAL,
        events=OrderEvents(NAMES_T.orders, codec, producer, view),  # type: ignore[arg-type]  # as above
        calls_topic=NAMES_T.order_calls(CODE),
        replies_topic=NAMES_T.order_replies,
        dlq_topic=NAMES_T.dlq,
        clock=clock,
    )


def received(value: bytes, offset: int = 7) -> Received:
    headers: list[tuple[str, str | bytes | None]] = [
        ("request_id", b"r-1"),
        ("correlation_id", b"c-1"),
        ("reply_to", b"bridge-1"),
    ]
    return Received(NAMES_T.order_calls(CODE), 0, offset, b"key-1", value, headers)


async def test_worker_writes_event_before_reply_keyed_and_with_the_calls_headers(codec: AvroCodec) -> None:
    producer, clock = FakeProducer(), FakeClock()
    w = worker(codec, producer, FakeOrderAirline(advance=clock.advance), clock)
    record = received(codec.encode(NAMES_T.order_calls(CODE), call()))

    handled = await w.process(record, {"request_id": "r-1"})

    assert [s.topic for s in producer.sent] == [NAMES_T.orders, NAMES_T.order_replies]
    event, reply = producer.sent
    assert handled is not None
    assert handled.event is not None
    assert event.key == handled.event.order_id
    assert reply.key == "r-1"
    assert reply.headers == record.headers
    assert event.headers == record.headers
    decoded = await codec.decode(reply.value, OrderReply)
    assert decoded.status is OrderReplyStatus.OK
    assert decoded.reply_to == "bridge-1"
    for sent in producer.sent:
        assert not any(name in (sent.value or b"") for name in NAMES)


async def test_worker_dead_letters_an_undecodable_call_byte_for_byte_and_replies_nothing(codec: AvroCodec) -> None:
    producer, clock = FakeProducer(), FakeClock()
    w = worker(codec, producer, FakeOrderAirline(advance=clock.advance), clock)

    handled = await w.process(received(b"\x00garbage"), {"request_id": "r-1"})

    assert handled is None
    (dlq,) = producer.sent
    letter = await codec.decode(dlq.value, DeadLetter)
    assert dlq.topic == NAMES_T.dlq
    assert letter.payload == b"\x00garbage"
    assert letter.stage == "orders.ZZ"


async def test_worker_answers_and_dead_letters_a_call_whose_passengers_do_not_open(codec: AvroCodec) -> None:
    producer, clock = FakeProducer(), FakeClock()
    airline = FakeOrderAirline(advance=clock.advance)
    w = worker(codec, producer, airline, clock)
    value = codec.encode(NAMES_T.order_calls(CODE), call(passengers_sealed=b"JBP1" + b"\x01" * 40))

    await w.process(received(value), {"request_id": "r-1"})

    assert [s.topic for s in producer.sent] == [NAMES_T.order_replies, NAMES_T.dlq]
    reply = await codec.decode(producer.sent[0].value, OrderReply)
    letter = await codec.decode(producer.sent[1].value, DeadLetter)
    assert reply.status is OrderReplyStatus.ERROR
    assert reply.error is not None
    assert reply.error.code == "decode"
    assert letter.payload == value
    assert letter.error_code == "decode"
    assert airline.calls == []


async def test_worker_does_not_tell_an_order_made_when_its_event_cannot_be_written(codec: AvroCodec) -> None:
    producer, clock = FakeProducer(refuse={NAMES_T.orders}), FakeClock()
    airline = FakeOrderAirline(advance=clock.advance)
    w = worker(codec, producer, airline, clock)

    await w.process(received(codec.encode(NAMES_T.order_calls(CODE), call())), {"request_id": "r-1"})

    assert [s.topic for s in producer.sent] == [NAMES_T.order_replies, NAMES_T.dlq]
    reply = await codec.decode(producer.sent[0].value, OrderReply)
    assert reply.status is OrderReplyStatus.ERROR
    assert reply.error is not None
    assert reply.error.retriable
    # The same call again finds the order instead of making a second one.
    producer.refuse.clear()
    handled = await w.process(received(codec.encode(NAMES_T.order_calls(CODE), call(request_id="r-1"))), {})
    assert handled is not None
    assert handled.reply.reconciled
    assert len(airline.orders) == 1


# ---- airline changes: the webhook route ----


def change_body(state: OrderState) -> bytes:
    return WebhookAirline.body(state.model_copy(update={"status": OrderStatus.CHANGED}))


async def webhook_fixture(known: bool = True) -> tuple[WebhookAirline, OrderState, View, FakeProducer, AirlineChanges]:
    airline = WebhookAirline()
    state = await made_order(airline)
    view = View([order_event(state)] if known else [])
    producer = FakeProducer()
    codec = AvroCodec(SchemaRegistryClient("http://registry.test", RegistryDouble().client()))
    await codec.register(NAMES_T.orders, OrderEvent)
    events = OrderEvents(NAMES_T.orders, codec, producer, view)  # type: ignore[arg-type]  # a fake producer
    return airline, state, view, producer, AirlineChanges({CODE: airline, "QQ": FakeOrderAirline("QQ")}, events)


async def test_webhook_publishes_the_airlines_change_for_the_orders_client() -> None:
    _airline, state, view, producer, changes = await webhook_fixture()
    body = change_body(state)

    answer = await changes.webhook(
        f"/webhooks/{CODE}", {"x-jetbridge-signature": sign_body(body, WEBHOOK_SECRET)}, body
    )

    assert answer[0] == 202
    (sent,) = producer.sent
    assert sent.key == f"{CODE}:{state.order_id}"
    event = view.orders[f"{CODE}:{state.order_id}"]
    assert event.client_id == "acme"
    assert event.changed_by is ChangeSource.AIRLINE
    assert event.change == "schedule_change"
    assert event.reason == "retimed"


@pytest.mark.parametrize(
    ("path", "signature", "body", "status"),
    [
        ("/webhooks/ZZ", "sha256=" + "0" * 64, None, 401),
        ("/webhooks/ZZ", None, None, 401),
        ("/webhooks/XX", "good", None, 404),
        ("/webhooks/QQ", "good", None, 404),  # its connector takes no webhooks
        ("/webhooks/ZZ", "good", b'{"order": 1}', 400),
    ],
)
async def test_webhook_refusals(path: str, signature: str | None, body: bytes | None, status: int) -> None:
    _, state, _, producer, changes = await webhook_fixture()
    body = body if body is not None else change_body(state)
    headers = {} if signature is None else {"x-jetbridge-signature": signature}
    if signature == "good":
        headers["x-jetbridge-signature"] = sign_body(body, WEBHOOK_SECRET)

    answer = await changes.webhook(path, headers, body)

    assert answer[0] == status
    assert producer.sent == []


async def test_webhook_for_an_order_jetbridge_does_not_know_publishes_nothing() -> None:
    _, state, _, producer, changes = await webhook_fixture(known=False)
    body = change_body(state)

    answer = await changes.webhook("/webhooks/ZZ", {"x-jetbridge-signature": sign_body(body, WEBHOOK_SECRET)}, body)

    assert answer[0] == 202
    assert b"not an order made through Jetbridge" in answer[2]
    assert producer.sent == []


async def test_webhook_answers_503_while_the_broker_refuses_or_the_view_is_not_read() -> None:
    _, state, view, producer, changes = await webhook_fixture()
    body = change_body(state)
    signed = {"x-jetbridge-signature": sign_body(body, WEBHOOK_SECRET)}

    producer.refuse.add(NAMES_T.orders)
    assert (await changes.webhook("/webhooks/ZZ", signed, body))[0] == 503
    producer.refuse.clear()
    view.caught_up.clear()
    assert (await changes.webhook("/webhooks/ZZ", signed, body))[0] == 503
    assert producer.sent == []


async def test_a_failing_watcher_is_restarted_and_its_changes_published() -> None:
    state = await made_order(FakeOrderAirline())
    view = View([order_event(state)])
    producer = FakeProducer()
    codec = AvroCodec(SchemaRegistryClient("http://registry.test", RegistryDouble().client()))
    await codec.register(NAMES_T.orders, OrderEvent)

    class Watcher(FakeOrderAirline):
        runs = 0

        async def watch_orders(self, on_change: Any) -> None:
            Watcher.runs += 1
            if Watcher.runs == 1:
                raise ConnectionError("session dropped")
            await on_change(OrderChange(order=state, change="airline_cancellation", at=datetime.now(UTC)))
            await asyncio.Event().wait()

    changes = AirlineChanges({CODE: Watcher()}, OrderEvents(NAMES_T.orders, codec, producer, view))  # type: ignore[arg-type]
    changes.start_watchers()
    try:
        async with asyncio.timeout(5):
            await view.noted.wait()
    finally:
        await changes.close()
    assert Watcher.runs == 2
    assert view.orders[f"{CODE}:{state.order_id}"].change == "airline_cancellation"


# ---- the health server takes the webhook's POST ----


async def test_health_server_hands_a_post_its_headers_and_body() -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handler(path: str, headers: Any, body: bytes) -> tuple[int, str, bytes]:
        seen.append((path, dict(headers), body))
        return 202, "text/plain", b"accepted\n"

    server = HealthServer(0, lambda: {"status": "ok"})
    server.post_route("/webhooks/", handler)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            posted = await http.post("/webhooks/ZZ", content=b'{"a": 1}', headers={"X-Jetbridge-Signature": "s"})
            got = await http.get("/webhooks/ZZ")
            health = await http.get("/health")
            big = await http.post("/webhooks/ZZ", content=b"x" * 1_000_001)
    finally:
        await server.close()
    assert posted.status_code == 202
    assert seen == [("/webhooks/ZZ", seen[0][1], b'{"a": 1}')]
    assert seen[0][1]["x-jetbridge-signature"] == "s"
    assert got.status_code == 405
    assert health.status_code == 200
    assert big.status_code == 413


async def test_process_health_waits_for_the_order_workers_and_shows_them(codec: AvroCodec) -> None:
    clock = FakeClock()
    order_worker = worker(codec, FakeProducer(), FakeOrderAirline(advance=clock.advance), clock)

    starting = health_report([], [], "connectors-test", orders=[order_worker])
    order_worker.assigned.set()
    ready = health_report([], [], "connectors-test", orders=[order_worker])

    assert starting["status"] == "starting"
    assert ready["status"] == "ok"
    assert ready["orders"][CODE]["placed"] is True
    assert ready["orders"][CODE]["dlq"]["stalled"] is False
