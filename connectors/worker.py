"""The connector worker runtime: consume an airline's call topic, call the airline with bounded
concurrency, produce the normalised response, then commit.

Offsets are committed only up to the lowest call not yet answered on each partition (the response for
every committed call is already acknowledged by the broker), so a crash replays unanswered calls and
never loses one; the aggregator absorbs the duplicates. A failing call becomes an ``ERROR``/``TIMEOUT``
response for that airline plus a dead letter, and the partition moves on.

Retries, circuit breaker and rate limit come later; they wrap ``_call_airline``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import structlog
from confluent_kafka import Message, TopicPartition

from connectors.base import AirlineConnector, build_connector
from jetbridge.airlines import Airline
from jetbridge.dlq import dead_letter
from jetbridge.errors import AirlineError, AirlineTimeout, DeadlineExceeded, JetbridgeError
from jetbridge.kafka import AsyncConsumer, AsyncProducer, decode_headers
from jetbridge.log import get_logger
from jetbridge.topics import AIRLINE_RESPONSES, DLQ
from schemas.codec import AvroCodec
from schemas.models import AirlineCall, AirlineResponse, ErrorInfo, Offer, ResponseStatus, now_utc

__all__ = ["ConnectorWorker", "OffsetTracker", "airline_response"]

log = get_logger(__name__)

BACKSTOP_S = 2.0


@dataclass
class OffsetTracker:
    """Which offsets of each partition are in flight; what may be committed is below the lowest one."""

    in_flight: dict[int, set[int]] = field(default_factory=dict)
    highest_done: dict[int, int] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)

    def started(self, partition: int, offset: int) -> None:
        self.in_flight.setdefault(partition, set()).add(offset)

    def finished(self, partition: int, offset: int) -> None:
        self.in_flight.get(partition, set()).discard(offset)
        self.highest_done[partition] = max(self.highest_done.get(partition, -1), offset)

    def committable(self) -> dict[int, int]:
        """Next offset to commit per partition (Kafka commits the offset of the next message to read)."""
        result: dict[int, int] = {}
        for partition, done in self.highest_done.items():
            pending = self.in_flight.get(partition)
            next_offset = min(pending) if pending else done + 1
            if next_offset > self.committed.get(partition, -1):
                result[partition] = next_offset
        return result

    def mark_committed(self, offsets: Mapping[int, int]) -> None:
        self.committed.update(offsets)

    def forget(self, partitions: list[int]) -> None:
        for p in partitions:
            self.in_flight.pop(p, None)
            self.highest_done.pop(p, None)
            self.committed.pop(p, None)


def airline_response(
    airline: Airline,
    *,
    request_id: str,
    correlation_id: str,
    offers: list[Offer],
    error: JetbridgeError | None,
    latency_ms: int,
    attempts: int = 1,
) -> AirlineResponse:
    """The normalised answer of one airline call: its offers, or the error as TIMEOUT or ERROR."""
    if error is None:
        status = ResponseStatus.OK
    elif isinstance(error, AirlineTimeout | DeadlineExceeded):
        status = ResponseStatus.TIMEOUT
    else:
        status = ResponseStatus.ERROR
    return AirlineResponse(
        request_id=request_id,
        correlation_id=correlation_id,
        airline=airline.code,
        status=status,
        offers=offers,
        error=None
        if error is None
        else ErrorInfo(code=error.code, message=error.message[:500], retriable=error.retriable),
        connector_kind=airline.kind,
        latency_ms=latency_ms,
        attempts=attempts,
        produced_at=now_utc(),
    )


class ConnectorWorker:
    """One airline's worker: a member of consumer group ``jb.connector.<IATA>``."""

    def __init__(
        self,
        airline: Airline,
        *,
        codec: AvroCodec,
        producer: AsyncProducer,
        consumer_config: dict[str, Any],
        http: httpx.AsyncClient,
        concurrency: int | None = None,
        deadline_margin_ms: int = 250,
        connector: AirlineConnector | None = None,
    ) -> None:
        self.airline = airline
        self._codec = codec
        self._producer = producer
        self._topic = airline.calls_topic
        self._connector = connector or build_connector(airline, http)
        self._margin = timedelta(milliseconds=deadline_margin_ms)
        self._slots = asyncio.Semaphore(concurrency or airline.concurrency)
        self._tracker = OffsetTracker()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.assigned = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer = AsyncConsumer(
            consumer_config
            | {
                "group.id": f"jb.connector.{airline.code}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # The broker answers a fetch as soon as one byte arrives, so a long wait adds no latency;
                # a short one only makes every idle consumer poll the broker hundreds of times a second.
                "fetch.wait.max.ms": 500,
                "partition.assignment.strategy": "cooperative-sticky",
            }
        )
        self.handled = 0

    async def run(self) -> None:
        """Consume until ``stop()``; then finish what is in flight and commit it."""
        self._loop = asyncio.get_running_loop()
        await self._consumer.subscribe([self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        commit_task = asyncio.create_task(self._commit_loop())
        log.info("connector worker started", airline=self.airline.code, kind=self.airline.kind, topic=self._topic)
        try:
            while not self._stopping.is_set():
                await self._slots.acquire()
                self._slots.release()
                messages = await self._consumer.consume(64, 0.1)
                for message in messages:
                    if message.error() is not None:
                        log.warning("consume error", airline=self.airline.code, error=str(message.error()))
                        continue
                    await self._slots.acquire()
                    partition, offset = int(message.partition() or 0), int(message.offset() or 0)
                    self._tracker.started(partition, offset)
                    task = asyncio.create_task(self._handle(message))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            commit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await commit_task
            await self._commit()
            await self._consumer.close()
            await self._connector.aclose()

    def stop(self) -> None:
        self._stopping.set()

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # Runs on the consumer thread; the group has placed this worker, so calls will reach it.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.assigned.set)

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # Runs on the consumer thread inside poll; calls still in flight for these partitions will be
        # answered (and replayed by the new owner: the aggregator keeps one answer per airline).
        self._tracker.forget([tp.partition for tp in partitions])

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            await self._commit()

    async def _commit(self) -> None:
        offsets = self._tracker.committable()
        if not offsets:
            return
        try:
            await self._consumer.commit([TopicPartition(self._topic, p, o) for p, o in offsets.items()])
            self._tracker.mark_committed(offsets)
        except JetbridgeError as exc:
            log.warning("offset commit failed; will retry", airline=self.airline.code, error=str(exc))

    async def _handle(self, message: Message) -> None:
        partition, offset = int(message.partition() or 0), int(message.offset() or 0)
        headers = decode_headers(message.headers())
        try:
            with structlog.contextvars.bound_contextvars(
                airline=self.airline.code,
                request_id=headers.get("request_id"),
                correlation_id=headers.get("correlation_id"),
            ):
                await self._process(message, headers)
        except Exception as exc:  # noqa: BLE001 - one bad call never stops the worker
            await self._dead_letter(message, headers, exc)
        finally:
            self._tracker.finished(partition, offset)
            self._slots.release()
            self.handled += 1

    async def _process(self, message: Message, headers: dict[str, str]) -> None:
        call = await self._codec.decode(message.value(), AirlineCall)
        started = asyncio.get_running_loop().time()
        budget = (call.deadline - self._margin - now_utc()).total_seconds()
        budget = min(budget, self.airline.timeout_ms / 1000)
        offers: list[Offer] = []
        error: JetbridgeError | None = None
        if budget <= 0:
            error = DeadlineExceeded("the request's deadline passed before the airline could be called")
        else:
            try:
                offers = await self._call_airline(call, budget)
            except AirlineError as exc:
                error = exc
        latency_ms = int((asyncio.get_running_loop().time() - started) * 1000)
        response = airline_response(
            self.airline,
            request_id=call.request_id,
            correlation_id=call.correlation_id,
            offers=offers,
            error=error,
            latency_ms=latency_ms,
            attempts=call.attempt,
        )
        status = response.status
        await self._producer.send(
            AIRLINE_RESPONSES,
            key=call.request_id,
            value=self._codec.encode(AIRLINE_RESPONSES, response),
            headers=_raw_headers(message),
        )
        if error is not None and not isinstance(error, DeadlineExceeded):
            await self._dead_letter(message, headers, error)
        log.info(
            "airline answered",
            status=status.value,
            offers=len(offers),
            latency_ms=latency_ms,
            error_code=error.code if error else None,
        )

    async def _call_airline(self, call: AirlineCall, budget_s: float) -> list[Offer]:
        """One airline call inside its time budget (the seam for retry, breaker and rate limit)."""
        # The connector bounds its own call (see connectors/kinds/boundary.py); this is only a backstop
        # for a connector that does not, kept well clear of the connector's own limit so the two
        # cancellations never race.
        try:
            return await asyncio.wait_for(
                self._connector.search(call.criteria, request_id=call.request_id, timeout_s=budget_s),
                timeout=budget_s + BACKSTOP_S,
            )
        except TimeoutError:
            raise AirlineTimeout(f"{self.airline.code} did not answer within {budget_s:.2f} s") from None

    async def _dead_letter(self, message: Message, headers: dict[str, str], exc: BaseException) -> None:
        record, dlq_headers = dead_letter(
            topic=str(message.topic()),
            partition=int(message.partition() or 0),
            offset=int(message.offset() or 0),
            key=message.key(),
            value=message.value(),
            headers=headers,
            stage=f"connector.{self.airline.code}",
            error=exc,
        )
        try:
            await self._producer.send(
                DLQ, key=message.key(), value=self._codec.encode(DLQ, record), headers=dlq_headers
            )
            log.warning(
                "call dead-lettered",
                error_code=record.error_code,
                topic=record.original_topic,
                partition=record.original_partition,
                offset=record.original_offset,
            )
        except JetbridgeError as dlq_exc:
            log.error("dead-lettering failed", error=str(dlq_exc), original_error=record.error_message)


def _raw_headers(message: Message) -> list[tuple[str, str | bytes | None]]:
    raw = message.headers() or []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)
