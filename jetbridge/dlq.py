"""The Dead Letter Channel, one policy for every stage (connector workers and stream processors alike).

``dead_letter`` builds the record: the payload byte-for-byte, and headers that say where it came from and
why, with the error's text passed through ``scrub`` (no secrets or personal data). ``belongs_in_dlq`` says
which failures are dead letters at all. ``DeadLetterChannel`` writes a record and never drops it: a failed
write is retried with backoff until it succeeds, and meanwhile the channel reports itself stalled. The
caller commits (or acks) the source event only after ``publish`` returns, so while the DLQ cannot be written
that event's partition does not move on, and a shutdown (cancellation, or ``close``) leaves the event
uncommitted, to be replayed: nothing is lost.

The channel knows nothing of the Kafka client: it is given an async ``send(key, record, headers)`` that
encodes and writes one record and returns once the broker acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jetbridge.errors import (
    AirlineThrottled,
    AirlineTimeout,
    CircuitOpen,
    DeadlineExceeded,
    JetbridgeError,
    KafkaError,
    RateLimited,
    RequestExpired,
)
from jetbridge.log import get_logger
from jetbridge.metrics import DLQ_PENDING, DLQ_WRITES
from schemas.models import DeadLetter, now_utc

__all__ = [
    "Backoff",
    "DeadLetterChannel",
    "DeadLetterSend",
    "DlqHeaders",
    "belongs_in_dlq",
    "dead_letter",
    "scrub",
]

log = get_logger(__name__)

DlqHeaders = Sequence[tuple[str, bytes]]
DeadLetterSend = Callable[[bytes | str | None, DeadLetter, DlqHeaders], Awaitable[object]]

MESSAGE_LIMIT = 1000
HEADER_MESSAGE_LIMIT = 200
REDACTED = "[redacted]"

# ---- scrubbing: error texts quote airline bodies, URLs and headers; none of that may reach the DLQ ----

_CREDENTIAL_FIELDS = (
    r"api[-_]?key|x[-_]api[-_]key|apikey|access[-_]?token|refresh[-_]?token|id[-_]?token|auth[-_]?token"
    r"|client[-_]?secret|secret|token|password|passwd|pwd|credentials?|authorization|cookie|set[-_]cookie"
    r"|session[-_]?id"
)
_PERSONAL_FIELDS = (
    r"e[-_]?mail(?:[-_]?address)?(?:[-_]?text)?|phone(?:[-_]?number)?|mobile(?:[-_]?number)?|telephone|tel"
    r"|first[-_]?name|given[-_]?name|middle[-_]?name|last[-_]?name|sur[-_]?name|family[-_]?name"
    r"|full[-_]?name|passenger[-_]?name|title[-_]?name|birth[-_]?date|date[-_]?of[-_]?birth|dob"
    r"|passport(?:[-_]?number)?|document[-_]?number|frequent[-_]?flyer(?:[-_]?number)?|loyalty[-_]?number"
)
# "name" alone is a passenger's name often enough in JSON and XML bodies (and rarely worth keeping), but in
# free text ("topic name: ...") it is not a field: only quoted keys and elements match it.
_STRUCTURED_FIELDS = rf"(?:{_CREDENTIAL_FIELDS}|{_PERSONAL_FIELDS}|name)"
_TEXT_FIELDS = rf"(?:{_CREDENTIAL_FIELDS}|{_PERSONAL_FIELDS})"

_SCRUBBERS: list[tuple[re.Pattern[str], str]] = [
    # JSON fields: "email": "a@b.c", "phone": 447700900123, and the same escaped inside a JSON string.
    (re.compile(rf'("{_STRUCTURED_FIELDS}"\s*:\s*)"(?:[^"\\]|\\.)*"', re.I), rf'\1"{REDACTED}"'),
    (re.compile(rf'(\\"{_STRUCTURED_FIELDS}\\"\s*:\s*)\\".*?\\"', re.I), rf'\1\\"{REDACTED}\\"'),
    (re.compile(rf'("{_STRUCTURED_FIELDS}"\s*:\s*)[-+\d.]+', re.I), rf"\1{REDACTED}"),
    # Python reprs of dicts: {'password': 'x'}.
    (re.compile(rf"('{_STRUCTURED_FIELDS}'\s*:\s*)'(?:[^'\\]|\\.)*'", re.I), rf"\1'{REDACTED}'"),
    # XML elements, with or without a namespace prefix: <GivenName>John</GivenName>, <ns:Surname>.
    (
        re.compile(rf"(<(?:[\w-]+:)?({_STRUCTURED_FIELDS})(?:\s[^>]*)?>)[^<]*(</(?:[\w-]+:)?\2\s*>)", re.I),
        rf"\1{REDACTED}\3",
    ),
    # XML attributes: Password="x".
    (re.compile(rf'(\b{_STRUCTURED_FIELDS}\s*=\s*)"[^"]*"', re.I), rf'\1"{REDACTED}"'),
    # Free text, headers, query strings: api_key=..., X-Api-Key: ..., Authorization: Bearer ..., ?pwd=...; a value
    # ends before trailing punctuation ("key=abc: ..."), which is the sentence's, not the secret's.
    (
        re.compile(
            rf"(\b{_TEXT_FIELDS}\b['\"]?\s*[=:]\s*)(?!\[redacted\])(?:(?:bearer|basic|digest|token)\s+)?"
            rf"[^\s,;&\"'<>)\]}}]*[^\s,;&\"'<>)\]}}:.]",
            re.I,
        ),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"\b(bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*", re.I), rf"\1 {REDACTED}"),
    # JSON Web Tokens wherever they appear.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), REDACTED),
    # Phone numbers: international (+44 20 7946 0958), an area code in brackets ((020) 7946 0958), or three
    # groups of digits (555-123-4567). Dates, times, offsets and IP addresses have other shapes.
    (re.compile(r"(?<![\w+])\+\d[\d ().-]{6,18}\d(?![\w-])"), REDACTED),
    (re.compile(r"(?<![\w-])\(\d{2,5}\)\s?\d{3,4}[ .-]?\d{3,4}(?![\w-])"), REDACTED),
    (re.compile(r"(?<![\w.-])\d{3,5}[ -]\d{3,4}[ -]\d{3,4}(?![\w-]|\.\d)"), REDACTED),
]


def scrub(text: str) -> str:
    """``text`` without API keys, tokens, passwords, e-mail addresses, phone numbers or passenger names."""
    for pattern, replacement in _SCRUBBERS:
        text = pattern.sub(replacement, text)
    return text


# Outcomes an airline answer already carries (as TIMEOUT or as an error status) and that say how the airline
# or the deadline stood, not that an event was lost: a replay of them could only repeat the same answer.
_ANSWERED_OUTCOMES: tuple[type[JetbridgeError], ...] = (
    DeadlineExceeded,
    AirlineTimeout,
    AirlineThrottled,
    CircuitOpen,
    RateLimited,
)


def belongs_in_dlq(error: BaseException) -> bool:
    """Whether a failure is a dead letter: an event that could not be processed for good (poison, a call that
    failed after its retries, an expired request), not an answer delivered as a timeout or a fast-fail."""
    if isinstance(error, RequestExpired):
        return True  # too old to answer safely: nobody answered it, an operator must see it
    return not isinstance(error, _ANSWERED_OUTCOMES)


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
    first_failed_at: datetime | None = None,
    failed_at: datetime | None = None,
) -> tuple[DeadLetter, list[tuple[str, bytes]]]:
    """The DLQ record for a failed event and the headers to send it with (the original ones plus
    ``dlq.*``); ``attempts`` and ``first_failed_at`` describe the tries before it was given up."""
    code = error.code if isinstance(error, JetbridgeError) else "internal"
    retriable = error.retriable if isinstance(error, JetbridgeError) else False
    raw = error.message if isinstance(error, JetbridgeError) else repr(error)
    # Scrubbed before it is cut, so a cut never leaves half a secret that no pattern recognises.
    text = scrub(raw[: MESSAGE_LIMIT * 20])[:MESSAGE_LIMIT]
    last = failed_at or now_utc()
    first = min(first_failed_at or last, last)
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
        first_failed_at=first,
        failed_at=last,
        error_class=type(error).__name__,
    )
    dlq_headers: list[tuple[str, bytes]] = [(k, v.encode()) for k, v in headers.items() if not k.startswith("dlq.")] + [
        ("dlq.original_topic", topic.encode()),
        ("dlq.original_partition", str(partition).encode()),
        ("dlq.original_offset", str(offset).encode()),
        ("dlq.stage", stage.encode()),
        ("dlq.error_code", code.encode()),
        ("dlq.error_class", type(error).__name__.encode()),
        ("dlq.error_message", text[:HEADER_MESSAGE_LIMIT].encode("utf-8", "replace")),
        ("dlq.retriable", b"true" if retriable else b"false"),
        ("dlq.attempts", str(attempts).encode()),
        ("dlq.first_failed_at", first.isoformat().encode()),
        ("dlq.failed_at", last.isoformat().encode()),
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
