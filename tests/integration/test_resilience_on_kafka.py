"""On real Kafka, in a topic space of their own: two connector workers of one airline agree on its circuit breaker
through jb.airline-health.v1 (when one opens it the other stops calling too, only the opener probes, and its
close reopens both), and a flood of calls is throttled to the airline's rate limit with the backlog bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from confluent_kafka import Message, Producer

from connectors.worker import ConnectorWorker
from jetbridge.airlines import Airline, BreakerPolicy, RateLimit, RetryPolicy, load_registry
from jetbridge.errors import AirlineUnavailable
from jetbridge.health_board import HealthBoard
from jetbridge.http import build_http_client
from jetbridge.kafka import decode_headers, event_headers
from jetbridge.metrics import RATE_LIMIT_WAITS
from jetbridge.settings import Settings
from schemas.models import AirlineHealth, AirlineResponse, CircuitState, Offer, SearchCriteria, now_utc
from tests.support import factories as f
from tests.support.streams_worker import TopicSpace

pytestmark = pytest.mark.kafka

CODE = "BA"


class FakeAirline:
    """An AirlineConnector that fails while ``failing`` and answers otherwise; records when it was called."""

    kind = "fake"

    def __init__(self) -> None:
        self.failing = False
        self.calls: list[float] = []

    async def search(self, criteria: SearchCriteria, *, request_id: str, timeout_s: float) -> list[Offer]:
        self.calls.append(time.monotonic())
        if self.failing:
            raise AirlineUnavailable(f"{CODE}: HTTP 500")
        return [f.offer(CODE)]

    async def aclose(self) -> None:
        return None


@dataclasses.dataclass
class Running:
    worker: ConnectorWorker
    board: HealthBoard
    task: asyncio.Task[None]
    airline: FakeAirline

    def partitions(self) -> list[int]:
        owned: list[int] = self.worker.health()["partitions"]
        return owned

    @property
    def state(self) -> CircuitState:
        return self.worker.guard.breaker.state


class Space:
    def __init__(self, topics: TopicSpace, http: httpx.AsyncClient) -> None:
        self.topics = topics
        self.http = http
        self.running: list[Running] = []
        assert topics.codec is not None
        self.codec = topics.codec

    @property
    def calls_topic(self) -> str:
        return self.topics.names.calls(CODE)

    async def start(self, airline: Airline, instance: str, **options: Any) -> Running:
        settings = self.topics.settings
        board = HealthBoard(
            self.topics.names.airline_health,
            self.codec,
            {"bootstrap.servers": settings.kafka_bootstrap_servers},
            producer=self.topics.producer,
        )
        fake = FakeAirline()
        worker = ConnectorWorker(
            airline,
            codec=self.codec,
            producer=self.topics.producer,
            consumer_config={"bootstrap.servers": settings.kafka_bootstrap_servers},
            http=self.http,
            calls_topic=self.calls_topic,
            responses_topic=self.topics.names.responses,
            dlq_topic=self.topics.names.dlq,
            group_id=f"{self.topics.prefix}jb.connector.{CODE}",
            instance=instance,
            session_timeout_ms=settings.group_session_timeout_ms,
            connector=fake,
            health=board,
            **options,
        )
        await board.start()
        running = Running(worker, board, asyncio.create_task(worker.run()), fake)
        self.running.append(running)
        async with asyncio.timeout(30):
            await worker.assigned.wait()
        return running

    async def stop_all(self) -> None:
        for running in self.running:
            running.worker.stop()
        for running in self.running:
            await asyncio.wait_for(running.task, 30)
            await running.board.close()

    async def send_call(self, request_id: str, partition: int, deadline_s: float = 10.0) -> None:
        deadline = now_utc() + timedelta(seconds=deadline_s)
        call = f.airline_call(request_id=request_id, correlation_id=request_id, airline=CODE, deadline=deadline)
        value = self.codec.encode(self.calls_topic, call)
        headers: list[tuple[str, str | bytes | None]] = [
            *event_headers(
                request_id=request_id,
                correlation_id=request_id,
                client_id="test",
                deadline_ms=int(deadline.timestamp() * 1000),
                traceparent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
            )
        ]
        settings = self.topics.settings

        def produce() -> None:
            # Aimed at one partition, so the test chooses which worker instance gets the call.
            producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
            producer.produce(self.calls_topic, key=request_id, value=value, headers=headers, partition=partition)
            assert producer.flush(10) == 0

        await asyncio.to_thread(produce)

    async def responses(self, want: Callable[[dict[str, AirlineResponse]], bool]) -> dict[str, AirlineResponse]:
        """Every response so far by request id, read until ``want`` holds."""
        found: dict[str, AirlineResponse] = {}
        loop = asyncio.get_running_loop()

        def enough(messages: list[Message]) -> bool:
            decoded = [
                asyncio.run_coroutine_threadsafe(self.codec.decode(m.value(), AirlineResponse), loop).result(10)
                for m in messages
            ]
            found.clear()
            found.update({r.request_id: r for r in decoded})
            return want(found)

        await asyncio.to_thread(self.topics.read_all, self.topics.names.responses, until=enough, timeout_s=20)
        assert want(found), f"responses never met the expectation: {sorted(found)}"
        return found

    async def health_records(self, want: Callable[[list[AirlineHealth]], bool]) -> list[AirlineHealth]:
        loop = asyncio.get_running_loop()
        found: list[AirlineHealth] = []

        def enough(messages: list[Message]) -> bool:
            found[:] = [
                asyncio.run_coroutine_threadsafe(self.codec.decode(m.value(), AirlineHealth), loop).result(10)
                for m in messages
            ]
            return want(found)

        await asyncio.to_thread(self.topics.read_all, self.topics.names.airline_health, until=enough, timeout_s=15)
        return found

    async def dead_letters(self, until_s: float = 1.5) -> list[Message]:
        return await self.topics.dead_letters(until=lambda _: False, timeout_s=until_s)


@pytest.fixture
async def space(settings: Settings) -> AsyncIterator[Space]:
    topics = TopicSpace(settings)
    await topics.open()
    http = build_http_client()
    made = Space(topics, http)
    try:
        yield made
    finally:
        await made.stop_all()
        await http.aclose()
        await topics.close()


async def until(condition: Callable[[], bool], timeout_s: float = 15.0, what: str = "") -> None:
    """Wait for ``condition`` with a deadline (no fixed sleeps); the state it watches has no event to wait on."""
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():  # noqa: ASYNC110 - polled: the workers' states are plain attributes
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s} s: {what or condition}") from None


def airline_under_test(**changes: Any) -> Airline:
    base = load_registry()[CODE]
    values: dict[str, Any] = {
        "retry": {"search": RetryPolicy(max_attempts=1)},
        "breaker": BreakerPolicy(window_s=60, min_calls=4, failure_rate=0.5, open_s=3.0, half_open_calls=1),
        "timeout_ms": 5000,
    }
    return dataclasses.replace(base, **(values | changes))


async def test_two_workers_of_one_airline_agree_on_its_circuit_through_the_health_topic(space: Space) -> None:
    airline = airline_under_test()
    first = await space.start(airline, "w1", concurrency=4)
    second = await space.start(airline, "w2", concurrency=4)
    await until(lambda: bool(first.partitions()) and bool(second.partitions()), 30)
    p1, p2 = first.partitions()[0], second.partitions()[0]

    # The airline fails: w1's calls open the circuit, and w2 learns it from the topic without a call of its own.
    first.airline.failing = second.airline.failing = True
    for i in range(4):
        await space.send_call(f"fail-{i}", p1)
    await until(lambda: first.state is CircuitState.OPEN, what="w1 opens the circuit")
    await until(lambda: second.state is CircuitState.OPEN, 10, "w2 adopts it")
    assert second.worker.guard.breaker.owner == "w1"
    assert second.airline.calls == []

    # Open: both fail fast, nobody calls the airline, nothing is dead-lettered for it.
    calls_before = len(first.airline.calls)
    await space.send_call("open-1", p1)
    await space.send_call("open-2", p2)
    answered = await space.responses(lambda rs: {"open-1", "open-2"} <= set(rs))
    for request_id in ("open-1", "open-2"):
        response = answered[request_id]
        assert response.error is not None
        assert response.error.code == "circuit_open"
        assert response.attempts == 0
    assert len(first.airline.calls) == calls_before
    assert second.airline.calls == []
    letters = await space.dead_letters()
    codes = sorted(decode_headers(m.headers())["dlq.error_code"] for m in letters)
    assert codes == ["airline_unavailable"] * 4, "the four calls that failed for good, not the fast failures"

    # The airline recovers. Past the open interval, w2 still fails fast: only w1, which opened it, probes.
    first.airline.failing = second.airline.failing = False
    await until(lambda: time.time() >= (first.worker.guard.breaker.until or 0), 10)
    await space.send_call("probe-wait", p2)
    answered = await space.responses(lambda rs: "probe-wait" in rs)
    assert answered["probe-wait"].error is not None
    assert answered["probe-wait"].error.code == "circuit_open"
    assert second.airline.calls == []
    await space.send_call("probe", p1)
    answered = await space.responses(lambda rs: "probe" in rs)
    assert answered["probe"].error is None
    assert first.state is CircuitState.CLOSED
    await until(lambda: second.state is CircuitState.CLOSED, 10, "w2 adopts the close")
    await space.send_call("healthy", p2)
    answered = await space.responses(lambda rs: "healthy" in rs)
    assert answered["healthy"].error is None
    assert len(second.airline.calls) == 1

    records = await space.health_records(lambda rs: len(rs) >= 3)
    assert [(r.state, r.reporter) for r in records] == [
        (CircuitState.OPEN, "w1"),
        (CircuitState.HALF_OPEN, "w1"),
        (CircuitState.CLOSED, "w1"),
    ]
    assert records[0].failure_rate == 1.0
    assert records[0].until is not None


async def test_a_flood_of_calls_reaches_the_airline_at_its_rate_limit_with_the_backlog_bounded(space: Space) -> None:
    rate = RateLimit(rate_per_s=20, burst=5)
    running = await space.start(airline_under_test(rate_limit=rate), "w1", concurrency=8)
    partitions = running.partitions()
    waits_before = RATE_LIMIT_WAITS.labels(CODE)._value.get()
    flood = 120
    await asyncio.gather(*(space.send_call(f"flood-{i}", partitions[i % len(partitions)], 60) for i in range(flood)))
    answered = await space.responses(lambda rs: sum(1 for r in rs if r.startswith("flood-")) >= flood)
    assert all(r.error is None for k, r in answered.items() if k.startswith("flood-"))

    calls = sorted(running.airline.calls)
    busiest = max(sum(1 for t in calls if start <= t < start + 1.0) for start in calls)
    assert busiest <= rate.rate_per_s + rate.burst + 1, f"{busiest} calls in one second"
    assert calls[-1] - calls[0] >= (flood - rate.burst) / rate.rate_per_s * 0.9, "spread at the rate"
    assert running.worker.backlog_peak <= 128, "calls wait on the topic, not in memory"
    assert RATE_LIMIT_WAITS.labels(CODE)._value.get() > waits_before
