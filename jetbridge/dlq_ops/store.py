"""The dead-letter topic and the replay record topic as the operator's tool reads them.

Reads run on a consumer of their own in a worker thread (assigned partitions, no group, nothing committed), in
batches, from the start of each partition (or from ``--since`` by timestamp) to the end it had when the read
began. A broker that cannot be reached is one ``KafkaError`` naming ``KAFKA_BOOTSTRAP_SERVERS``, a registry
that cannot be reached one ``SchemaRegistryError`` naming ``SCHEMA_REGISTRY_URL``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import httpx
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka import KafkaError as BrokerError

from jetbridge.errors import DecodeError, InvalidInput, KafkaError, SchemaRegistryError
from jetbridge.http import build_http_client
from jetbridge.kafka import client_config, decode_headers
from jetbridge.runtime import open_codec
from jetbridge.settings import Settings
from jetbridge.topics import TopicNames, airline_calls_topic
from schemas.codec import AvroCodec
from schemas.models import (
    AggregatorControl,
    AirlineCall,
    AirlineResponse,
    DeadLetter,
    DlqReplay,
    Event,
    SearchRequest,
)

from .selection import DlqEntry, DlqFilter, DlqId

__all__ = ["CONNECT_TIMEOUT_S", "DlqRead", "DlqStore", "contract_of", "quiet_client_config"]

E = TypeVar("E", bound=Event)

# How long the tool waits for the broker to answer its first metadata request before it says it is unreachable.
CONNECT_TIMEOUT_S = 5.0
# A read that gets nothing for this long while data should be there has lost the broker.
STALL_TIMEOUT_S = 30.0
_BATCH = 1000

# librdkafka's own complaints (connection refused, retries) would otherwise reach the person's terminal as
# raw log lines; the tool reports what failed itself, in one line.
_QUIET = logging.getLogger("jetbridge.dlq_ops.librdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def quiet_client_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings for the tool's clients: the configured cluster, no log lines on the terminal."""
    return client_config(settings) | {"logger": _QUIET}


def contract_of(topic: str, names: TopicNames) -> type[Event] | None:
    """The value contract of a stage's input topic, or None for a topic no stage reads."""
    fixed: dict[str, type[Event]] = {
        names.requests: SearchRequest,
        names.responses: AirlineResponse,
        names.control: AggregatorControl,
    }
    if topic in fixed:
        return fixed[topic]
    # Any airline's calls topic, including airlines added to the registry after the dead letter was written.
    calls = re.escape(names.prefix + airline_calls_topic("CODE")).replace("CODE", "[A-Z0-9]+")
    return AirlineCall if re.fullmatch(calls, topic) else None


@dataclass(frozen=True, slots=True)
class DlqRead:
    """Dead letters that matched a filter, and what the read cost."""

    entries: list[DlqEntry]
    read: int
    unreadable: list[tuple[DlqId, str]]
    seconds: float


class DlqStore:
    """The operator's view of one deployment's DLQ topic and replay records (``JB_TOPIC_PREFIX`` aware)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        self._http: httpx.AsyncClient | None = None
        self._codec: AvroCodec | None = None

    @property
    def dlq_topic(self) -> str:
        return self.names.dlq

    @property
    def replays_topic(self) -> str:
        return self.names.dlq_replays

    @property
    def codec(self) -> AvroCodec:
        assert self._codec is not None, "DlqStore used before open()"
        return self._codec

    async def open(self) -> DlqStore:
        """Check the broker answers, and get a codec (schemas are fetched by id as records need them)."""
        await self._run(self._check_broker)
        self._http = build_http_client(timeout_s=5.0, max_connections=4)
        self._codec = await open_codec(self.settings, [], self._http, wait_s=0)
        return self

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> DlqStore:
        return await self.open()

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    # ---- reading ----
    async def dead_letters(self, selection: DlqFilter) -> DlqRead:
        """Every dead letter on the DLQ topic that ``selection`` matches, oldest failure first."""
        started = time.monotonic()
        since_ms = int(selection.since.timestamp() * 1000) if selection.since is not None else None
        messages = await self._run(self._read_topic, self.dlq_topic, since_ms)
        entries: list[DlqEntry] = []
        unreadable: list[tuple[DlqId, str]] = []
        for message in messages:
            where = DlqId(int(message.partition() or 0), int(message.offset() or 0))
            if selection.ids and where not in selection.ids:
                continue
            try:
                record = await self._decode(message.value(), DeadLetter)
            except DecodeError as exc:
                unreadable.append((where, exc.message))
                continue
            entry = DlqEntry(where, record, decode_headers(message.headers()))
            if selection.matches(entry, self.names):
                entries.append(entry)
        entries.sort(key=lambda e: (e.record.failed_at, e.id))
        return DlqRead(entries, len(messages), unreadable, time.monotonic() - started)

    async def dead_letter(self, dlq_id: DlqId) -> DlqEntry:
        """One dead letter by id; ``InvalidInput`` (saying which ids exist) when there is none."""
        message, low, high = await self._run(self._read_one, dlq_id)
        if message is None:
            held = f"offsets {low}-{high - 1}" if high > low else "no records"
            raise InvalidInput(
                "id",
                f"no dead letter {dlq_id} on {self.dlq_topic} (partition {dlq_id.partition} holds {held}): "
                "see `jetbridge dlq list`",
            )
        record = await self._decode(message.value(), DeadLetter)
        return DlqEntry(dlq_id, record, decode_headers(message.headers()))

    async def replays(self) -> dict[str, DlqReplay]:
        """The latest replay record of every dead letter replayed (by id); empty when none was."""
        messages = await self._run(self._read_topic, self.replays_topic, None)
        latest: dict[str, DlqReplay] = {}
        for message in messages:  # in offset order, so the last one of a key wins, as compaction keeps it
            if message.value() is None:
                continue
            record = await self._decode(message.value(), DlqReplay)
            latest[record.dlq_id] = record
        return latest

    async def decode_original(self, record: DeadLetter) -> Event:
        """The dead letter's payload decoded with the current contract of its original topic (``DecodeError``
        when it does not decode: poison, or a topic no stage reads)."""
        model = contract_of(record.original_topic, self.names)
        if model is None:
            raise DecodeError(f"{record.original_topic} is not an input of any stage: no contract to decode with")
        return await self._decode(record.payload, model)

    async def prepare_replay_records(self) -> None:
        """Register the replay record's schema, so replay records can be written."""
        try:
            await self.codec.register(self.replays_topic, DlqReplay)
        except SchemaRegistryError as exc:
            raise self._registry_failed(exc) from exc

    async def _decode(self, data: bytes | None, model: type[E]) -> E:
        try:
            return await self.codec.decode(data, model)
        except SchemaRegistryError as exc:
            raise self._registry_failed(exc) from exc

    def _registry_failed(self, exc: SchemaRegistryError) -> SchemaRegistryError:
        return SchemaRegistryError(
            f"the schema registry at {self.settings.schema_registry_url} (SCHEMA_REGISTRY_URL) failed: {exc.message}"
        )

    # ---- Kafka, blocking, in a worker thread ----
    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except KafkaException as exc:
            # The broker went away in the middle of a read: one line, not librdkafka's traceback.
            raise KafkaError(
                f"Kafka at {self.settings.kafka_bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS) failed: {_words(exc)}"
            ) from None

    def _consumer(self) -> Consumer:
        return Consumer(
            quiet_client_config(self.settings)
            | {
                "group.id": f"jb.dlq-tool.{uuid.uuid4().hex}",  # never joined: partitions are assigned
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 50,
            }
        )

    def _unreachable(self, exc: KafkaException) -> KafkaError:
        return KafkaError(
            f"cannot reach Kafka at {self.settings.kafka_bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS): start the "
            f"local stack with `jetbridge up`, or point KAFKA_BOOTSTRAP_SERVERS at your cluster ({_words(exc)})"
        )

    def _check_broker(self) -> None:
        consumer = self._consumer()
        try:
            consumer.list_topics(timeout=CONNECT_TIMEOUT_S)
        except KafkaException as exc:
            raise self._unreachable(exc) from None
        finally:
            consumer.close()

    def _partitions(self, consumer: Consumer, topic: str) -> list[int]:
        try:
            metadata = consumer.list_topics(topic, timeout=CONNECT_TIMEOUT_S)
        except KafkaException as exc:
            raise self._unreachable(exc) from None
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise KafkaError(
                f"topic {topic} does not exist on {self.settings.kafka_bootstrap_servers}: run `jetbridge topics "
                "apply` (and check JB_TOPIC_PREFIX names the deployment you mean)"
            )
        return sorted(info.partitions)

    def _read_topic(self, topic: str, since_ms: int | None) -> list[Message]:
        consumer = self._consumer()
        try:
            partitions = self._partitions(consumer, topic)
            starts: dict[int, int] = {}
            if since_ms is not None:
                # A record's timestamp is when it was written, never before its failure: seeking by it skips
                # nothing the time filter would keep.
                found = consumer.offsets_for_times(
                    [TopicPartition(topic, p, since_ms) for p in partitions], CONNECT_TIMEOUT_S
                )
                starts = {tp.partition: tp.offset for tp in found if tp.error is None}
            positions: list[TopicPartition] = []
            ends: dict[int, int] = {}
            for p in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), CONNECT_TIMEOUT_S)
                start = starts.get(p, low)
                start = high if start < 0 else max(start, low)  # -1: nothing written since then
                if start < high:
                    positions.append(TopicPartition(topic, p, start))
                    ends[p] = high
            if not positions:
                return []
            consumer.assign(positions)
            messages: list[Message] = []
            last_progress = time.monotonic()
            while ends:
                batch = consumer.consume(_BATCH, 0.5)
                if batch:
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > STALL_TIMEOUT_S:
                    raise KafkaError(f"reading {topic} stalled for {STALL_TIMEOUT_S:.0f} s with records left to read")
                for message in batch:
                    partition = int(message.partition() or 0)
                    error = message.error()
                    if error is not None:
                        if error.code() == BrokerError._PARTITION_EOF:
                            ends.pop(partition, None)
                            continue
                        raise KafkaError(f"reading {topic}[{partition}]: {error}")
                    end = ends.get(partition)
                    if end is None:
                        continue
                    offset = int(message.offset() or 0)
                    if offset < end:
                        messages.append(message)
                    if offset >= end - 1:
                        ends.pop(partition, None)
            return messages
        finally:
            consumer.close()

    def _read_one(self, dlq_id: DlqId) -> tuple[Message | None, int, int]:
        consumer = self._consumer()
        topic = self.dlq_topic
        try:
            partitions = self._partitions(consumer, topic)
            if dlq_id.partition not in partitions:
                return None, 0, 0
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, dlq_id.partition), CONNECT_TIMEOUT_S)
            if not low <= dlq_id.offset < high:
                return None, low, high
            consumer.assign([TopicPartition(topic, dlq_id.partition, dlq_id.offset)])
            give_up = time.monotonic() + STALL_TIMEOUT_S
            while time.monotonic() < give_up:
                for message in consumer.consume(1, 0.5):
                    if message.error() is None:
                        return (message if message.offset() == dlq_id.offset else None), low, high
            raise KafkaError(f"reading {topic}[{dlq_id.partition}]@{dlq_id.offset} timed out")
        finally:
            consumer.close()


def _words(exc: KafkaException) -> str:
    cause = exc.args[0] if exc.args else None
    return cause.str() if isinstance(cause, BrokerError) else str(exc)
