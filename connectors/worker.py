"""The connector worker runtime: consume an airline's call topic, call the airline with bounded
concurrency, produce the normalised response, then commit.

Offsets are committed only up to the lowest call not yet done on each partition, and a call is done once
its response is acknowledged by the broker (and its dead letter, if it failed, too), so a crash replays
unfinished calls and never loses one; the aggregator absorbs the duplicates. A failing call becomes an
``ERROR``/``TIMEOUT`` response for that airline plus a dead letter, and the partition moves on. A dead
letter that cannot be written holds its call in flight (Dead Letter Channel, ``jetbridge/dlq.py``): the
partition's committed offset stays before it and the worker reports itself stalled.

Ownership is tracked per partition with an assignment epoch: a call that finishes after its partition was
revoked (or revoked and assigned again) is ignored, and only partitions the worker owns are committed.

The airline is protected from us (``connectors/resilience.py``): every attempt of ``_call_airline`` is inside
the airline's Retry policy, Circuit Breaker and Throttler. A call is taken off the topic only when the
airline's rate limit has a token for it (or it will fail fast without one); otherwise the worker stops
fetching the airline's partitions (backpressure) rather than buffering calls without bound. Only calls that
failed for good (after their retries) and poison reach the dead-letter topic: a circuit open, a rate-limit
or Retry-After wait that would pass the deadline, and timeouts are the airline's state, told in the
response and counted in metrics. So is a quarantine (an MCP airline whose tools differ from the approved pin,
``connectors/pins.py``, or an airline whose host resolves to an address the registry does not allow,
``connectors/egress.py``): such a call is answered before the guard, spending no token and no breaker permit.
The worker publishes a quarantine when it begins, ends or changes its reason (on ``jb.airline-health.v1``,
through the board its breaker publishes with), so every worker, the router and ``list_airlines`` can see it.

With the offer cache on, each call goes through the worker's `CallCache` (``connectors/call_cache.py``):
identical calls share one airline call (single flight, in the process and across instances through Redis), a
live answer with offers is stored for the others, and a call the airline cannot answer is answered from the
stale entry when its policy allows. A quarantined airline's calls are not: an operator must look first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import httpx
import structlog
from confluent_kafka import KafkaException, Message, TopicPartition

from connectors.base import AirlineConnector, build_connector
from connectors.call_cache import Answer, CallCache, FlightCache
from connectors.egress import EndpointGate
from connectors.pins import pin_check_of, quarantine_refusal
from connectors.resilience import AirlineGuard, CallOutcome, Clock
from jetbridge import tracing
from jetbridge.airlines import Airline
from jetbridge.dlq import Backoff, DeadLetterChannel, DeadLetterSend, DlqHeaders, belongs_in_dlq, dead_letter
from jetbridge.errors import (
    AirlineQuarantined,
    AirlineThrottled,
    AirlineTimeout,
    CircuitOpen,
    DeadlineExceeded,
    JetbridgeError,
    KafkaError,
    RateLimited,
)
from jetbridge.health_board import HealthBoard
from jetbridge.kafka import HEADER_DEADLINE_MS, HEADER_TRACEPARENT, AsyncConsumer, AsyncProducer, decode_headers
from jetbridge.log import get_logger
from jetbridge.metrics import (
    AIRLINE_CALL_SECONDS,
    AIRLINE_CALLS,
    AIRLINE_QUARANTINED,
    ERRORS,
    RATE_LIMIT_WAIT_SECONDS,
    RATE_LIMIT_WAITS,
)
from jetbridge.routing import call_budget_s
from jetbridge.topics import TopicNames
from schemas.codec import AvroCodec
from schemas.models import (
    AirlineCall,
    AirlineResponse,
    DeadLetter,
    ErrorInfo,
    Offer,
    OfferSource,
    ResponseStatus,
    now_utc,
)

__all__ = ["Commit", "ConnectorWorker", "OffsetTracker", "airline_response", "call_context"]

log = get_logger(__name__)

BACKSTOP_S = 2.0
# While every slot is busy the worker still polls this often, so the group keeps it (max.poll.interval.ms)
# and rebalances are served, even when calls are held for a long time by an unwritable DLQ.
_SATURATED_POLL_S = 0.5
# How long one poll waits for calls when there are none. Each wait is a trip to the consumer's thread and
# back; with one consumer per airline, idle polling at 0.1 s cost a worker 2.6 ms of CPU per airline per
# second (issue 8: 20 synthetic airlines, `jetbridge bench --airline-counts`).
_IDLE_POLL_S = 0.5
# Calls waiting in memory for the airline's rate limit before the worker stops fetching: one fetch batch.
_BACKLOG_LIMIT = 64
# Outcome labels of jb_airline_calls_total for calls the airline never saw or asked us to slow down.
_OUTCOMES = {
    CircuitOpen.code: "circuit_open",
    RateLimited.code: "rate_limited",
    AirlineThrottled.code: "throttled",
    AirlineQuarantined.code: "quarantined",
}


class Commit(NamedTuple):
    """An offset to commit on a partition, chosen under the given assignment epoch."""

    partition: int
    offset: int
    epoch: int


@dataclass
class _Owned:
    epoch: int
    in_flight: set[int] = field(default_factory=set)
    highest_done: int = -1
    committed: int = -1


class OffsetTracker:
    """Which offsets of each owned partition are in flight; what may be committed is below the lowest one.

    Every assignment of a partition opens a new epoch; a call is counted only under the epoch it started in.
    Thread-safe: rebalance callbacks update it from the consumer's thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owned: dict[int, _Owned] = {}
        self._epochs = itertools.count(1)

    def assign(self, partitions: Iterable[int]) -> None:
        with self._lock:
            for p in partitions:
                # An incremental assignment names only new partitions; one already owned keeps its calls.
                if p not in self._owned:
                    self._owned[p] = _Owned(next(self._epochs))

    def revoke(self, partitions: Iterable[int]) -> None:
        with self._lock:
            for p in partitions:
                self._owned.pop(p, None)

    def owned(self) -> list[int]:
        with self._lock:
            return sorted(self._owned)

    def owns(self, partition: int, epoch: int) -> bool:
        with self._lock:
            state = self._owned.get(partition)
            return state is not None and state.epoch == epoch

    def started(self, partition: int, offset: int) -> int | None:
        """Track a call; returns its epoch, or None when the partition is not owned (leave the call alone)."""
        with self._lock:
            state = self._owned.get(partition)
            if state is None:
                return None
            state.in_flight.add(offset)
            return state.epoch

    def finished(self, partition: int, offset: int, epoch: int) -> bool:
        """Count a call as done; False (and nothing changes) when its partition was revoked since it began."""
        with self._lock:
            state = self._owned.get(partition)
            if state is None or state.epoch != epoch:
                return False
            state.in_flight.discard(offset)
            state.highest_done = max(state.highest_done, offset)
            return True

    def committable(self, partitions: Iterable[int] | None = None) -> list[Commit]:
        """Next offset to commit per owned partition (Kafka commits the offset of the next message to read)."""
        with self._lock:
            wanted = self._owned if partitions is None else {p: self._owned[p] for p in partitions if p in self._owned}
            result: list[Commit] = []
            for p, state in wanted.items():
                if state.highest_done < 0:
                    continue
                next_offset = min(state.in_flight) if state.in_flight else state.highest_done + 1
                if next_offset > state.committed:
                    result.append(Commit(p, next_offset, state.epoch))
            return result

    def mark_committed(self, commits: Iterable[Commit]) -> None:
        with self._lock:
            for c in commits:
                state = self._owned.get(c.partition)
                if state is not None and state.epoch == c.epoch:
                    state.committed = max(state.committed, c.offset)

    def hand_over(self, consumer: Any, topic: str, partitions: list[int]) -> None:
        """On the consumer's thread, in a revoke callback, while ``partitions`` are still ours: commit what is done
        on them (synchronously, so their new owner starts after it) and stop tracking them."""
        final = self.committable(partitions)
        if final:
            try:
                consumer.commit(
                    offsets=[TopicPartition(topic, c.partition, c.offset) for c in final], asynchronous=False
                )
            except KafkaException as exc:
                log.warning("commit on revoke failed; the new owner replays", topic=topic, error=str(exc))
        self.revoke(partitions)

    async def commit(self, consumer: AsyncConsumer, topic: str) -> None:
        """Commit every owned partition up to its lowest call in flight (nothing to do: no trip to the consumer)."""
        if not self.committable():
            # Nothing finished since the last commit (the tracker is thread-safe): no trip to the consumer's
            # thread. Idle, that trip was most of a worker's CPU: 5 a second per airline.
            return
        chosen: list[Commit] = []

        def choose() -> list[TopicPartition]:
            chosen.extend(self.committable())
            return [TopicPartition(topic, c.partition, c.offset) for c in chosen]

        try:
            committed = await consumer.commit_chosen(choose)
        except JetbridgeError as exc:
            log.warning("offset commit failed; will retry", topic=topic, error=str(exc))
            return
        done = {(tp.partition, tp.offset) for tp in committed}
        self.mark_committed(c for c in chosen if (c.partition, c.offset) in done)


def airline_response(
    airline: Airline,
    *,
    request_id: str,
    correlation_id: str,
    offers: list[Offer],
    error: JetbridgeError | None,
    latency_ms: int,
    attempts: int = 1,
    source: OfferSource = OfferSource.LIVE,
    cached_at: datetime | None = None,
) -> AirlineResponse:
    """The normalised answer of one airline call: its offers, or the error as TIMEOUT or ERROR. Stale offers
    (``source`` STALE) answer OK with the live call's error kept, so the reply can say why they are stale."""
    if error is None or source is OfferSource.STALE:
        status = ResponseStatus.OK
    else:
        status = ResponseStatus.TIMEOUT if _timed_out(error) else ResponseStatus.ERROR
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
        source=source,
        cached_at=cached_at,
    )


def _timed_out(error: JetbridgeError) -> bool:
    return isinstance(error, AirlineTimeout | DeadlineExceeded)


def _status(answer: Answer) -> ResponseStatus:
    if answer.error is None or answer.source is OfferSource.STALE:
        return ResponseStatus.OK
    return ResponseStatus.TIMEOUT if _timed_out(answer.error) else ResponseStatus.ERROR


class ConnectorWorker:
    """One airline's worker: a member of consumer group ``jb.connector.<IATA>`` (behind the topic prefix)."""

    def __init__(
        self,
        airline: Airline,
        *,
        codec: AvroCodec,
        producer: AsyncProducer,
        consumer_config: dict[str, Any],
        http: httpx.AsyncClient,
        calls_topic: str | None = None,
        responses_topic: str | None = None,
        dlq_topic: str | None = None,
        group_id: str | None = None,
        instance: str = "",
        session_timeout_ms: int = 6000,
        concurrency: int | None = None,
        deadline_margin_ms: int = 250,
        connector: AirlineConnector | None = None,
        dlq_send: DeadLetterSend | None = None,
        dlq_backoff: Backoff | None = None,
        drain_timeout_s: float = 10.0,
        health: HealthBoard | None = None,
        clock: Clock | None = None,
        endpoint_gate: EndpointGate | None = None,
        offer_cache: FlightCache | None = None,
    ) -> None:
        names = TopicNames()
        self.airline = airline
        self.calls_topic = calls_topic or names.calls(airline.code)
        self.group_id = group_id or f"jb.connector.{airline.code}"
        self.responses_topic = responses_topic or names.responses
        self.dlq_topic = dlq_topic or names.dlq
        self._codec = codec
        self._producer = producer
        self._connector = connector or build_connector(airline, http)
        # The addresses of the airline's host, judged at start and every so often (connectors/egress.py). The
        # worker judges the endpoint of the connector it builds; an injected connector (a test's) is the caller's.
        self._endpoint = endpoint_gate or (EndpointGate(airline) if connector is None else None)
        self._margin = timedelta(milliseconds=deadline_margin_ms)
        self._slots = asyncio.Semaphore(concurrency or airline.concurrency)
        self._drain_timeout_s = drain_timeout_s
        self._tracker = OffsetTracker()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.assigned = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}"
        # Retry, Circuit Breaker and Throttler; the breaker is shared with the airline's other workers (and the
        # router and bridge) through the health topic.
        self.guard = AirlineGuard(
            airline,
            instance=self.instance,
            clock=clock,
            publish=health.publish if health is not None else None,
        )
        if health is not None:
            health.subscribe(airline.code, self.guard.adopt)
        # Single flight, cache fill and stale answers around each call (connectors/call_cache.py); None: off.
        self._calls_cache = CallCache(airline, offer_cache, instance=self.instance) if offer_cache is not None else None
        # A quarantine is published through the same board, when this worker finds it begun, ended or changed.
        self._health = health
        self._said_quarantine: str | None = None  # what the health topic says of it, as far as this worker knows
        pin_check = pin_check_of(self._connector)
        for source in (pin_check, self._endpoint):
            if source is not None:
                source.on_change = self._quarantine_changed
        # Calls received but not started (no slot, or no token yet); already tracked, so no commit passes them.
        self._backlog: deque[tuple[Message, int]] = deque()
        # When each call still in the backlog first had to wait for a token (for the rate-limit metrics).
        self._waiting_since: dict[tuple[int, int], float] = {}
        self.backlog_peak = 0
        self.dead_letters = DeadLetterChannel(
            dlq_send or self._send_dead_letter, stage=f"connector.{airline.code}", backoff=dlq_backoff
        )
        config = consumer_config | {
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # The broker answers a fetch as soon as one byte arrives, so a long wait adds no latency;
            # a short one only makes every idle consumer poll the broker hundreds of times a second.
            "fetch.wait.max.ms": 500,
            "partition.assignment.strategy": "cooperative-sticky",
            # Partitions added to the airline's topic (`topics apply` after its registry entry's count was raised)
            # are taken on within seconds: a producer sends there after its own refresh (up to five minutes), and a
            # call that lands there before these 10 s waits at most that long (a search's may miss its deadline).
            "topic.metadata.refresh.interval.ms": 10_000,
            # A worker that dies loses its partitions after this long; three heartbeats fit in it.
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(100, session_timeout_ms // 3),
            # Prefetch little: calls wait on the topic, not in memory, while the airline's limits hold them
            # back (librdkafka's defaults buffer up to 64 MB per worker).
            "queued.min.messages": 1000,
            "queued.max.messages.kbytes": 4096,
        }
        if instance:
            # Static membership: a restarted instance takes its partitions back at once, without a rebalance.
            config["group.instance.id"] = f"{instance}-{airline.code}"
        self._consumer = AsyncConsumer(config)
        self.handled = 0
        # Assignment changes seen (assign, revoke, lost): a restart that keeps its static membership adds none
        # to the other members.
        self.rebalances = 0

    async def run(self) -> None:
        """Consume until ``stop()``; then finish what is in flight and commit it."""
        self._loop = asyncio.get_running_loop()
        known = self._health.get(self.airline.code) if self._health is not None else None
        self._said_quarantine = known.quarantine if known is not None else None  # an earlier run's finding
        if self._endpoint is not None:
            await self._endpoint.check()  # before the first call: a refused airline is never called
        self._quarantine_changed()
        await self._consumer.subscribe(
            [self.calls_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        commit_task = asyncio.create_task(self._commit_loop())
        watch_task = asyncio.create_task(self._endpoint.watch()) if self._endpoint is not None else None
        log.info("connector worker started", airline=self.airline.code, kind=self.airline.kind, topic=self.calls_topic)
        backlog = self._backlog
        paused = False
        try:
            while not self._stopping.is_set():
                token_wait = await self._start_from(backlog)
                slot_bound = bool(backlog) and self._slots.locked()
                if slot_bound or len(backlog) >= _BACKLOG_LIMIT:
                    # Every slot is busy, or a batch of calls waits for the airline's rate limit: stop fetching
                    # (backpressure), but go on polling (see _SATURATED_POLL_S). Every round, as partitions
                    # assigned meanwhile start unpaused.
                    await self._consumer.pause_assigned()
                    paused = True
                    if slot_bound:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._slots.acquire(), _SATURATED_POLL_S)
                            self._slots.release()
                    else:
                        next_token_s = _SATURATED_POLL_S if token_wait is None else token_wait
                        await asyncio.sleep(min(next_token_s, _SATURATED_POLL_S))
                elif paused:
                    await self._consumer.resume_assigned()
                    paused = False
                # Below the limit the worker keeps fetching while calls wait for a token: a new call that cannot
                # get one before its deadline is answered at once instead of waiting on the topic for nothing.
                # The poll returns as soon as a call arrives, so waiting longer adds no latency; it only bounds
                # how soon a commit or a stop queued behind it on the consumer's thread runs.
                poll_s = 0.0 if paused else min(token_wait, _IDLE_POLL_S) if token_wait is not None else _IDLE_POLL_S
                messages = await self._consumer.consume(64, poll_s)
                for message in messages:
                    if message.error() is not None:
                        log.warning("consume error", airline=self.airline.code, error=str(message.error()))
                        continue
                    epoch = self._tracker.started(int(message.partition() or 0), int(message.offset() or 0))
                    if epoch is not None:
                        backlog.append((message, epoch))
                self.backlog_peak = max(self.backlog_peak, len(backlog))
        finally:
            # Calls finishing from here on get one attempt at their dead letter; one that fails stays
            # uncommitted and is replayed by whoever owns the partition next.
            self.dead_letters.close()
            await self._drain()
            for task in (commit_task, watch_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await self._commit()
            await self._consumer.close()
            await self._connector.aclose()

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
            "dlq": self.dead_letters.state(),
            "circuit": self.guard.snapshot(),
            "backlog": len(self._backlog),
            "endpoint": self._endpoint.state() if self._endpoint is not None else None,
        }

    @property
    def endpoint_refused(self) -> str | None:
        """Why the airline's endpoint is refused (its calls answered without calling it); None when it is not."""
        return self._endpoint.reason if self._endpoint is not None else None

    async def _start_from(self, backlog: deque[tuple[Message, int]]) -> float | None:
        """Start every call of the backlog the airline admits while a slot is free, in order; returns how long
        until a waiting call may have a token, or None when none waits for one.

        A call waiting for a token does not hold back those behind it that will fail fast without one (circuit
        open, or no token before their deadline): they are answered now, not when their deadline has passed.
        """
        waiting: deque[tuple[Message, int]] = deque()
        token_wait: float | None = None
        while backlog and not self._slots.locked():
            message, epoch = backlog.popleft()
            where = (int(message.partition() or 0), int(message.offset() or 0))
            if not self._tracker.owns(where[0], epoch):
                self._waiting_since.pop(where, None)
                continue  # revoked while it waited: its new owner reads it
            admission = self.guard.admit(self._budget_from_headers(message))
            if not admission.start:
                self._waiting_since.setdefault(where, time.monotonic())
                waiting.append((message, epoch))
                token_wait = admission.wait_s if token_wait is None else min(token_wait, admission.wait_s)
                continue
            since = self._waiting_since.pop(where, None)
            if since is not None:
                RATE_LIMIT_WAITS.labels(self.airline.code).inc()
                RATE_LIMIT_WAIT_SECONDS.labels(self.airline.code).inc(time.monotonic() - since)
            await self._slots.acquire()
            task = asyncio.create_task(self._handle(message, epoch, admission.prepaid))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        backlog.extendleft(reversed(waiting))
        return token_wait

    def _budget_from_headers(self, message: Message) -> float | None:
        """Seconds left for the call, from its ``deadline_ms`` header (before decoding it); None if unknown."""
        raw = decode_headers(message.headers()).get(HEADER_DEADLINE_MS, "")
        if not raw.isdigit() or int(raw) == 0:
            return None
        return call_budget_s(datetime.fromtimestamp(int(raw) / 1000, UTC), self._margin, datetime.now(UTC))

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=self._drain_timeout_s)
        for task in late:
            task.cancel()  # left uncommitted: replayed later, never lost
        if late:
            log.warning(
                "calls cancelled at shutdown; they will be replayed", airline=self.airline.code, calls=len(late)
            )
            await asyncio.gather(*late, return_exceptions=True)

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # Runs on the consumer thread, before any message of these partitions is returned.
        self.rebalances += 1
        self._tracker.assign(tp.partition for tp in partitions if tp.topic == self.calls_topic)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.assigned.set)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Runs on the consumer thread inside poll, while the partitions are still ours: hand over what is done,
        # so the new owner starts after it. Calls still in flight are ignored when they finish (their epoch
        # is gone) and replayed by the new owner; the aggregator keeps one answer per airline.
        self.rebalances += 1
        self._tracker.hand_over(
            consumer, self.calls_topic, [tp.partition for tp in partitions if tp.topic == self.calls_topic]
        )

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # The group already gave these partitions away (session expired): committing now would be refused or,
        # worse, land over the new owner's progress.
        self.rebalances += 1
        self._tracker.revoke(tp.partition for tp in partitions if tp.topic == self.calls_topic)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            await self._commit()

    async def _commit(self) -> None:
        await self._tracker.commit(self._consumer, self.calls_topic)

    async def _handle(self, message: Message, epoch: int, prepaid: bool = False) -> None:
        partition, offset = int(message.partition() or 0), int(message.offset() or 0)
        headers = decode_headers(message.headers())
        try:
            # One span per airline call, child of the router's (the call's traceparent).
            with call_context(
                self.airline.code,
                self.calls_topic,
                self.group_id,
                headers,
                partition,
                offset,
                headers.get("request_id"),
            ):
                failure: _Failure | None
                try:
                    failure = await self._process(message, prepaid)
                except Exception as exc:  # noqa: BLE001 - one bad call never stops the worker
                    if prepaid:
                        self.guard.bucket.refund()  # poison: the airline was never called
                    failure = _Failure(exc, 1, None)
                if failure is not None:
                    # Returns only once the dead letter is written: until then the call stays in flight.
                    await self._dead_letter(message, headers, failure)
            if self._tracker.finished(partition, offset, epoch):
                self.handled += 1
        except KafkaError as exc:
            # The DLQ channel closed at shutdown with this call's dead letter unwritten.
            log.warning(
                "call left uncommitted; it will be replayed",
                airline=self.airline.code,
                partition=partition,
                offset=offset,
                error=exc.message,
            )
        finally:
            self._slots.release()

    async def _process(self, message: Message, prepaid: bool) -> _Failure | None:
        """Answer one call; returns its failure when it must be dead-lettered too."""
        call = await self._codec.decode(message.value(), AirlineCall)
        started = time.monotonic()
        # The guard caps each attempt inside it by the airline's timeout_ms (the shared attempt rule).
        budget = call_budget_s(call.deadline, self._margin, now_utc())
        token = prepaid  # a token the admission took for this call, until an attempt spends it

        async def live(budget_s: float) -> CallOutcome[list[Offer]]:
            nonlocal token
            paid, token = token, False
            return await self.guard.call(
                lambda timeout_s: self._call_airline(call, timeout_s),
                budget_s=budget_s,
                operation="search",
                prepaid=paid,
            )

        def respond(answer: Answer) -> AirlineResponse:
            return airline_response(
                self.airline,
                request_id=call.request_id,
                correlation_id=call.correlation_id,
                offers=answer.offers,
                error=answer.error,
                latency_ms=int((time.monotonic() - started) * 1000),
                attempts=answer.attempts,
                source=answer.source,
                cached_at=answer.cached_at,
            )

        async def tell(response: AirlineResponse) -> None:
            await self._producer.send(
                self.responses_topic,
                key=call.request_id,
                value=self._codec.encode(self.responses_topic, response),
                headers=_raw_headers(message),
            )

        refused = self._quarantine_refusal()
        answer: Answer
        if refused is not None:
            # Not answered from the cache, stale or not: an operator must look at the airline first.
            answer = Answer.live(CallOutcome(None, refused, 0))
            await tell(respond(answer))
        elif self._calls_cache is None:
            answer = Answer.live(await live(budget))
            await tell(respond(answer))
        elif call.fresh:
            # The agent asked for live offers (fresh, copied into the call by the router): its own call to the
            # airline, no identical call's answer shared and no stale stand-in; its answer refreshes the cache.
            answer = Answer.live(await live(budget))
            response = respond(answer)
            await tell(response)
            await self._calls_cache.fill(call, response)
        else:
            answer = await self._calls_cache.answer(call, budget_s=budget, live=live, respond=respond, tell=tell)
        if token:
            self.guard.bucket.refund()  # the airline was not called for this call (an exception: _handle refunds)
        elapsed = time.monotonic() - started
        self._measure(answer, elapsed)
        error = answer.error
        tracing.annotate(
            {
                "jetbridge.response.status": _status(answer).value,
                "jetbridge.response.source": answer.source.value,
                "jetbridge.offers": len(answer.offers),
                "jetbridge.attempts": answer.attempts,
            },
            error_code=error.code if error else None,
        )
        log.info(
            "airline answered",
            status=_status(answer).value,
            source=answer.source.value,
            offers=len(answer.offers),
            latency_ms=int(elapsed * 1000),
            attempts=answer.attempts,
            error_code=error.code if error else None,
        )
        if error is None or not belongs_in_dlq(error):
            return None
        return _Failure(error, answer.attempts, answer.first_failed_at)

    def _quarantine_refusal(self) -> AirlineQuarantined | None:
        """The answer of a call to a quarantined airline, given at once (no token, no breaker permit, no attempt):
        its host resolves to an address the registry does not allow, or its MCP tools differ from the pin."""
        refused = self._endpoint.refusal() if self._endpoint is not None else None
        return refused or quarantine_refusal(self._connector)

    def _quarantine_found(self) -> tuple[bool, str | None]:
        """Whether this worker knows yet if the airline is quarantined, and why (the message its calls get)."""
        if self._endpoint is not None:
            refused = self._endpoint.refusal()
            if refused is not None:
                return True, refused.message
            if self._endpoint.checked_at is None:
                return False, None
        pin_check = pin_check_of(self._connector)
        if pin_check is None:
            return True, None
        # Until its first listing, an MCP airline's tools are not known: say nothing rather than a guess.
        return pin_check.checked, pin_check.reason

    def _quarantine_changed(self) -> None:
        """After a check of the endpoint or the tools: the gauge, and a health record when what the topic says
        of the quarantine is no longer what this worker found (not on every call: only on a change)."""
        known, reason = self._quarantine_found()
        if not known:
            return
        code = self.airline.code
        AIRLINE_QUARANTINED.labels(code).set(1 if reason is not None else 0)
        if reason == self._said_quarantine:
            return
        self._said_quarantine = reason
        if self._health is not None:
            self._health.report_quarantine(code, reason, reporter=self.instance)
            log.info("airline quarantine published", airline=code, quarantine=reason)

    def _measure(self, answer: Answer, elapsed_s: float) -> None:
        code = self.airline.code
        error = answer.error
        if not answer.shared:
            # Calls made (or failed fast): a call that shared another's answer is counted by the cache metrics.
            outcome = _OUTCOMES.get(error.code, "timeout" if _timed_out(error) else "error") if error else "ok"
            AIRLINE_CALLS.labels(code, outcome).inc()
        if answer.attempts:
            AIRLINE_CALL_SECONDS.labels(code).observe(elapsed_s)
        if error is not None:
            ERRORS.labels(self.dead_letters.stage, error.code).inc()

    async def _call_airline(self, call: AirlineCall, budget_s: float) -> list[Offer]:
        """One attempt at the airline inside its time budget (retry, breaker and rate limit wrap it)."""
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

    async def _dead_letter(self, message: Message, headers: dict[str, str], failure: _Failure) -> None:
        record, dlq_headers = dead_letter(
            topic=str(message.topic()),
            partition=int(message.partition() or 0),
            offset=int(message.offset() or 0),
            key=message.key(),
            value=message.value(),
            headers=headers,
            stage=self.dead_letters.stage,
            error=failure.error,
            attempts=max(1, failure.attempts),
            first_failed_at=failure.first_failed_at,
        )
        await self.dead_letters.publish(record, dlq_headers, message.key())
        log.warning(
            "call dead-lettered",
            error_code=record.error_code,
            topic=record.original_topic,
            partition=record.original_partition,
            offset=record.original_offset,
        )

    async def _send_dead_letter(self, key: bytes | str | None, record: DeadLetter, headers: DlqHeaders) -> None:
        await self._producer.send(
            self.dlq_topic, key=key, value=self._codec.encode(self.dlq_topic, record), headers=list(headers)
        )


class _Failure(NamedTuple):
    """A call that failed for good: its last error, the attempts made, and when the first one failed."""

    error: BaseException
    attempts: int
    first_failed_at: datetime | None


def _raw_headers(message: Message) -> list[tuple[str, str | bytes | None]]:
    raw = message.headers() or []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)


@contextlib.contextmanager
def call_context(
    airline: str,
    topic: str,
    group_id: str,
    headers: Mapping[str, str],
    partition: int,
    offset: int,
    key: str | None,
) -> Iterator[None]:
    """The log context and span of one call an airline's worker processes (a search call or an order call).

    The span is the child of the call's ``traceparent`` (the router's span for a search call, the bridge's for an
    order call); the guard's attempts, retries and breaker decisions become its events (connectors/resilience.py).
    """
    with (
        structlog.contextvars.bound_contextvars(
            airline=airline, request_id=headers.get("request_id"), correlation_id=headers.get("correlation_id")
        ),
        tracing.span(
            f"process {topic}",
            parent=headers.get(HEADER_TRACEPARENT),
            kind=tracing.SpanKind.CONSUMER,
            attributes=tracing.messaging(
                topic,
                "process",
                key or "",
                {
                    "messaging.consumer.group.name": group_id,
                    "messaging.destination.partition.id": str(partition),
                    "messaging.kafka.offset": offset,
                    tracing.REQUEST_ID: headers.get("request_id", ""),
                    "jetbridge.stage": "connector",
                    "jetbridge.airline": airline,
                },
            ),
        ),
    ):
        yield
