"""Every topic Jetbridge uses, declared in one place: name, value schema, partitions, retention, cleanup.

`jetbridge topics apply` creates what is missing and aligns configs; it never deletes or shrinks.
"""

from __future__ import annotations

from dataclasses import dataclass

from jetbridge.airlines import AirlineRegistry
from schemas.models import (
    AggregatorControl,
    AirlineCall,
    AirlineResponse,
    AuditRecord,
    DeadLetter,
    Event,
    SearchReply,
    SearchRequest,
)

__all__ = [
    "AGGREGATIONS_CHANGELOG",
    "AGGREGATOR_CONTROL",
    "AIRLINE_RESPONSES",
    "AUDIT",
    "DLQ",
    "REPLIES",
    "REQUESTS",
    "TopicSpec",
    "airline_calls_topic",
    "declared_topics",
]

REQUESTS = "jb.requests.v1"
AIRLINE_RESPONSES = "jb.airline-responses.v1"
AGGREGATOR_CONTROL = "jb.aggregator-control.v1"
REPLIES = "jb.replies.v1"
DLQ = "jb.dlq.v1"
AUDIT = "jb.audit.v1"
AGGREGATIONS_CHANGELOG = "jetbridge-streams-aggregations-changelog"

_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS


def airline_calls_topic(code: str) -> str:
    return f"jb.airline.{code}.calls.v1"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    model: type[Event] | None  # None: not one of our Avro contracts (faust's own changelog)
    partitions: int
    retention_ms: int
    cleanup_policy: str = "delete"
    segment_ms: int | None = None

    def configs(self) -> dict[str, str]:
        configs = {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}
        if self.segment_ms is not None:
            configs["segment.ms"] = str(self.segment_ms)
        return configs


def declared_topics(registry: AirlineRegistry, partitions: int = 6) -> list[TopicSpec]:
    """The topics of the architecture for this airline registry.

    The aggregator's two inputs (responses and control) must have the same partition count: the
    aggregator's table is co-partitioned with both by request id.
    """
    specs = [
        TopicSpec(REQUESTS, SearchRequest, partitions, _DAY_MS),
        TopicSpec(AIRLINE_RESPONSES, AirlineResponse, partitions, _DAY_MS),
        TopicSpec(AGGREGATOR_CONTROL, AggregatorControl, partitions, _DAY_MS),
        TopicSpec(REPLIES, SearchReply, partitions, _HOUR_MS * 6),
        # Operators need time to inspect and replay: keep dead letters for two weeks.
        TopicSpec(DLQ, DeadLetter, 3, 14 * _DAY_MS),
        TopicSpec(AUDIT, AuditRecord, 3, 30 * _DAY_MS),
    ]
    specs += [TopicSpec(airline_calls_topic(a.code), AirlineCall, max(1, partitions // 2), _DAY_MS) for a in registry]
    # The aggregator table's changelog (faust's JSON, not a contract). Declared here so it is compacted
    # *and* trimmed: an aggregation is useless after a minute, and a worker replays this topic at start.
    specs.append(
        TopicSpec(AGGREGATIONS_CHANGELOG, None, partitions, _HOUR_MS, "compact,delete", segment_ms=_HOUR_MS // 6)
    )
    return specs
