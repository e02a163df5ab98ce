"""Every topic Jetbridge uses, declared in one place: name, value schema, partitions, retention, cleanup.

`jetbridge topics apply` creates what is missing and aligns configs; it never deletes or shrinks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jetbridge.airlines import AirlineRegistry
from schemas.compat import BACKWARD, FULL_TRANSITIVE
from schemas.models import (
    AggregatorControl,
    AirlineCall,
    AirlineHealth,
    AirlineResponse,
    AuditRecord,
    DeadLetter,
    DlqReplay,
    Event,
    OrderCall,
    OrderEvent,
    OrderReply,
    SearchReply,
    SearchRequest,
    TaskState,
)

__all__ = [
    "AGGREGATOR_CONTROL",
    "AIRLINE_HEALTH",
    "AIRLINE_RESPONSES",
    "AUDIT",
    "DLQ",
    "DLQ_REPLAYS",
    "ORDERS",
    "ORDER_REPLIES",
    "REPLIES",
    "REQUESTS",
    "TASKS",
    "Party",
    "TopicNames",
    "TopicSpec",
    "airline_calls_topic",
    "airline_orders_topic",
    "declared_topics",
]

REQUESTS = "jb.requests.v1"
AIRLINE_RESPONSES = "jb.airline-responses.v1"
AIRLINE_HEALTH = "jb.airline-health.v1"
AGGREGATOR_CONTROL = "jb.aggregator-control.v1"
REPLIES = "jb.replies.v1"
DLQ = "jb.dlq.v1"
DLQ_REPLAYS = "jb.dlq-replays.v1"
AUDIT = "jb.audit.v1"
ORDER_REPLIES = "jb.order-replies.v1"
ORDERS = "jb.orders.v1"
TASKS = "jb.tasks.v1"

_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS


def airline_calls_topic(code: str) -> str:
    return f"jb.airline.{code}.calls.v1"


def airline_orders_topic(code: str) -> str:
    """An airline's order calls: apart from its search calls, so a booking never queues behind a search flood."""
    return f"jb.airline.{code}.orders.v1"


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The topic names one deployment uses: the contract names above behind an optional prefix
    (``JB_TOPIC_PREFIX``), so tests and side-by-side stacks on one cluster have topics of their own."""

    prefix: str = ""

    @property
    def requests(self) -> str:
        return self.prefix + REQUESTS

    @property
    def responses(self) -> str:
        return self.prefix + AIRLINE_RESPONSES

    @property
    def airline_health(self) -> str:
        return self.prefix + AIRLINE_HEALTH

    @property
    def control(self) -> str:
        return self.prefix + AGGREGATOR_CONTROL

    @property
    def replies(self) -> str:
        return self.prefix + REPLIES

    @property
    def dlq(self) -> str:
        return self.prefix + DLQ

    @property
    def dlq_replays(self) -> str:
        return self.prefix + DLQ_REPLAYS

    @property
    def audit(self) -> str:
        return self.prefix + AUDIT

    @property
    def order_replies(self) -> str:
        return self.prefix + ORDER_REPLIES

    @property
    def orders(self) -> str:
        return self.prefix + ORDERS

    @property
    def tasks(self) -> str:
        return self.prefix + TASKS

    def calls(self, code: str) -> str:
        return self.prefix + airline_calls_topic(code)

    def order_calls(self, code: str) -> str:
        return self.prefix + airline_orders_topic(code)


# Who writes or reads a topic: the processes of ARCHITECTURE.md, the operators' `jetbridge` command, and the teams
# that read topics with their own tools. docs/asyncapi.json (jetbridge/asyncapi.py) has an operation for each.
Party = Literal["bridge", "router", "aggregator", "connectors", "operators", "analytics", "compliance"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    model: type[Event] | None  # None: not one of our Avro contracts (faust's own changelog)
    partitions: int
    retention_ms: int
    cleanup_policy: str = "delete"
    segment_ms: int | None = None
    key: str = ""  # what the record key (plain UTF-8) is, as people and docs/asyncapi.json say it
    writers: tuple[Party, ...] = ()
    readers: tuple[Party, ...] = ()
    # The value subject's compatibility level in the schema registry (`jetbridge topics apply` sets it): BACKWARD for
    # event topics; FULL_TRANSITIVE for compacted state, whose records of every version ever written stay readable
    # (an order untouched for a year keeps its first record) and are read whole by processes old and new alike.
    compatibility: str = BACKWARD
    # Whether `topics apply` may add partitions to it in place: a topic whose events are worked on one by one
    # (an airline's calls, its order calls). Not the co-partitioned search topics (a request's responses would
    # land on another partition than its join), nor compacted tables: those get a new topic (README "Evolving").
    grows: bool = False

    def configs(self) -> dict[str, str]:
        configs = {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}
        if self.segment_ms is not None:
            configs["segment.ms"] = str(self.segment_ms)
        return configs


def declared_topics(registry: AirlineRegistry, partitions: int = 6, prefix: str = "") -> list[TopicSpec]:
    """The topics of the architecture for this airline registry.

    The search agent's inputs (requests and responses) and its output (replies) have the same partition
    count: a request's join stays on the partition its key hashes to in all of them. The router hands its
    plan to the aggregator in memory (streams/joining.py); ``jb.aggregator-control.v1`` is still read, for
    plans written by workers of earlier versions (a rolling upgrade) and operators' replays of old dead
    letters, but nothing writes it any more.
    """
    names = TopicNames(prefix)
    specs = [
        TopicSpec(
            names.requests,
            SearchRequest,
            partitions,
            _DAY_MS,
            key="request id",
            writers=("bridge",),
            readers=("router",),
        ),
        TopicSpec(
            names.responses,
            AirlineResponse,
            partitions,
            _DAY_MS,
            key="request id",
            writers=("connectors", "router"),
            readers=("aggregator", "bridge"),
        ),
        TopicSpec(names.control, AggregatorControl, partitions, _DAY_MS, key="request id", readers=("aggregator",)),
        TopicSpec(
            names.replies,
            SearchReply,
            partitions,
            _HOUR_MS * 6,
            key="request id",
            writers=("aggregator",),
            readers=("bridge",),
        ),
        # Operators need time to inspect and replay: keep dead letters for two weeks.
        TopicSpec(
            names.dlq,
            DeadLetter,
            3,
            14 * _DAY_MS,
            key="original key",
            writers=("router", "aggregator", "connectors"),
            readers=("operators", "analytics"),
        ),
        # What `jetbridge dlq replay` sent, one record per dead letter (its id is the key). Compacted so
        # the latest replay of each is kept; deleted after the DLQ's own retention, by when the dead letter
        # it describes is gone too.
        TopicSpec(
            names.dlq_replays,
            DlqReplay,
            1,
            14 * _DAY_MS,
            cleanup_policy="compact,delete",
            compatibility=FULL_TRANSITIVE,
            key="dead letter id (`<partition>:<offset>`)",
            writers=("operators",),
            readers=("operators",),
        ),
        TopicSpec(
            names.audit,
            AuditRecord,
            3,
            30 * _DAY_MS,
            key="client id",
            writers=("bridge",),
            readers=("analytics", "compliance", "operators"),
        ),
        # One record per airline, the latest kept: every worker, router and bridge reads it whole at start-up.
        # Short segments so compaction has closed segments to work on.
        TopicSpec(
            names.airline_health,
            AirlineHealth,
            3,
            7 * _DAY_MS,
            cleanup_policy="compact",
            compatibility=FULL_TRANSITIVE,
            segment_ms=_HOUR_MS,
            key="airline code",
            writers=("connectors",),
            readers=("connectors", "router", "bridge"),
        ),
        # Orders: the replies like the search's; the orders themselves compacted by order id (the latest state of
        # each is kept for as long as the order lives: the bridge and analytics read it whole).
        TopicSpec(
            names.order_replies,
            OrderReply,
            partitions,
            _HOUR_MS * 6,
            key="request id",
            writers=("connectors",),
            readers=("bridge",),
        ),
        TopicSpec(
            names.orders,
            OrderEvent,
            3,
            365 * _DAY_MS,
            cleanup_policy="compact",
            compatibility=FULL_TRANSITIVE,
            segment_ms=_HOUR_MS,
            key="order id (`<IATA>:<reference>`)",
            writers=("connectors",),
            readers=("bridge", "analytics"),
        ),
        # MCP tasks: the latest state of each (key: task id), read whole by every bridge instance at start-up.
        # Compacted, and deleted after a day: longer than any task's TTL (mcp_bridge/tasks.py), so a live task is
        # never lost and the topic does not grow without bound.
        TopicSpec(
            names.tasks,
            TaskState,
            3,
            _DAY_MS,
            cleanup_policy="compact,delete",
            compatibility=FULL_TRANSITIVE,
            segment_ms=_HOUR_MS,
            key="task id",
            writers=("bridge",),
            readers=("bridge",),
        ),
    ]
    specs += [
        TopicSpec(
            names.calls(a.code),
            AirlineCall,
            a.calls_partitions or max(1, partitions // 2),
            _DAY_MS,
            key="request id",
            writers=("router",),
            readers=("connectors",),
            grows=True,
        )
        for a in registry
    ]
    specs += [
        TopicSpec(
            names.order_calls(a.code),
            OrderCall,
            a.order_partitions or max(1, partitions // 2),
            _DAY_MS,
            key="idempotency key (create), else order or offer id",
            writers=("bridge",),
            readers=("connectors",),
            grows=True,
        )
        for a in registry
    ]
    return specs
