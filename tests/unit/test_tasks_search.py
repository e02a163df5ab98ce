"""search_offers as a task, without a broker: the partial result at the agent's deadline (the aggregator's merge
and ranking, unanswered airlines pending), late airlines replacing it, progress per airline for a synchronous
call, the airlines expected (the router's coverage), and the partitioner that finds a reply after a restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jetbridge.airlines import load_registry
from jetbridge.kafka import Delivery
from jetbridge.routing import Route
from mcp_bridge.response_watch import OnResponse, murmur2, partition_for
from mcp_bridge.search_tasks import META_FINAL, Coverage, ProgressObserver, TaskObserver, interim_result
from mcp_bridge.tasks import TaskHandle, TaskLog
from schemas.codec import AvroCodec
from schemas.models import AirlineResponse, ErrorInfo, ResponseStatus, SearchRequest, TaskState, TaskStatus, now_utc
from schemas.registry import SchemaRegistryClient
from tests.support import factories as f
from tests.support.registry_double import RegistryDouble

REGISTRY = load_registry(Path(__file__).resolve().parents[2] / "connectors" / "airlines.toml")
TOPIC = "t.jb.tasks.v1"


def covered(*codes: str, skipped: dict[str, str] | None = None) -> Route:
    return Route([a for a in REGISTRY if a.code in codes], [], skipped or {})


class Watcher:
    def __init__(self) -> None:
        self.watching: dict[str, OnResponse] = {}

    def watch(self, request_id: str, on_response: OnResponse) -> None:
        self.watching[request_id] = on_response

    def unwatch(self, request_id: str) -> None:
        self.watching.pop(request_id, None)

    @contextlib.asynccontextmanager
    async def following(self) -> AsyncIterator[None]:
        yield

    def answer(self, response: AirlineResponse) -> None:
        self.watching[response.request_id](response)


class Producer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, topic: str, *, key: str, value: bytes, headers: Any = None) -> Delivery:
        self.sent.append(value)
        return Delivery(topic, 0, len(self.sent) - 1)


@pytest.fixture
async def codec() -> AsyncIterator[AvroCodec]:
    double = RegistryDouble()
    async with double.client() as http:
        made = AvroCodec(SchemaRegistryClient("http://registry.test", http))
        await made.register(TOPIC, TaskState)
        yield made


def test_the_partial_result_is_the_aggregators_merge_with_unanswered_airlines_pending() -> None:
    request = f.request(["BA", "AA", "VS"], max_offers=10)
    responses = {
        "BA": f.response("BA", offers=[f.offer("BA", "700.00"), f.offer("BA", "400.00", flight="177")]),
        "AA": f.response(
            "AA", ResponseStatus.ERROR, error=ErrorInfo(code="airline_error", message="x", retriable=False)
        ),
    }
    result = interim_result(request, covered("BA", "AA", "VS"), responses, now_utc())
    statuses = {a.airline: (a.status, a.error_code) for a in result.airlines}
    assert statuses == {"BA": ("ok", None), "AA": ("error", "airline_error"), "VS": ("pending", None)}
    assert result.status == "partial"
    assert [o.total_amount for o in result.offers] == ["400.00", "700.00"], "ranked by price, as the aggregator does"
    assert result.ttl_ms == 0, "a partial result is not for reuse"


def test_the_partial_result_names_airlines_not_called_as_the_reply_would() -> None:
    request = f.request(["BA", "DL"])
    result = interim_result(request, covered("BA", skipped={"DL": "circuit_open"}), {}, now_utc())
    statuses = {a.airline: a.status for a in result.airlines}
    assert statuses == {"BA": "pending", "DL": "circuit_open"}
    assert result.status == "unanswered"


def test_coverage_is_the_routers_airlines_narrowed_to_the_request() -> None:
    everyone = Coverage(REGISTRY, None)(f.search_request())
    assert everyone.codes == ["BA", "AA", "VS", "DL", "AY"]
    assert Coverage(REGISTRY, None)(f.request(["VS", "ZZ"])).codes == ["VS"]


async def test_a_task_search_shows_progress_then_a_partial_then_late_airlines(codec: AvroCodec) -> None:
    producer = Producer()
    log = TaskLog(TOPIC, codec, producer, {"bootstrap.servers": "127.0.0.1:9"}, "bridge-a")  # type: ignore[arg-type]  # a stand-in producer
    now = now_utc()
    created = TaskState(
        task_id="t1",
        client_id="agent",
        tool="search_offers",
        status=TaskStatus.WORKING,
        created_at=now,
        updated_at=now,
        ttl_ms=60_000,
        poll_interval_ms=1000,
        instance="bridge-a",
    )
    await log.write(created)
    watcher = Watcher()
    observer = TaskObserver(watcher, lambda _: covered("BA", "AA", "VS"), TaskHandle(log, created), hold_ms=15_000)  # type: ignore[arg-type]  # a stand-in watcher
    assert observer.hold_ms(1000) == 15_000, "the backbone gets the long deadline"
    request: SearchRequest = f.request(["BA", "AA", "VS"], deadline=now + timedelta(seconds=15))
    observer.published(request, now + timedelta(milliseconds=300))
    watcher.answer(f.response("BA"))

    async def shown(check: Any) -> TaskState:
        """The first state of the task that passes ``check`` (the current one, or one the log takes next)."""
        current = log.get("t1")
        if current is not None and check(current):
            return current
        found: asyncio.Future[TaskState] = asyncio.get_running_loop().create_future()

        def seen(state: TaskState) -> None:
            if not found.done() and check(state):
                found.set_result(state)

        log.listen(seen)
        return await asyncio.wait_for(found, 5)

    working = await shown(lambda s: s.status_message == "1 of 3 airlines answered")
    assert working.request_id == request.request_id, "the record names the backbone request, for a restart"
    partial = await shown(lambda s: s.status is TaskStatus.COMPLETED)
    assert not partial.final
    body = _structured(partial)
    assert {a["airline"]: a["status"] for a in body["airlines"]} == {"BA": "ok", "AA": "pending", "VS": "pending"}
    watcher.answer(f.response("VS", offers=[f.offer("VS", "100.00")]))
    late = await shown(lambda s: "VS answered after the deadline" in (s.status_message or ""))
    body = _structured(late)
    assert body["offers"][0]["airline"] == "VS", "the late airline's cheaper offer is merged in first"
    assert not late.final
    assert _meta(late)[META_FINAL] is False
    await observer.close()
    assert watcher.watching == {}, "the request is no longer watched"


async def test_a_synchronous_search_reports_progress_per_airline() -> None:
    sent: list[tuple[float, float | None, str | None]] = []

    class Session:
        async def report_progress(
            self, progress: float, total: float | None = None, message: str | None = None
        ) -> None:
            sent.append((progress, total, message))

    class Ctx:
        session = Session()

    watcher = Watcher()
    observer = ProgressObserver(watcher, lambda _: covered("BA", "AA"), Ctx())  # type: ignore[arg-type]  # stand-ins
    assert observer.hold_ms(2000) == 2000, "a synchronous search keeps the agent's deadline"
    observer.published(f.request(["BA", "AA"]), now_utc())
    watcher.answer(f.response("AA"))
    watcher.answer(f.response("BA"))
    await observer.close()
    assert sent == [(1, 2, "AA answered (1 of 2 airlines)"), (2, 2, "BA answered (2 of 2 airlines)")]


def test_murmur2_is_kafkas() -> None:
    # Vectors of Kafka's own UtilsTest (signed 32-bit there).
    vectors = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536, "abc": 479470107}
    for text, expected in vectors.items():
        assert murmur2(text.encode()) == expected & 0xFFFFFFFF, text
    assert {partition_for(f"req-{i}", 6) for i in range(100)} == set(range(6))


def _structured(state: TaskState) -> dict[str, Any]:
    import json

    body: dict[str, Any] = json.loads(state.result or "{}")["structuredContent"]
    return body


def _meta(state: TaskState) -> dict[str, Any]:
    import json

    meta: dict[str, Any] = json.loads(state.result or "{}")["_meta"]
    return meta
