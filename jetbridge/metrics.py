"""Every Prometheus series Jetbridge exports, declared once (names, labels, buckets), and the text answer.

Each long-running process serves ``GET /metrics`` in the Prometheus text format: the bridge on its MCP
port, stream and connector workers on their health port (``JB_HEALTH_PORT``), the simulators on their
control port. A process exports the series it updates: a labelled series appears on first use, and the
unlabelled ones of one stage are registered by that stage (``serve``), so a bridge shows no router counter
at 0. Label values are bounded sets (stage, airline code, status, error code), never ids.

    series                             type       labels            updated by
    jb_searches_total                  counter    outcome           bridge (complete, partial, …, backbone_unavailable)
    jb_search_duration_seconds         histogram  outcome           bridge (tool call, end to end)
    jb_requests_routed_total           counter    -                 router
    jb_replies_total                   counter    status            aggregator
    jb_open_joins                      gauge      -                 aggregator
    jb_airline_calls_total             counter    airline, outcome  connectors (ok, timeout, error, …)
    jb_airline_call_duration_seconds   histogram  airline           connectors (one call, retries included)
    jb_airline_retries_total           counter    airline           connectors
    jb_circuit_state                   gauge      airline           connectors (0 closed, 1 half-open, 2 open)
    jb_airline_quarantined             gauge      airline           connectors (1: MCP tools off pin, endpoint refused)
    jb_rate_limit_waits_total          counter    airline           connectors
    jb_rate_limit_wait_seconds_total   counter    airline           connectors
    jb_errors_total                    counter    stage, code       every stage
    jb_dlq_writes_total                counter    stage, code       every stage
    jb_dlq_pending                     gauge      stage             every stage (dead letters not written yet)
    jb_dlq_depth                       gauge      -                 stream workers (records on jb.dlq.v1)
    jb_consumer_lag                    gauge      group, topic      stream and connector workers
    jb_allowances_shared               gauge      -                 bridge (1: clients' allowances counted in Redis)
    jb_cache_available                 gauge      -                 router, connectors (1: the offer cache answers)
    jb_cache_lookups_total             counter    airline, result   router (hit, miss, stale, bypass)
    jb_cache_calls_saved_total         counter    airline           router, connectors (answered from the cache)
    jb_cache_stale_serves_total        counter    airline           router, connectors (stale offers served)
    jb_cache_coalesced_total           counter    airline           connectors (calls that waited for another's)
    jb_order_calls_total               counter    airline, operation, outcome   connectors (ok, reconciled, unknown, …)
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

from jetbridge.kafka import with_logger
from jetbridge.log import get_logger

__all__ = [
    "AIRLINE_CALLS",
    "AIRLINE_CALL_SECONDS",
    "AIRLINE_QUARANTINED",
    "AIRLINE_RETRIES",
    "ALLOWANCES_SHARED",
    "CIRCUIT_STATE",
    "CONSUMER_LAG",
    "DLQ_DEPTH",
    "DLQ_PENDING",
    "DLQ_WRITES",
    "ERRORS",
    "OPEN_JOINS",
    "ORDER_CALLS",
    "RATE_LIMIT_WAITS",
    "RATE_LIMIT_WAIT_SECONDS",
    "REPLIES",
    "REQUESTS_ROUTED",
    "SEARCHES",
    "SEARCH_SECONDS",
    "LagMonitor",
    "metrics_answer",
    "serve",
]

log = get_logger(__name__)

# Searches answer within a deadline of up to 15 s; airline calls within a few seconds.
_SEARCH_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 15.0)
_CALL_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)

SEARCHES = Counter("jb_searches", "Searches the bridge answered, by outcome.", ["outcome"])
SEARCH_SECONDS = Histogram(
    "jb_search_duration_seconds", "Tool call to answer, at the bridge.", ["outcome"], buckets=_SEARCH_BUCKETS
)
# Unlabelled series would show (at 0) in every process that imports this module: registered by ``serve``.
REQUESTS_ROUTED = Counter("jb_requests_routed", "Search requests the router fanned out.", registry=None)
REPLIES = Counter("jb_replies", "Replies the aggregator sent, by status.", ["status"])
OPEN_JOINS = Gauge(
    "jb_open_joins", "Joins the aggregator holds open (waiting for airlines or the deadline).", registry=None
)
AIRLINE_CALLS = Counter("jb_airline_calls", "Airline calls, by airline and outcome.", ["airline", "outcome"])
AIRLINE_CALL_SECONDS = Histogram(
    "jb_airline_call_duration_seconds", "One airline call, retries included.", ["airline"], buckets=_CALL_BUCKETS
)
AIRLINE_RETRIES = Counter("jb_airline_retries", "Airline calls tried again after a retriable error.", ["airline"])
CIRCUIT_STATE = Gauge("jb_circuit_state", "Circuit breaker per airline: 0 closed, 1 half-open, 2 open.", ["airline"])
AIRLINE_QUARANTINED = Gauge(
    "jb_airline_quarantined",
    "1 while an airline is quarantined, not called: its MCP tools differ from the approved pin, or its host "
    "resolves to an address the registry does not allow.",
    ["airline"],
)
RATE_LIMIT_WAITS = Counter("jb_rate_limit_waits", "Calls that waited for the airline's rate limit.", ["airline"])
RATE_LIMIT_WAIT_SECONDS = Counter(
    "jb_rate_limit_wait_seconds", "Time calls spent waiting for the airline's rate limit.", ["airline"]
)
ERRORS = Counter("jb_errors", "Errors, by stage and error code.", ["stage", "code"])
DLQ_WRITES = Counter("jb_dlq_writes", "Dead letters written, by stage and error code.", ["stage", "code"])
DLQ_PENDING = Gauge("jb_dlq_pending", "Dead letters that could not be written yet (the partition waits).", ["stage"])
DLQ_DEPTH = Gauge("jb_dlq_depth", "Records on the dead-letter topic (end minus start offsets).", registry=None)
CONSUMER_LAG = Gauge("jb_consumer_lag", "Messages not yet consumed by a group, per topic.", ["group", "topic"])
CACHE_AVAILABLE = Gauge(
    "jb_cache_available", "1 while the offer cache (Redis) answers, 0 while it does not.", registry=None
)
CACHE_LOOKUPS = Counter(
    "jb_cache_lookups",
    "Offer cache lookups by the router, by airline and result (hit, miss, stale, bypass).",
    ["airline", "result"],
)
CACHE_CALLS_SAVED = Counter("jb_cache_calls_saved", "Airline calls not made: answered from the cache.", ["airline"])
CACHE_STALE_SERVES = Counter(
    "jb_cache_stale_serves", "Stale cached offers served because the airline could not answer live.", ["airline"]
)
CACHE_COALESCED = Counter(
    "jb_cache_coalesced",
    "Airline calls not made: an identical search's call was in flight (single flight).",
    ["airline"],
)
ALLOWANCES_SHARED = Gauge(
    "jb_allowances_shared",
    "1 while the clients' allowances are counted in Redis (shared by the bridges), 0 while in this process.",
    registry=None,
)


def serve(*metrics: Counter | Gauge) -> None:
    """Export these unlabelled series from this process (once; calling again changes nothing)."""
    for metric in metrics:
        with contextlib.suppress(ValueError):  # already registered
            REGISTRY.register(metric)


def metrics_answer() -> tuple[int, str, bytes]:
    """The ``/metrics`` answer for ``jetbridge.health.HealthServer.route``."""
    return 200, CONTENT_TYPE_LATEST, generate_latest()


class LagMonitor:
    """Keeps ``jb_consumer_lag`` (and optionally ``jb_dlq_depth``) current for one consumer group, read every
    ``interval_s`` from the broker (committed offsets against end offsets), off the event loop."""

    def __init__(
        self,
        config: dict[str, Any],
        group: str,
        topics: list[str],
        *,
        dlq_topic: str | None = None,
        interval_s: float = 5.0,
    ) -> None:
        self._config = config
        self._group = group
        self._topics = topics
        self._dlq_topic = dlq_topic
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lag-{self._group}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        consumer = await asyncio.to_thread(
            Consumer, with_logger(self._config) | {"group.id": self._group, "enable.auto.commit": False}
        )
        try:
            while True:
                try:
                    await asyncio.to_thread(self._measure, consumer)
                except Exception as exc:  # noqa: BLE001 - a metric must never stop its process
                    log.debug("lag not measured", group=self._group, error=repr(exc))
                await asyncio.sleep(self._interval_s)
        finally:
            await asyncio.to_thread(consumer.close)

    def _measure(self, consumer: Consumer) -> None:
        # Nothing else polls this consumer, and its log lines and errors wait in its queue until a poll serves
        # them: without this they all came out at once, with the time of the process's shutdown.
        consumer.poll(0)
        metadata = consumer.list_topics(timeout=5)
        for topic in self._topics:
            info = metadata.topics.get(topic)
            if info is None or info.error is not None:
                continue
            partitions = [TopicPartition(topic, p) for p in info.partitions]
            committed = consumer.committed(partitions, timeout=5)
            lag = 0
            for tp in committed:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=5)
                position = tp.offset if tp.offset >= 0 else low
                lag += max(0, high - position)
            CONSUMER_LAG.labels(self._group, topic).set(lag)
        if self._dlq_topic is not None and self._dlq_topic in metadata.topics:
            depth = 0
            for p in metadata.topics[self._dlq_topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(self._dlq_topic, p), timeout=5)
                depth += high - low
            DLQ_DEPTH.set(depth)


# jb_order_calls_total (connectors): order calls answered, by airline, operation (price, create, retrieve, cancel)
# and outcome (ok, reconciled, unknown, poison, or the error's code).
ORDER_CALLS = Counter(
    "jb_order_calls", "Order calls answered, by airline, operation and outcome.", ["airline", "operation", "outcome"]
)
