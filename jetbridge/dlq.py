"""The Dead Letter Channel, one policy for every stage (connector workers and stream processors alike).

``dead_letter`` builds the record: the payload byte-for-byte, and headers that say where it came from and
why. ``DeadLetterChannel`` writes it and never drops it: a failed write is retried with backoff until it
succeeds, and meanwhile the channel reports itself stalled. The caller commits (or acks) the source event
only after ``publish`` returns, so while the DLQ cannot be written that event's partition does not move on,
and a shutdown (cancellation, or ``close``) leaves the event uncommitted, to be replayed: nothing is lost.

The channel knows nothing of the Kafka client: it is given an async ``send(key, record, headers)`` that
encodes and writes one record and returns once the broker acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jetbridge.errors import JetbridgeError, KafkaError
from jetbridge.log import get_logger
from jetbridge.metrics import DLQ_PENDING, DLQ_WRITES
from schemas.models import DeadLetter, now_utc

__all__ = ["Backoff", "DeadLetterChannel", "DeadLetterSend", "DlqHeaders", "dead_letter"]

log = get_logger(__name__)

DlqHeaders = Sequence[tuple[str, bytes]]
DeadLetterSend = Callable[[bytes | str | None, DeadLetter, DlqHeaders], Awaitable[object]]


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: dict[str, str],
    stage: str,
    error: BaseException,
    attempts: int = 1,
) -> tuple[DeadLetter, list[tuple[str, bytes]]]:
    """The DLQ record for a failed event and the headers to send it with (the original ones plus
    ``dlq.*``)."""
    code = error.code if isinstance(error, JetbridgeError) else "internal"
    retriable = error.retriable if isinstance(error, JetbridgeError) else False
    text = (error.message if isinstance(error, JetbridgeError) else repr(error))[:1000]
    now = now_utc()
    record = DeadLetter(
        original_topic=topic,
        original_partition=partition,
        original_offset=offset,
        original_key=key,
        original_headers=headers,
        payload=value,
        stage=stage,
        error_code=code,
        error_message=text,
        retriable=retriable,
        attempts=attempts,
        request_id=headers.get("request_id"),
        correlation_id=headers.get("correlation_id"),
        first_failed_at=now,
        failed_at=now,
    )
    dlq_headers: list[tuple[str, bytes]] = [(k, v.encode()) for k, v in headers.items() if not k.startswith("dlq.")] + [
        ("dlq.original_topic", topic.encode()),
        ("dlq.original_partition", str(partition).encode()),
        ("dlq.original_offset", str(offset).encode()),
        ("dlq.stage", stage.encode()),
        ("dlq.error_code", code.encode()),
        ("dlq.error_message", text[:200].encode("utf-8", "replace")),
        ("dlq.retriable", b"true" if retriable else b"false"),
        ("dlq.attempts", str(attempts).encode()),
        ("dlq.failed_at", now.isoformat().encode()),
    ]
    return record, dlq_headers


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff between attempts of a write that must eventually succeed (no attempt limit)."""

    initial_s: float = 0.1
    multiplier: float = 2.0
    max_s: float = 5.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * self.multiplier, self.max_s)


class DeadLetterChannel:
    """Dead Letter Channel: ``publish`` returns only once the record is written; while writes keep failing
    it retries with backoff and ``stalled_since``/``pending``/``last_error`` say so."""

    def __init__(self, send: DeadLetterSend, *, stage: str, backoff: Backoff | None = None) -> None:
        self._send = send
        self.stage = stage
        self._backoff = backoff or Backoff()
        self._closed = asyncio.Event()
        # Records that failed at least once and are not written yet.
        self.pending = 0
        self.stalled_since: datetime | None = None
        self.last_error: str | None = None
        self.written = 0

    @property
    def stalled(self) -> bool:
        return self.pending > 0

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def state(self) -> dict[str, Any]:
        """What a health endpoint shows of this channel."""
        return {
            "stalled": self.stalled,
            "stalled_since": self.stalled_since.isoformat() if self.stalled_since else None,
            "pending": self.pending,
            "last_error": self.last_error,
        }

    def close(self) -> None:
        """Stop retrying: a publish waiting to retry raises at once, later ones get a single attempt."""
        self._closed.set()

    async def publish(self, record: DeadLetter, headers: DlqHeaders, key: bytes | str | None) -> None:
        """Write ``record``; returns once it is acknowledged. Raises ``KafkaError`` only when the channel
        was closed with the record unwritten, and ``CancelledError`` when cancelled: either way the caller
        must not commit the source event."""
        delays = self._backoff.delays()
        failed = False
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    await self._send(key, record, headers)
                except Exception as exc:
                    if not failed:
                        failed = True
                        self._stall_begins()
                    self.last_error = _describe(exc)
                    delay = next(delays)
                    log.error(
                        "dead-letter write failed; source event held back, retrying",
                        stage=self.stage,
                        error_code=_code(exc),
                        error=self.last_error,
                        attempt=attempt,
                        retry_in_s=delay,
                        closing=self.closed,
                        original_topic=record.original_topic,
                        original_partition=record.original_partition,
                        original_offset=record.original_offset,
                        original_error_code=record.error_code,
                    )
                    if self.closed:
                        raise KafkaError(
                            f"dead-letter channel closed with {record.original_topic}[{record.original_partition}]"
                            f"@{record.original_offset} unwritten: {self.last_error}"
                        ) from exc
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closed.wait(), delay)
                    continue
                self.written += 1
                DLQ_WRITES.labels(self.stage, record.error_code).inc()
                if failed:
                    log.warning(
                        "dead-letter write succeeded after failures",
                        stage=self.stage,
                        attempts=attempt,
                        original_topic=record.original_topic,
                        original_partition=record.original_partition,
                        original_offset=record.original_offset,
                    )
                return
        finally:
            if failed:
                self._stall_ends()

    def _stall_begins(self) -> None:
        if self.pending == 0:
            self.stalled_since = now_utc()
        self.pending += 1
        DLQ_PENDING.labels(self.stage).set(self.pending)

    def _stall_ends(self) -> None:
        self.pending -= 1
        DLQ_PENDING.labels(self.stage).set(self.pending)
        if self.pending == 0:
            self.stalled_since = None
            self.last_error = None


def _code(exc: BaseException) -> str:
    return exc.code if isinstance(exc, JetbridgeError) else "internal"


def _describe(exc: BaseException) -> str:
    # Our errors' messages name topics and broker errors; any other exception's text may quote the record it
    # failed on (fastavro's do), so only its type is kept.
    text = exc.message if isinstance(exc, JetbridgeError) else type(exc).__name__
    return text[:300]
