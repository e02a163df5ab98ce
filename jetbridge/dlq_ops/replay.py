"""Replaying dead letters: first decide for each one what sending it again would do, then send those worth it.

``plan_replay`` is pure apart from decoding: already replayed (skipped unless ``force``), an input no stage
reads (skipped), a payload that no longer decodes with its topic's current contract (failed again, never
sent), a deadline already passed (skipped unless ``include_expired``: the stage would do nothing useful), or
send. ``--dry-run`` prints that plan; a replay sends exactly its ``SEND`` steps.

``ReplaySender`` produces the payloads byte-for-byte to their original topics with their original keys and
headers plus ``dlq.replayed_from`` and ``dlq.replay_id``, many in flight at once (delivery callbacks, never one
awaited send after another), optionally throttled to a rate (Throttler). Each delivered one gets a replay
record on the compacted replay topic, keyed by the dead letter's id: that is what makes a second replay of the
same records a no-op. The record follows the delivery, so a crash between the two can send a dead letter
twice on the next run (at-least-once); every stage absorbs a duplicate.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from confluent_kafka import KafkaException, Message, Producer

from jetbridge.errors import DecodeError, KafkaError
from jetbridge.kafka import HEADER_DEADLINE_MS, PARTITIONER
from jetbridge.topics import TopicNames
from schemas.codec import AvroCodec
from schemas.models import (
    AggregatorControl,
    AirlineCall,
    AirlineResponse,
    DeadLetter,
    DlqReplay,
    Event,
    SearchRequest,
    now_utc,
)

from .selection import DlqEntry
from .store import DlqStore, contract_of, quiet_client_config

__all__ = [
    "HEADER_REPLAYED_FROM",
    "HEADER_REPLAY_ID",
    "STAGE_ON_EXPIRED",
    "ReplayOptions",
    "ReplayReport",
    "ReplaySender",
    "Sent",
    "Step",
    "Verdict",
    "brief",
    "deadline_of",
    "operator_name",
    "plan_replay",
    "replay",
]

HEADER_REPLAYED_FROM = "dlq.replayed_from"
HEADER_REPLAY_ID = "dlq.replay_id"

# What each stage does with an event whose deadline has passed: why such an event is skipped by default.
STAGE_ON_EXPIRED: dict[type[Event], str] = {
    SearchRequest: "the router would send its plan and call no airline, for a reply nobody waits for",
    AirlineCall: "the connector would answer TIMEOUT without calling the airline",
    AirlineResponse: "the aggregator would ignore it (the request has its reply) or, past the reply window, drop it",
    AggregatorControl: "the aggregator would ignore it (the request has its reply) or, past the reply window, "
    "dead-letter it again as request_expired",
}
# The aggregator finds a join by the event's key (the request id); without one it fails the event again.
_NEEDS_KEY = (AirlineResponse, AggregatorControl)

# How long the sender waits for the broker to acknowledge what it sent before it gives up on the rest.
DELIVERY_TIMEOUT_S = 60.0


class Verdict(StrEnum):
    SEND = "send"
    SKIP = "skip"
    FAIL = "fail"  # failed again: it would fail at its stage too, so it is not sent


@dataclass(frozen=True, slots=True)
class Step:
    """What a replay does with one dead letter, and why."""

    entry: DlqEntry
    verdict: Verdict
    reason: str
    detail: str = ""
    headers: tuple[tuple[str, bytes], ...] = ()
    forced: bool = False

    @property
    def target(self) -> str:
        return self.entry.record.original_topic


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    force: bool = False
    include_expired: bool = False
    dry_run: bool = False
    rate: float = 0.0  # records/s; 0 = no cap


@dataclass(frozen=True, slots=True)
class Sent:
    step: Step
    partition: int
    offset: int


@dataclass
class ReplayReport:
    """What one run did: every step planned, what was delivered, and how long each phase took."""

    replay_id: str
    operator: str
    dry_run: bool
    steps: list[Step] = field(default_factory=list)
    replayed: list[Sent] = field(default_factory=list)
    not_delivered: list[tuple[Step, str]] = field(default_factory=list)
    unrecorded: list[tuple[Step, str]] = field(default_factory=list)
    plan_s: float = 0.0
    send_s: float = 0.0

    @property
    def to_send(self) -> list[Step]:
        return [s for s in self.steps if s.verdict is Verdict.SEND]

    @property
    def skipped(self) -> list[Step]:
        return [s for s in self.steps if s.verdict is Verdict.SKIP]

    @property
    def failed(self) -> list[Step]:
        """Failed again: planned as failing (not sent), or sent and not delivered."""
        return [s for s in self.steps if s.verdict is Verdict.FAIL] + [s for s, _ in self.not_delivered]

    def reasons(self, steps: Iterable[Step]) -> Counter[str]:
        return Counter(s.reason for s in steps)

    @property
    def send_rate(self) -> float:
        """Records/s while sending (first produce to last acknowledgement)."""
        return len(self.replayed) / self.send_s if self.send_s > 0 else 0.0

    @property
    def rate(self) -> float:
        """Records/s over checking and sending (reading the DLQ excluded)."""
        spent = self.plan_s + self.send_s
        return len(self.replayed) / spent if spent > 0 else 0.0


def operator_name() -> str:
    """Who runs the tool, for the replay record: ``$USER``, else the login name."""
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def deadline_of(record: DeadLetter, event: Event | None) -> datetime | None:
    """The event's deadline: its ``deadline_ms`` header (how it travels), else its payload's ``deadline``."""
    raw = record.original_headers.get(HEADER_DEADLINE_MS, "")
    if raw.isdigit() and int(raw) > 0:
        return datetime.fromtimestamp(int(raw) / 1000, UTC)
    deadline = getattr(event, "deadline", None)
    return deadline if isinstance(deadline, datetime) else None


def replay_headers(record: DeadLetter, dlq_id: str, replay_id: str) -> tuple[tuple[str, bytes], ...]:
    """The original headers (any ``dlq.*`` of an earlier replay dropped) plus where this replay comes from."""
    original = [(k, v.encode()) for k, v in record.original_headers.items() if not k.startswith("dlq.")]
    return (*original, (HEADER_REPLAYED_FROM, dlq_id.encode()), (HEADER_REPLAY_ID, replay_id.encode()))


async def plan_replay(
    entries: Sequence[DlqEntry],
    *,
    names: TopicNames,
    ledger: dict[str, DlqReplay],
    decode: Callable[[DeadLetter], Awaitable[Event]],
    options: ReplayOptions,
    replay_id: str,
    now: datetime,
) -> list[Step]:
    """One step per dead letter, in order: what a replay will do with it and why."""
    steps: list[Step] = []
    for entry in entries:
        steps.append(await _plan_one(entry, names, ledger, decode, options, replay_id, now))
    return steps


async def _plan_one(
    entry: DlqEntry,
    names: TopicNames,
    ledger: dict[str, DlqReplay],
    decode: Callable[[DeadLetter], Awaitable[Event]],
    options: ReplayOptions,
    replay_id: str,
    now: datetime,
) -> Step:
    record, dlq_id = entry.record, str(entry.id)
    earlier = ledger.get(dlq_id)
    if earlier is not None and not options.force:
        when = earlier.replayed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        return Step(
            entry,
            Verdict.SKIP,
            "already replayed",
            f"by {earlier.operator} at {when}Z (replay {earlier.replay_id[:8]}); --force sends it again",
        )
    model = contract_of(record.original_topic, names)
    if model is None:
        return Step(entry, Verdict.SKIP, "not a stage input", f"{record.original_topic} is read by no stage")
    if record.payload is None:
        return Step(entry, Verdict.FAIL, "no payload", "a record without a value fails at every stage")
    try:
        event = await decode(record)
    except DecodeError as exc:
        return Step(entry, Verdict.FAIL, "does not decode (poison)", brief(exc.message))
    if isinstance(event, _NEEDS_KEY) and not record.original_key:
        return Step(entry, Verdict.FAIL, "no key", "the aggregator needs the request id as the key")
    deadline = deadline_of(record, event)
    if deadline is not None and deadline <= now and not options.include_expired:
        ago = _ago((now - deadline).total_seconds())
        return Step(
            entry,
            Verdict.SKIP,
            "deadline passed",
            f"{ago} ago: {STAGE_ON_EXPIRED[model]}; --include-expired sends it anyway",
        )
    return Step(
        entry, Verdict.SEND, "replay", headers=replay_headers(record, dlq_id, replay_id), forced=earlier is not None
    )


def brief(text: str, limit: int = 240) -> str:
    """An error text fit for one table cell: nested ``{...}`` (fastavro quotes whole schemas) shown as ``{…}``."""
    out: list[str] = []
    depth = 0
    for char in text:
        if char == "{":
            if depth == 0:
                out.append("{…}")
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
        elif depth == 0:
            out.append(char)
    short = "".join(out)
    return short if len(short) <= limit else short[: limit - 1] + "…"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


class ReplaySender:
    """Produces planned steps to their original topics and records each delivered one on the replay topic
    (``producer`` stands in for the librdkafka client in tests)."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        codec: AvroCodec,
        dlq_topic: str,
        replays_topic: str,
        replay_id: str,
        operator: str,
        producer: Producer | None = None,
    ) -> None:
        self._producer = producer or Producer(
            {
                "acks": "all",
                "enable.idempotence": True,
                # Keyed like every other producer of these topics, so a replayed event lands where its
                # request's other events are (see jetbridge/kafka.py).
                "partitioner": PARTITIONER,
                "compression.type": "none",
                "linger.ms": 5,
                "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000 / 2),
                "queue.buffering.max.messages": 200_000,
            }
            | config
        )
        self._codec = codec
        self._dlq_topic = dlq_topic
        self._replays_topic = replays_topic
        self._replay_id = replay_id
        self._operator = operator
        # Delivery callbacks run inside poll(), which only the event loop's thread calls: no locking needed.
        self._deliveries: deque[tuple[bool, Step, Any, Message]] = deque()
        self._records: deque[tuple[Step, str, bytes]] = deque()
        self._in_flight = 0

    async def send(
        self, steps: Sequence[Step], report: ReplayReport, *, rate: float, progress: Callable[[], None] | None = None
    ) -> None:
        """Send ``steps`` (at most ``rate`` per second when > 0) and wait until the broker acknowledged every one
        and its replay record."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            for i, step in enumerate(steps):
                if rate > 0:
                    # Throttler: the i-th record leaves at start + i/rate, so the rate holds over the run and a
                    # late wake-up is caught up on, not carried forward.
                    delay = started + i / rate - loop.time()
                    if delay > 0:
                        self._serve(report, progress)
                        await asyncio.sleep(delay)
                await self._produce_target(step, report, progress)
                if i % 512 == 511:
                    self._serve(report, progress)
                    await asyncio.sleep(0)
            give_up = loop.time() + DELIVERY_TIMEOUT_S
            while self._in_flight or self._records:
                self._serve(report, progress)
                if loop.time() > give_up:
                    raise KafkaError(
                        f"{self._in_flight} replayed records not acknowledged by the broker after "
                        f"{DELIVERY_TIMEOUT_S:.0f} s; run the replay again later (replayed ones are skipped)"
                    )
                await asyncio.sleep(0.002)
        finally:
            report.send_s = loop.time() - started

    async def close(self, report: ReplayReport) -> None:
        """Deliver what is still queued and record what was delivered, also when the run was interrupted
        (Ctrl-C): an event sent but not recorded would be sent again by the next replay."""
        for _ in range(2):  # the events, then the replay records their deliveries queued
            await asyncio.to_thread(self._producer.flush, 5.0)
            self._serve(report, None)

    async def _produce_target(self, step: Step, report: ReplayReport, progress: Callable[[], None] | None) -> None:
        record = step.entry.record

        def delivered(err: Any, msg: Message) -> None:
            self._deliveries.append((True, step, err, msg))

        while True:
            try:
                self._producer.produce(
                    record.original_topic,
                    value=record.payload,
                    key=record.original_key,
                    headers=list(step.headers),
                    on_delivery=delivered,
                )
                self._in_flight += 1
                return
            except BufferError:
                # librdkafka's queue is full: let deliveries drain it (backpressure, nothing dropped).
                self._serve(report, progress)
                await asyncio.sleep(0.005)
            except KafkaException as exc:
                report.not_delivered.append((step, f"refused by the producer: {exc}"))
                return

    def _serve(self, report: ReplayReport, progress: Callable[[], None] | None) -> None:
        self._producer.poll(0)
        while self._deliveries:
            is_target, step, err, msg = self._deliveries.popleft()
            self._in_flight -= 1
            if not is_target:
                if err is not None:
                    report.unrecorded.append((step, str(err)))
                continue
            if err is not None:
                report.not_delivered.append((step, f"not delivered: {err}"))
            else:
                sent = Sent(step, int(msg.partition() or 0), int(msg.offset() or 0))
                report.replayed.append(sent)
                self._records.append((step, str(step.entry.id), self._replay_record(sent)))
            if progress is not None:
                progress()
        while self._records:
            step, key, value = self._records[0]

            def recorded(err: Any, msg: Message, step: Step = step) -> None:
                self._deliveries.append((False, step, err, msg))

            try:
                self._producer.produce(self._replays_topic, key=key, value=value, on_delivery=recorded)
            except BufferError:
                return  # retried on the next call, once deliveries made room
            except KafkaException as exc:
                report.unrecorded.append((step, str(exc)))
            else:
                self._in_flight += 1
            self._records.popleft()

    def _replay_record(self, sent: Sent) -> bytes:
        record = sent.step.entry.record
        replay = DlqReplay(
            dlq_id=str(sent.step.entry.id),
            dlq_topic=self._dlq_topic,
            replay_id=self._replay_id,
            replayed_at=now_utc(),
            operator=self._operator,
            target_topic=record.original_topic,
            target_partition=sent.partition,
            target_offset=sent.offset,
            error_code=record.error_code,
            forced=sent.step.forced,
        )
        return self._codec.encode(self._replays_topic, replay)


async def replay(
    store: DlqStore,
    entries: Sequence[DlqEntry],
    options: ReplayOptions,
    *,
    operator: str | None = None,
    progress: Callable[[], None] | None = None,
    on_planned: Callable[[ReplayReport], None] | None = None,
) -> ReplayReport:
    """Plan the replay of ``entries`` and, unless it is a dry run, send what the plan says to send."""
    report = ReplayReport(replay_id=str(uuid.uuid4()), operator=operator or operator_name(), dry_run=options.dry_run)
    ledger = await store.replays()
    started = time.monotonic()
    report.steps = await plan_replay(
        entries,
        names=store.names,
        ledger=ledger,
        decode=store.decode_original,
        options=options,
        replay_id=report.replay_id,
        now=now_utc(),
    )
    report.plan_s = time.monotonic() - started
    if on_planned is not None:
        on_planned(report)
    if options.dry_run or not report.to_send:
        return report
    await store.prepare_replay_records()
    sender = ReplaySender(
        quiet_client_config(store.settings),
        codec=store.codec,
        dlq_topic=store.dlq_topic,
        replays_topic=store.replays_topic,
        replay_id=report.replay_id,
        operator=report.operator,
    )
    try:
        await sender.send(report.to_send, report, rate=options.rate, progress=progress)
    finally:
        await sender.close(report)
    return report
