"""On real Kafka, with topics and a consumer group of each test's own and a fake airline order system: every order
operation answered once with its order events, creates reconciled into exactly one order per idempotency key (after
a timeout, for a key sent twice, with one or two workers in the group), poison dead-lettered while the worker goes
on, no passenger data readable on any topic, and an airline's webhook change on jb.orders.v1 within a second."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from connectors.order_events import AirlineChanges, OrderEvents
from connectors.order_worker import OrderWorker
from connectors.orders import sign_body
from jetbridge.airlines import Airline
from jetbridge.health import HealthServer
from jetbridge.http import build_http_client
from jetbridge.kafka import AsyncProducer, apply_topics
from jetbridge.order_book import OrderBook
from jetbridge.pii import PiiSeal
from jetbridge.runtime import open_codec
from jetbridge.settings import Settings
from jetbridge.topics import TopicNames, TopicSpec
from schemas.codec import AvroCodec
from schemas.models import (
    ChangeSource,
    DeadLetter,
    OrderCall,
    OrderEvent,
    OrderOperation,
    OrderReply,
    OrderReplyStatus,
    OrderStatus,
    now_utc,
)
from tests.support.kafka_tools import KafkaProbe
from tests.support.order_double import WEBHOOK_SECRET, FakeOrderAirline, WebhookAirline, party, party_json

pytestmark = pytest.mark.kafka

CODE = "ZZ"
HOUR_MS = 3_600_000
AIRLINE = Airline(code=CODE, name="Test Air", kind="fake", endpoint="http://127.0.0.1:9", timeout_ms=5000)
# Every passenger field of tests.support.order_double.party(), as it would appear in readable bytes.
PERSONAL = (b"Ingrid", b"Marlowe-Quist", b"ingrid.mq@example.org", b"+47 912 34 567", b"XK99", b"1984-03-09")


@dataclass
class Lane:
    """One test's own topics, group, codec, producer, view of the orders and passenger-data key."""

    settings: Settings
    names: TopicNames
    codec: AvroCodec
    producer: AsyncProducer
    view: OrderBook
    events: OrderEvents
    seal: PiiSeal = field(default_factory=lambda: PiiSeal(os.urandom(32)))
    running: list[tuple[OrderWorker, asyncio.Task[None]]] = field(default_factory=list)

    @property
    def calls_topic(self) -> str:
        return self.names.order_calls(CODE)

    def worker(self, airline: FakeOrderAirline, **options: Any) -> OrderWorker:
        values: dict[str, Any] = {
            "codec": self.codec,
            "producer": self.producer,
            "consumer_config": {"bootstrap.servers": self.settings.kafka_bootstrap_servers},
            "connector": airline,
            "seal": self.seal,
            "events": self.events,
            "calls_topic": self.calls_topic,
            "replies_topic": self.names.order_replies,
            "dlq_topic": self.names.dlq,
            "group_id": f"{self.names.prefix}jb.orders.{CODE}",
            "session_timeout_ms": self.settings.group_session_timeout_ms,
        }
        return OrderWorker(AIRLINE, **(values | options))

    async def start(self, *workers: OrderWorker) -> None:
        for worker in workers:
            self.running.append((worker, asyncio.create_task(worker.run())))
        async with asyncio.timeout(30):
            for worker in workers:
                await worker.assigned.wait()

    def call(self, operation: OrderOperation, request_id: str, **fields: Any) -> OrderCall:
        values: dict[str, Any] = {
            "request_id": request_id,
            "correlation_id": f"conv-{request_id}",
            "client_id": "acme",
            "reply_to": "bridge-test",
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
                "passengers_sealed": self.seal.seal(party_json(party()), bound_to=request_id),
            }
        return OrderCall(**(values | fields))

    async def send(self, call: OrderCall) -> None:
        await self.send_raw(call.subject().encode(), self.codec.encode(self.calls_topic, call), call)

    async def send_raw(self, key: bytes, value: bytes, call: OrderCall) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            ("request_id", call.request_id.encode()),
            ("correlation_id", call.correlation_id.encode()),
            ("client_id", call.client_id.encode()),
            ("reply_to", call.reply_to.encode()),
            ("deadline_ms", str(int(call.deadline.timestamp() * 1000)).encode()),
        ]
        await self.producer.send(self.calls_topic, key=key, value=value, headers=headers)

    async def read(self, kafka: KafkaProbe, topic: str, want: Callable[[list[Message]], bool]) -> list[Message]:
        """Every record of ``topic`` from its start, read again until ``want`` holds (20 s at most)."""
        ends = await kafka.end_offsets(topic)
        async with asyncio.timeout(20):
            while True:
                found = await kafka.read_since(topic, dict.fromkeys(ends, 0), until_s=0.3, want=want)
                if want(found):
                    return found

    async def replies(self, kafka: KafkaProbe, request_ids: set[str]) -> dict[str, list[OrderReply]]:
        """The replies to ``request_ids`` (all of them there), each request's in a list (to count them)."""

        def decoded(messages: list[Message]) -> set[str]:
            return {m.key().decode() for m in messages if m.key() is not None}  # type: ignore[union-attr]

        messages = await self.read(kafka, self.names.order_replies, lambda ms: request_ids <= decoded(ms))
        answers: dict[str, list[OrderReply]] = {}
        for message in messages:
            reply = await self.codec.decode(message.value(), OrderReply)
            answers.setdefault(reply.request_id, []).append(reply)
        return answers

    async def order_events(self, kafka: KafkaProbe, count: int) -> list[OrderEvent]:
        messages = await self.read(kafka, self.names.orders, lambda ms: len(ms) >= count)
        return [await self.codec.decode(m.value(), OrderEvent) for m in messages]

    async def committed(self) -> int:
        """The group's committed offsets on the calls topic, summed (a partition with none counts 0)."""

        def fetch() -> int:
            consumer = Consumer(
                {
                    "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                    "group.id": f"{self.names.prefix}jb.orders.{CODE}",
                }
            )
            try:
                found = consumer.committed([TopicPartition(self.calls_topic, p) for p in (0, 1)], timeout=10)
                return sum(max(tp.offset, 0) for tp in found)
            finally:
                consumer.close()

        return await asyncio.to_thread(fetch)


@pytest.fixture
async def lane(settings: Settings) -> AsyncIterator[Lane]:
    names = TopicNames(f"t{uuid.uuid4().hex[:8]}.")
    specs = [
        TopicSpec(names.order_calls(CODE), OrderCall, 2, HOUR_MS),
        TopicSpec(names.order_replies, OrderReply, 3, HOUR_MS),
        TopicSpec(names.orders, OrderEvent, 1, HOUR_MS, cleanup_policy="compact"),
        TopicSpec(names.dlq, DeadLetter, 1, HOUR_MS),
    ]
    config = {"bootstrap.servers": settings.kafka_bootstrap_servers}
    await apply_topics(config, specs)
    http = build_http_client()
    codec = await open_codec(settings, specs, http)
    producer = AsyncProducer(config)
    view = OrderBook(names.orders, codec, config)
    await view.start(catch_up_s=10)
    made = Lane(settings, names, codec, producer, view, OrderEvents(names.orders, codec, producer, view))
    try:
        yield made
    finally:
        for worker, _ in made.running:
            worker.stop()
        await asyncio.wait_for(asyncio.gather(*(task for _, task in made.running)), 30)
        await view.close()
        await producer.close()
        await http.aclose()


async def test_every_operation_is_answered_once_with_the_orders_events(lane: Lane, kafka: KafkaProbe) -> None:
    airline = FakeOrderAirline()
    await lane.start(lane.worker(airline))

    await lane.send(lane.call(OrderOperation.PRICE, "price-1", offer_id="off-1"))
    await lane.send(lane.call(OrderOperation.CREATE, "create-1"))
    created = (await lane.replies(kafka, {"price-1", "create-1"}))["create-1"][0]
    assert created.order is not None
    order_id = created.order.order_id
    await lane.send(lane.call(OrderOperation.RETRIEVE, "get-same", order_id=order_id))
    await lane.replies(kafka, {"get-same"})
    airline.change(order_id, OrderStatus.CHANGED, flights=["ZZ100 OSL-LHR 2026-12-01T09:05"])
    await lane.send(lane.call(OrderOperation.RETRIEVE, "get-changed", order_id=order_id))
    await lane.send(lane.call(OrderOperation.CANCEL, "cancel-1", order_id=order_id))

    every = {"price-1", "create-1", "get-same", "get-changed", "cancel-1"}
    answers = await lane.replies(kafka, every)
    assert {rid: len(replies) for rid, replies in answers.items()} == dict.fromkeys(every, 1)
    assert all(replies[0].status is OrderReplyStatus.OK for replies in answers.values())
    assert answers["price-1"][0].price is not None
    assert answers["price-1"][0].price.total_amount == Decimal("420.00")
    assert answers["cancel-1"][0].order is not None
    assert answers["cancel-1"][0].order.status is OrderStatus.CANCELLED
    assert answers["create-1"][0].reply_to == "bridge-test"
    events = await lane.order_events(kafka, 3)
    # A retrieve that found the order as the topic has it published nothing.
    assert [(e.change, e.request_id) for e in events] == [
        ("created", "create-1"),
        ("retrieved", "get-changed"),
        ("cancelled", "cancel-1"),
    ]
    assert {e.order_id for e in events} == {f"{CODE}:{order_id}"}
    assert all(e.client_id == "acme" and e.changed_by is ChangeSource.AGENT for e in events)
    async with asyncio.timeout(10):
        while True:
            if await lane.committed() == 5:  # every call's offset, once its reply was acknowledged
                break
            await asyncio.sleep(0.1)


async def test_a_create_timing_out_after_the_airline_made_it_and_its_repeat_leave_one_order(
    lane: Lane, kafka: KafkaProbe
) -> None:
    airline = FakeOrderAirline(create_script=["made_then_timeout"])
    await lane.start(lane.worker(airline))

    await lane.send(lane.call(OrderOperation.CREATE, "create-1"))
    first = (await lane.replies(kafka, {"create-1"}))["create-1"]
    await lane.send(lane.call(OrderOperation.CREATE, "create-again"))  # the agent asks again with the same key
    again = (await lane.replies(kafka, {"create-again"}))["create-again"]

    assert len(airline.orders_for("key-1")) == 1
    assert airline.calls == ["find", "create", "find", "find"]
    assert [(r.status, r.reconciled) for r in first + again] == [(OrderReplyStatus.OK, True)] * 2
    assert first[0].order == again[0].order


@pytest.mark.parametrize("workers", [1, 2])
async def test_each_idempotency_key_sent_twice_makes_one_order_whatever_the_workers_in_the_group(
    lane: Lane, kafka: KafkaProbe, workers: int
) -> None:
    airline = FakeOrderAirline()  # the one airline both workers call
    await lane.start(*(lane.worker(airline) for _ in range(workers)))
    async with asyncio.timeout(30):
        while True:  # a member is placed before the group's second round gives it its partition: wait for that
            if [len(w.health()["partitions"]) for w, _ in lane.running] == [2 // workers] * workers:
                break
            await asyncio.sleep(0.1)
    keys = [f"key-{i}" for i in range(6)]

    for round_ in ("a", "b"):
        for key in keys:
            await lane.send(lane.call(OrderOperation.CREATE, f"{key}-{round_}", idempotency_key=key))

    answers = await lane.replies(kafka, {f"{k}-{r}" for k in keys for r in "ab"})
    assert all(len(replies) == 1 for replies in answers.values())
    assert all(replies[0].status is OrderReplyStatus.OK for replies in answers.values())
    assert {key: len(airline.orders_for(key)) for key in keys} == dict.fromkeys(keys, 1)
    assert sorted(answers[f"{k}-b"][0].reconciled for k in keys) == [True] * 6


async def test_poison_is_dead_lettered_the_worker_answers_the_next_call_and_no_passenger_data_is_readable(
    lane: Lane, kafka: KafkaProbe
) -> None:
    airline = FakeOrderAirline()
    await lane.start(lane.worker(airline, concurrency=1))
    garbage = lane.call(OrderOperation.PRICE, "garbage-1", offer_id="off-1")
    await lane.send_raw(b"off-1", b"\x00\x00\x00\x00\x07not an order call", garbage)
    # Sealed for another request: it does not open here.
    moved = lane.call(OrderOperation.CREATE, "moved-1")
    moved = moved.model_copy(update={"passengers_sealed": lane.seal.seal(party_json(party()), bound_to="other")})
    await lane.send(moved)
    await lane.send(lane.call(OrderOperation.CREATE, "create-1"))

    answers = await lane.replies(kafka, {"moved-1", "create-1"})
    assert "garbage-1" not in answers
    assert answers["moved-1"][0].status is OrderReplyStatus.ERROR
    assert answers["moved-1"][0].error is not None
    assert answers["moved-1"][0].error.code == "decode"
    assert answers["create-1"][0].status is OrderReplyStatus.OK
    letters = await lane.read(kafka, lane.names.dlq, lambda ms: len(ms) >= 2)
    records = [await lane.codec.decode(m.value(), DeadLetter) for m in letters]
    assert sorted((r.request_id, r.error_code) for r in records) == [("garbage-1", "decode"), ("moved-1", "decode")]
    assert all(r.stage == f"orders.{CODE}" for r in records)
    assert airline.calls == ["find", "create"]  # the moved passengers reached no airline

    # Whoever reads any topic (kcat, analytics, an operator's replay tool) finds no passenger data.
    for topic in (lane.calls_topic, lane.names.order_replies, lane.names.orders, lane.names.dlq):
        for message in await lane.read(kafka, topic, lambda ms: len(ms) > 0):
            raw = (message.value() or b"") + "".join(kafka.headers(message).values()).encode()
            assert not [p for p in PERSONAL if p in raw], f"personal data readable on {topic}"


async def test_an_airlines_webhook_change_is_on_the_orders_topic_within_a_second(lane: Lane, kafka: KafkaProbe) -> None:
    airline = WebhookAirline()
    await lane.start(lane.worker(airline))
    await lane.send(lane.call(OrderOperation.CREATE, "create-1"))
    made = (await lane.replies(kafka, {"create-1"}))["create-1"][0].order
    assert made is not None
    changes = AirlineChanges({CODE: airline}, lane.events)
    server = HealthServer(0, lambda: {"status": "ok"})
    server.post_route("/webhooks/", changes.webhook)
    await server.start()
    try:
        retimed = airline.change(made.order_id, OrderStatus.CHANGED, flights=["ZZ100 OSL-LHR 2026-12-01T09:05"])
        body = WebhookAirline.body(retimed)
        url = changes.webhook_urls(server.host, server.port)[CODE]
        async with httpx.AsyncClient() as http:
            forged = await http.post(url, content=body, headers={"X-Jetbridge-Signature": sign_body(body, "not-it")})
            began = time.monotonic()
            posted = await http.post(
                url, content=body, headers={"X-Jetbridge-Signature": sign_body(body, WEBHOOK_SECRET)}
            )
            events = await lane.order_events(kafka, 2)
            took = time.monotonic() - began
    finally:
        await server.close()

    assert forged.status_code == 401
    assert posted.status_code == 202
    assert took < 1.0
    assert [(e.change, e.changed_by) for e in events] == [
        ("created", ChangeSource.AGENT),
        ("schedule_change", ChangeSource.AIRLINE),
    ]
    assert events[1].client_id == "acme"
    assert events[1].order.flights == ["ZZ100 OSL-LHR 2026-12-01T09:05"]


async def test_a_worker_joining_while_creates_are_in_flight_leaves_one_order_and_one_reply_per_call(
    lane: Lane, kafka: KafkaProbe
) -> None:
    hold = asyncio.Event()
    airline = FakeOrderAirline(create_hold=hold)
    first = lane.worker(airline, concurrency=8)
    await lane.start(first)
    keys = [f"key-{i}" for i in range(6)]
    for key in keys:
        await lane.send(lane.call(OrderOperation.CREATE, f"{key}-a", idempotency_key=key))
    async with asyncio.timeout(15):
        while True:
            if airline.calls.count("create") == len(keys):  # every create is at the airline, held there
                break
            await asyncio.sleep(0.05)

    second = lane.worker(airline, concurrency=8)
    lane.running.append((second, asyncio.create_task(second.run())))
    await asyncio.sleep(2.0)  # the group rebalances: the first worker hands over only what it finished
    assert first.health()["partitions"] == [0, 1]
    assert second.health()["partitions"] == []
    hold.set()
    async with asyncio.timeout(30):
        while True:
            if second.health()["partitions"]:  # handed over once the creates on it finished
                break
            await asyncio.sleep(0.1)

    answers = await lane.replies(kafka, {f"{k}-a" for k in keys})
    assert {rid: len(replies) for rid, replies in answers.items()} == {f"{k}-a": 1 for k in keys}
    assert {key: len(airline.orders_for(key)) for key in keys} == dict.fromkeys(keys, 1)
    assert airline.calls.count("create") == len(keys)
