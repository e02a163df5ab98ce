"""On real Kafka, with topics and a consumer group of each test's own and fake airline connectors: the connector
worker commits a call only once its answer (and dead letter) is acknowledged, never commits a partition it no
longer owns, and holds a call whose dead letter cannot be written instead of losing it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from connectors.service import health_report
from connectors.worker import ConnectorWorker
from jetbridge.airlines import Airline
from jetbridge.dlq import Backoff
from jetbridge.errors import AirlineRejected, KafkaError
from jetbridge.http import build_http_client
from jetbridge.kafka import AsyncProducer, apply_topics
from jetbridge.runtime import open_codec
from jetbridge.settings import Settings
from jetbridge.topics import TopicNames, TopicSpec
from schemas.codec import AvroCodec
from schemas.models import AirlineCall, AirlineResponse, DeadLetter, Offer, ResponseStatus, SearchCriteria, now_utc
from tests.support import factories as f
from tests.support.kafka_tools import KafkaProbe

pytestmark = pytest.mark.kafka

CODE = "ZZ"
HOUR_MS = 3_600_000
# Fake airlines answer when told to, so neither the airline's time limit nor the call's deadline interferes.
AIRLINE = Airline(code=CODE, name="Test Air", kind="fake", endpoint="http://127.0.0.1:9", timeout_ms=60_000)


class FakeAirline:
    """An AirlineConnector that answers at once, or when ``release``d, or rejects; records what it saw."""

    kind = "fake"

    def __init__(self, *, hold: Sequence[str] = (), reject: Sequence[str] = ()) -> None:
        self.hold = set(hold)
        self.reject = set(reject)
        self.gate = asyncio.Event()
        self.seen: list[str] = []
        self.finished: list[str] = []

    def release(self) -> None:
        self.gate.set()

    async def search(self, criteria: SearchCriteria, *, request_id: str, timeout_s: float) -> list[Offer]:
        self.seen.append(request_id)
        try:
            if request_id in self.hold:
                await self.gate.wait()
            if request_id in self.reject:
                raise AirlineRejected("no fares for this search")
            return [f.offer(CODE)]
        finally:
            self.finished.append(request_id)

    async def aclose(self) -> None:
        return None


@dataclass
class Lane:
    """One test's own topics, consumer group, codec and producer."""

    settings: Settings
    names: TopicNames
    group: str
    codec: AvroCodec
    producer: AsyncProducer
    http: httpx.AsyncClient
    running: list[tuple[ConnectorWorker, asyncio.Task[None]]] = field(default_factory=list)

    @property
    def calls(self) -> str:
        return self.names.calls(CODE)

    def worker(self, connector: FakeAirline, **options: Any) -> ConnectorWorker:
        values: dict[str, Any] = {
            "codec": self.codec,
            "producer": self.producer,
            "consumer_config": {"bootstrap.servers": self.settings.kafka_bootstrap_servers},
            "http": self.http,
            "calls_topic": self.calls,
            "responses_topic": self.names.responses,
            "dlq_topic": self.names.dlq,
            "group_id": self.group,
            "session_timeout_ms": self.settings.group_session_timeout_ms,
            "connector": connector,
            "concurrency": 4,
        }
        return ConnectorWorker(AIRLINE, **(values | options))

    async def start(self, worker: ConnectorWorker) -> asyncio.Task[None]:
        task = asyncio.create_task(worker.run())
        self.running.append((worker, task))
        async with asyncio.timeout(30):
            await worker.assigned.wait()
        return task

    async def stop(self, worker: ConnectorWorker) -> None:
        for entry in list(self.running):
            if entry[0] is worker:
                worker.stop()
                await asyncio.wait_for(entry[1], 30)
                self.running.remove(entry)

    async def send_call(self, request_id: str, *, partition: int | None = None) -> None:
        call = f.airline_call(
            request_id=request_id,
            correlation_id=request_id,
            airline=CODE,
            deadline=now_utc() + timedelta(minutes=5),
        )
        await self.send_raw(request_id.encode(), self.codec.encode(self.calls, call), request_id, partition=partition)

    async def send_raw(self, key: bytes, value: bytes, request_id: str, *, partition: int | None = None) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            ("request_id", request_id.encode()),
            ("correlation_id", request_id.encode()),
        ]
        if partition is None:
            await self.producer.send(self.calls, key=key, value=value, headers=headers)
            return

        def produce() -> None:
            # AsyncProducer picks partitions by key; these tests need to aim at one.
            producer = Producer({"bootstrap.servers": self.settings.kafka_bootstrap_servers})
            producer.produce(self.calls, key=key, value=value, headers=headers, partition=partition)
            assert producer.flush(10) == 0

        await asyncio.to_thread(produce)

    async def committed(self, partitions: Sequence[int] = (0,)) -> dict[int, int]:
        """The group's committed offsets on the calls topic (-1 when nothing is committed)."""

        def fetch() -> dict[int, int]:
            consumer = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap_servers, "group.id": self.group})
            try:
                found = consumer.committed([TopicPartition(self.calls, p) for p in partitions], timeout=10)
                return {tp.partition: max(tp.offset, -1) for tp in found}
            finally:
                consumer.close()

        return await asyncio.to_thread(fetch)

    async def wait_committed(self, wanted: dict[int, int], timeout_s: float = 15.0) -> None:
        async with asyncio.timeout(timeout_s):
            while True:
                if await self.committed(list(wanted)) == wanted:
                    return
                await asyncio.sleep(0.1)

    async def responses(
        self, kafka: KafkaProbe, want: Callable[[list[AirlineResponse]], bool]
    ) -> list[AirlineResponse]:
        """Every response on the lane's responses topic, read again until ``want`` holds."""
        ends = await kafka.end_offsets(self.names.responses)
        async with asyncio.timeout(20):
            while True:
                messages = await kafka.read_since(self.names.responses, dict.fromkeys(ends, 0), until_s=0.5)
                decoded = [await self.codec.decode(m.value(), AirlineResponse) for m in messages]
                if want(decoded):
                    return decoded

    async def dead_letters(self, kafka: KafkaProbe, until_s: float = 2.0) -> list[Message]:
        ends = await kafka.end_offsets(self.names.dlq)
        return await kafka.read_since(self.names.dlq, dict.fromkeys(ends, 0), until_s=until_s)


@pytest.fixture
async def lane(settings: Settings) -> AsyncIterator[Lane]:
    names = TopicNames(f"t{uuid.uuid4().hex[:8]}.")
    specs = [
        TopicSpec(names.calls(CODE), AirlineCall, 2, HOUR_MS),
        TopicSpec(names.responses, AirlineResponse, 3, HOUR_MS),
        TopicSpec(names.dlq, DeadLetter, 1, HOUR_MS),
    ]
    await apply_topics({"bootstrap.servers": settings.kafka_bootstrap_servers}, specs)
    http = build_http_client()
    codec = await open_codec(settings, specs, http)
    producer = AsyncProducer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    made = Lane(settings, names, f"{names.prefix}jb.connector.{CODE}", codec, producer, http)
    try:
        yield made
    finally:
        for worker, task in made.running:
            worker.stop()
            await asyncio.wait_for(task, 30)
        await producer.close()
        await http.aclose()


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Wait for ``condition`` with a deadline (no fixed sleeps)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.05)


def ids(responses: list[AirlineResponse]) -> list[str]:
    return [r.request_id for r in responses]


async def never_past(lane: Lane, partition: int, limit: int, for_s: float = 1.2) -> None:
    """The committed offset stays at or below ``limit`` for a while (several commit rounds)."""
    loop = asyncio.get_running_loop()
    stop = loop.time() + for_s
    while loop.time() < stop:
        committed = (await lane.committed([partition]))[partition]
        assert committed <= limit, f"offset {committed} committed past a call still in flight (limit {limit})"
        await asyncio.sleep(0.1)


async def test_offset_is_committed_only_once_the_calls_answer_is_acknowledged(lane: Lane, kafka: KafkaProbe) -> None:
    airline = FakeAirline(hold=["held"])
    await lane.start(lane.worker(airline))
    await lane.send_call("held", partition=0)
    await lane.send_call("quick", partition=0)

    answered = await lane.responses(kafka, lambda rs: "quick" in ids(rs))
    assert "held" not in ids(answered)
    assert "held" in airline.seen
    await never_past(lane, 0, limit=0)

    airline.release()
    await lane.wait_committed({0: 2})
    answered = await lane.responses(kafka, lambda rs: "held" in ids(rs))
    assert sorted(ids(answered)) == ["held", "quick"], "committed past 'held' only once its answer was on the topic"
    assert all(r.status is ResponseStatus.OK for r in answered)


async def test_poison_call_goes_to_the_dlq_byte_for_byte_and_the_next_call_is_answered(
    lane: Lane, kafka: KafkaProbe
) -> None:
    await lane.start(lane.worker(FakeAirline()))
    poison = b"\x00\x00\x00\x00\x07not an avro call"
    await lane.send_raw(b"poison-key", poison, "poison-1", partition=0)
    await lane.send_call("after-poison", partition=0)

    answered = await lane.responses(kafka, lambda rs: "after-poison" in ids(rs))
    assert ids(answered) == ["after-poison"]
    await lane.wait_committed({0: 2})
    letters = await lane.dead_letters(kafka)
    assert len(letters) == 1
    message = letters[0]
    headers = kafka.headers(message)
    assert message.key() == b"poison-key"
    assert headers["request_id"] == "poison-1"
    assert headers["dlq.stage"] == f"connector.{CODE}"
    assert headers["dlq.error_code"] == "decode"
    assert headers["dlq.original_topic"] == lane.calls
    assert (headers["dlq.original_partition"], headers["dlq.original_offset"]) == ("0", "0")
    record = await lane.codec.decode(message.value(), DeadLetter)
    assert record.payload == poison
    assert record.original_key == b"poison-key"


async def test_unwritable_dlq_holds_the_call_and_reports_stalled_until_the_record_is_written_once(
    lane: Lane, kafka: KafkaProbe
) -> None:
    broken = True
    attempts = 0

    async def flaky_dlq(key: bytes | str | None, record: DeadLetter, headers: Sequence[tuple[str, bytes]]) -> None:
        nonlocal attempts
        attempts += 1
        if broken:
            raise KafkaError(f"produce to {lane.names.dlq} failed: Broker: Not enough in-sync replicas")
        value = lane.codec.encode(lane.names.dlq, record)
        await lane.producer.send(lane.names.dlq, key=key, value=value, headers=list(headers))

    airline = FakeAirline(reject=["rejected"])
    # One slot: the held call blocks the partition, so the worker also pauses and later resumes fetching.
    worker = lane.worker(
        airline, concurrency=1, dlq_send=flaky_dlq, dlq_backoff=Backoff(initial_s=0.05, multiplier=2.0, max_s=0.2)
    )
    task = await lane.start(worker)
    await lane.send_call("rejected", partition=0)
    await lane.send_call("waiting", partition=0)

    answered = await lane.responses(kafka, lambda rs: "rejected" in ids(rs))
    assert [r.status for r in answered if r.request_id == "rejected"] == [ResponseStatus.ERROR]
    await never_past(lane, 0, limit=0)
    await until(lambda: attempts >= 3, 10)
    health = health_report([worker], [task], "connectors-test")
    assert health["status"] == "degraded"
    assert "dlq unwritable, partition paused" in health["reason"]
    assert health["dlq"][CODE]["pending"] == 1
    assert worker.health()["dlq"]["stalled"] is True
    await lane.send_call("while-paused", partition=0)
    assert await lane.dead_letters(kafka, until_s=0.5) == []
    assert "waiting" not in airline.seen, "the only slot is held until the dead letter is written"

    broken = False
    await lane.wait_committed({0: 3})
    answered = await lane.responses(kafka, lambda rs: {"waiting", "while-paused"} <= set(ids(rs)))
    assert sorted(ids(answered)) == ["rejected", "waiting", "while-paused"], "each call answered exactly once"
    letters = await lane.dead_letters(kafka)
    assert len(letters) == 1, "the dead letter is written exactly once"
    record = await lane.codec.decode(letters[0].value(), DeadLetter)
    assert (record.original_offset, record.error_code) == (0, "airline_rejected")
    assert health_report([worker], [task], "connectors-test")["status"] == "ok"


async def test_shutdown_while_the_dlq_is_unwritable_leaves_the_call_to_be_replayed_not_lost(
    lane: Lane, kafka: KafkaProbe
) -> None:
    attempts = 0

    async def dead_dlq(key: bytes | str | None, record: DeadLetter, headers: Sequence[tuple[str, bytes]]) -> None:
        nonlocal attempts
        attempts += 1
        raise KafkaError(f"produce to {lane.names.dlq} failed: Local: Message timed out")

    first = lane.worker(FakeAirline(reject=["rejected"]), dlq_send=dead_dlq, dlq_backoff=Backoff(initial_s=0.05))
    await lane.start(first)
    await lane.send_call("rejected", partition=0)
    await lane.send_call("fine", partition=0)
    await lane.responses(kafka, lambda rs: {"rejected", "fine"} <= set(ids(rs)))
    await until(lambda: attempts >= 2, 10)

    loop = asyncio.get_running_loop()
    began = loop.time()
    await lane.stop(first)
    assert loop.time() - began < 5, "a stalled dead letter must not hold the shutdown"
    assert (await lane.committed())[0] <= 0, "the call whose dead letter was never written stays uncommitted"

    await lane.start(lane.worker(FakeAirline(reject=["rejected"])))
    await lane.wait_committed({0: 2})
    letters = await lane.dead_letters(kafka)
    assert len(letters) == 1
    assert (await lane.codec.decode(letters[0].value(), DeadLetter)).original_offset == 0


async def test_call_finishing_after_its_partition_moved_does_not_commit_over_the_new_owner(
    lane: Lane, kafka: KafkaProbe
) -> None:
    first_airline = FakeAirline(hold=["held-0", "held-1"])
    first = lane.worker(first_airline)
    await lane.start(first)
    await lane.send_call("held-0", partition=0)
    await lane.send_call("held-1", partition=1)
    await until(lambda: len(first_airline.seen) >= 2, 10)

    second_airline = FakeAirline()
    second = lane.worker(second_airline)
    await lane.start(second)
    await until(lambda: len(first.health()["partitions"]) == 1 and len(second.health()["partitions"]) == 1, 20)
    [moved] = second.health()["partitions"]
    [kept] = first.health()["partitions"]
    # The new owner replays the call the first worker still holds, then goes on.
    await lane.send_call("later-a", partition=moved)
    await lane.send_call("later-b", partition=moved)
    await lane.wait_committed({moved: 3})
    assert f"held-{moved}" in second_airline.seen

    first_airline.release()
    await until(lambda: len(first_airline.finished) >= 2, 10)
    await lane.wait_committed({kept: 1})
    await never_past(lane, moved, limit=3)
    assert (await lane.committed([moved]))[moved] == 3, "the late call must not move the new owner's offset back"
    assert first.health()["partitions"] == [kept]


async def test_restarted_static_member_takes_its_partition_back_without_a_rebalance(
    lane: Lane, kafka: KafkaProbe
) -> None:
    first = lane.worker(FakeAirline(), instance="connectors-1")
    second = lane.worker(FakeAirline(), instance="connectors-2")
    await lane.start(first)
    await lane.start(second)
    await until(lambda: len(first.health()["partitions"]) == 1 and len(second.health()["partitions"]) == 1, 20)
    [mine] = first.health()["partitions"]
    settled = second.rebalances

    await lane.stop(first)
    restarted_airline = FakeAirline()
    restarted = lane.worker(restarted_airline, instance="connectors-1")
    loop = asyncio.get_running_loop()
    began = loop.time()
    await lane.start(restarted)
    await until(lambda: restarted.health()["partitions"] == [mine], 10)
    back_in = loop.time() - began
    assert back_in < lane.settings.group_session_timeout_ms / 1000, "it did not wait for the old session to expire"
    await lane.send_call("after-restart", partition=mine)
    await lane.responses(kafka, lambda rs: "after-restart" in ids(rs))
    assert restarted_airline.seen == ["after-restart"]
    assert second.rebalances == settled, "the other member's partitions never moved"


def intrude(lane: Lane, instance: str) -> None:
    """Join the lane's group under ``instance``, the static id a worker already holds, until given partitions;
    then stop like a static member does (no LeaveGroup). The broker fences the worker's member meanwhile."""
    intruder = Consumer(
        {
            "bootstrap.servers": lane.settings.kafka_bootstrap_servers,
            "group.id": lane.group,
            "group.instance.id": instance,
            "session.timeout.ms": lane.settings.group_session_timeout_ms,
            "partition.assignment.strategy": "cooperative-sticky",  # the workers' (a group has one protocol)
        }
    )
    try:
        intruder.subscribe([lane.calls])
        give_up = time.monotonic() + 20
        while not intruder.assignment():
            assert time.monotonic() < give_up, "the intruder was never given partitions"
            intruder.poll(0.1)
    finally:
        intruder.close()


async def test_a_fenced_static_member_joins_again_and_answers_the_calls_sent_after(
    lane: Lane, kafka: KafkaProbe
) -> None:
    # What a broker restart did in CI: the worker's member was fenced (librdkafka's one fatal consumer error)
    # and the worker went on running, healthy by every other sign, while its consumer never fetched again.
    airline = FakeAirline()
    worker = lane.worker(airline, instance="connectors-1")
    await lane.start(worker)
    await until(lambda: worker.health()["partitions"] == [0, 1], 20)

    await asyncio.to_thread(intrude, lane, f"connectors-1-{CODE}")
    await until(lambda: worker.health()["rejoined"] >= 1, 20)
    await until(lambda: worker.health()["partitions"] == [0, 1], 20)
    await lane.send_call("after-fence-0", partition=0)
    await lane.send_call("after-fence-1", partition=1)
    answered = await lane.responses(kafka, lambda rs: {"after-fence-0", "after-fence-1"} <= set(ids(rs)))
    assert sorted(ids(answered)) == ["after-fence-0", "after-fence-1"]
    assert sorted(airline.seen) == ["after-fence-0", "after-fence-1"]
