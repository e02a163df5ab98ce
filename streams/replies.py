"""Which requests were already answered: the guard that makes "exactly one reply" hold across crashes.

A stream worker that takes partitions over (after a crash, a restart or a rebalance) replays every event
its predecessor had not committed, including events of joins that were already answered. Before it
handles any of them it reads the reply topic's same partitions back over a window (the reply topic is
keyed and partitioned like the aggregator's inputs) and remembers every request id found there; its own
replies are added as it sends them. A join whose request id is known is never answered again.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from datetime import datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka import KafkaError as BrokerError

from jetbridge.errors import KafkaError
from jetbridge.kafka import with_logger

__all__ = ["ReplyLedger", "scan_replies"]


class ReplyLedger:
    """Request ids answered within the window, oldest first so pruning is cheap."""

    def __init__(self, window: timedelta) -> None:
        self.window = window
        self._at: dict[str, datetime] = {}
        self._order: deque[tuple[datetime, str]] = deque()

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._at

    def __len__(self) -> int:
        return len(self._at)

    def add(self, request_id: str, at: datetime) -> None:
        if request_id not in self._at:
            self._at[request_id] = at
            self._order.append((at, request_id))

    def prune(self, now: datetime) -> None:
        horizon = now - self.window
        while self._order and self._order[0][0] < horizon:
            _, request_id = self._order.popleft()
            self._at.pop(request_id, None)


def scan_replies(
    config: dict[str, Any], topic: str, partitions: list[int], since_ms: int, timeout_s: float = 30.0
) -> dict[str, int]:
    """Request id -> reply timestamp (ms) of every reply on ``partitions`` of ``topic`` since ``since_ms``.

    Blocking (run it in a thread). Reads keys only; raises KafkaError when the broker cannot be read.
    """
    consumer = Consumer(
        with_logger(config)
        | {
            "group.id": f"jb.aggregator-scan.{uuid.uuid4().hex}",  # never joined, nothing committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
        }
    )
    try:
        starts = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in partitions], timeout_s)
        positions: list[TopicPartition] = []
        ends: dict[int, int] = {}
        for tp in starts:
            if tp.error is not None:
                raise KafkaError(f"reading {topic}[{tp.partition}] back: {tp.error}")
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout_s)
            start = tp.offset if tp.offset >= 0 else high  # -1: nothing written since then
            if start < high:
                positions.append(TopicPartition(topic, tp.partition, max(start, low)))
                ends[tp.partition] = high
        found: dict[str, int] = {}
        if not positions:
            return found
        consumer.assign(positions)
        remaining = set(ends)
        give_up = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > give_up:
                raise KafkaError(f"reading {topic} back took longer than {timeout_s:.0f} s")
            for message in consumer.consume(1000, 0.5):
                partition = int(message.partition() or 0)
                err = message.error()
                if err is not None:
                    if err.code() == BrokerError._PARTITION_EOF:
                        remaining.discard(partition)
                        continue
                    raise KafkaError(f"reading {topic}[{partition}] back: {err}")
                key = message.key()
                if key:
                    found[key.decode("utf-8", "replace")] = int(message.timestamp()[1])
                if int(message.offset() or 0) >= ends[partition] - 1:
                    remaining.discard(partition)
        return found
    finally:
        consumer.close()
