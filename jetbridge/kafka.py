"""Kafka plumbing shared by the bridge, the connector workers and the tools: client settings, an asyncio
producer that resolves on broker acknowledgement, a consumer whose blocking poll runs off the event
loop, event headers, and the idempotent topic declaration.

Client settings are librdkafka keys, 1:1, and every client's config starts from ``client_config``: the cluster
and how to authenticate to it (the security settings of ``jetbridge/settings.py``, applied in this one place).
Stream processors (faust) use their own clients, given the same ``kafka_security`` by ``streams/credentials.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as ClientError
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # exported at runtime, not in the stub
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from jetbridge.errors import ConfigurationError, JetbridgeError, KafkaError
from jetbridge.log import get_logger
from jetbridge.settings import Settings
from jetbridge.topics import TopicSpec

__all__ = [
    "HEADER_CLIENT_ID",
    "HEADER_CORRELATION_ID",
    "HEADER_DEADLINE_MS",
    "HEADER_REPLY_TO",
    "HEADER_REQUEST_ID",
    "HEADER_TRACEPARENT",
    "PARTITIONER",
    "AsyncConsumer",
    "AsyncProducer",
    "Delivery",
    "KafkaSecurity",
    "apply_topics",
    "assign_at_end",
    "client_config",
    "decode_headers",
    "event_headers",
    "kafka_security",
    "new_traceparent",
    "read_whole_and_follow",
]

log = get_logger(__name__)

HEADER_CORRELATION_ID = "correlation_id"
HEADER_REQUEST_ID = "request_id"
HEADER_CLIENT_ID = "client_id"
HEADER_DEADLINE_MS = "deadline_ms"
HEADER_TRACEPARENT = "traceparent"
# On replies only: the bridge instance waiting for it (Return Address), copied from the request's reply_to.
HEADER_REPLY_TO = "reply_to"

Headers = list[tuple[str, bytes]]

# One partitioner for every producer of a keyed topic. Faust (aiokafka) and the Java clients hash keys
# with murmur2; librdkafka's default is crc32. The aggregator's join needs a request's events on the same
# partition number of every topic, so our librdkafka producers use murmur2 as well (tested in
# tests/integration/test_partitioning.py against aiokafka's partitioner on a real broker).
PARTITIONER = "murmur2_random"


class RepeatFilter(logging.Filter):
    """Lets one line of each kind through per ``window_s``; the next one says how many were held back.

    librdkafka says the same thing once per client and per retry: with the broker down for 15 s, a connector
    process wrote 5,500 lines of ``Connect to ipv4#127.0.0.1:9092 failed``, one per client and attempt. A kind is
    the level, the facility and the text without the client's name (confluent-kafka logs with the arguments
    ``(facility, client name, text)``), so every client repeating the same failure counts as one.
    """

    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[Any, ...], tuple[float, int]] = {}  # kind -> (when let through, held back since)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        kind = (
            (record.levelno, args[0], args[2])
            if isinstance(args, tuple) and len(args) == 3
            else (record.levelno, record.getMessage())
        )
        now = self._clock()
        with self._lock:
            shown = self._seen.get(kind)
            if shown is not None and now - shown[0] < self._window_s:
                self._seen[kind] = (shown[0], shown[1] + 1)
                return False
            self._seen[kind] = (now, 0)
            if len(self._seen) > 1000:  # forget kinds not seen for a window: the dict stays small
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._window_s}
        if shown is not None and shown[1]:
            record.msg = f"{record.msg} (and %d more like it in the last %.0f s)"
            record.args = (*(args if isinstance(args, tuple) else ()), shown[1], now - shown[0])
        return True


# librdkafka writes its own log lines (``%4|...|GETPID|...``) straight to stderr unless given a logger;
# through this one they become JSON lines like every other (see jetbridge/log.py), never raw terminal text,
# each kind at most once in 30 s.
LIBRDKAFKA_LOGGER = logging.getLogger("librdkafka")
LIBRDKAFKA_LOGGER.addFilter(RepeatFilter())


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How this process's Kafka clients authenticate: the security settings, checked once."""

    protocol: str  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    mechanism: str | None = None  # SCRAM-SHA-512 | SCRAM-SHA-256 | PLAIN, with SASL only
    username: str | None = None
    password: str | None = None
    ca_location: Path | None = None

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def __repr__(self) -> str:  # never the password, whoever prints it
        return f"KafkaSecurity(protocol={self.protocol}, mechanism={self.mechanism}, username={self.username})"

    def librdkafka(self) -> dict[str, Any]:
        """The librdkafka keys for it; none for PLAINTEXT, so such a config is exactly what it was before."""
        if self.protocol == "PLAINTEXT":
            return {}
        keys: dict[str, Any] = {"security.protocol": self.protocol}
        if self.sasl:
            keys |= {"sasl.mechanism": self.mechanism, "sasl.username": self.username, "sasl.password": self.password}
        if self.ca_location is not None:
            keys["ssl.ca.location"] = str(self.ca_location)
        return keys


def kafka_security(settings: Settings) -> KafkaSecurity:
    """The settings' Kafka security, or a ConfigurationError naming the variable that does not fit."""
    protocol = settings.kafka_security_protocol
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
    where = f"KAFKA_SECURITY_PROTOCOL is {protocol}"
    if protocol.startswith("SASL_"):
        given = {"KAFKA_SASL_USERNAME": settings.kafka_sasl_username, "KAFKA_SASL_PASSWORD": password}
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise ConfigurationError(f"{where}: set {' and '.join(missing)}")
    elif settings.kafka_sasl_username or password:
        # Credentials that would silently not be used: the cluster would see an unauthenticated client.
        raise ConfigurationError(
            f"{where} but KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD are set: use SASL_PLAINTEXT or SASL_SSL"
        )
    ca = settings.kafka_ssl_ca_location
    if ca is not None:
        if protocol not in ("SSL", "SASL_SSL"):
            raise ConfigurationError(f"{where} but KAFKA_SSL_CA_LOCATION is set: use SSL or SASL_SSL")
        if not ca.is_file():
            raise ConfigurationError(f"KAFKA_SSL_CA_LOCATION {ca} is not a readable file")
    if not protocol.startswith("SASL_"):
        return KafkaSecurity(protocol, ca_location=ca)
    return KafkaSecurity(protocol, settings.kafka_sasl_mechanism, settings.kafka_sasl_username, password, ca)


def client_config(settings: Settings) -> dict[str, Any]:
    """The cluster and how to authenticate to it: what every librdkafka client of ours starts from."""
    return {"bootstrap.servers": settings.kafka_bootstrap_servers} | kafka_security(settings).librdkafka()


def _authentication_failed(error: ClientError) -> KafkaError:
    return KafkaError(
        f"Kafka authentication failed: {error.str()} (check KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, "
        "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD)"
    )


def _log_client_error(error: ClientError) -> None:
    # What librdkafka logs itself for an error when a client has no error callback.
    LIBRDKAFKA_LOGGER.error("ERROR %s", error.str())


def _fatal(error: ClientError) -> bool:
    # An error callback's error carries the flag; a polled message's error only the code.
    return bool(error.fatal()) or error.code() == ClientError._FATAL


def with_logger(config: Mapping[str, Any]) -> dict[str, Any]:
    """A librdkafka client config whose log lines go through our logging."""
    return {"logger": LIBRDKAFKA_LOGGER} | dict(config)


def new_traceparent() -> str:
    """A fresh W3C traceparent (version 00, sampled)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def event_headers(
    *,
    request_id: str,
    correlation_id: str,
    client_id: str,
    deadline_ms: int,
    traceparent: str,
    extra: Mapping[str, str] | None = None,
) -> Headers:
    """The headers every Jetbridge event carries (see ARCHITECTURE.md), plus any extra ones."""
    headers: Headers = [
        (HEADER_CORRELATION_ID, correlation_id.encode()),
        (HEADER_REQUEST_ID, request_id.encode()),
        (HEADER_CLIENT_ID, client_id.encode()),
        (HEADER_DEADLINE_MS, str(deadline_ms).encode()),
        (HEADER_TRACEPARENT, traceparent.encode()),
    ]
    headers += [(k, v.encode()) for k, v in (extra or {}).items()]
    return headers


def decode_headers(
    raw: Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None,
) -> dict[str, str]:
    """Headers as text; the last value wins for repeated keys, undecodable bytes are replaced."""
    items = raw.items() if isinstance(raw, Mapping) else (raw or [])
    return {k: v if isinstance(v, str) else (v or b"").decode("utf-8", "replace") for k, v in items}


@dataclass(frozen=True, slots=True)
class Delivery:
    topic: str
    partition: int
    offset: int


class AsyncProducer:
    """confluent-kafka's Producer behind an awaitable ``send``: it returns once the broker acknowledged.

    A daemon thread serves librdkafka's delivery callbacks and hands each result to the event loop.
    Idempotent (acks=all, enable.idempotence) so a retried produce is never written twice.
    When the cluster refuses our credentials, every send waiting for its acknowledgement fails at once with a
    KafkaError saying so, instead of waiting out ``message.timeout.ms`` (librdkafka only retries the login).
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        base: dict[str, Any] = {
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 0,  # JB_PRODUCER_LINGER_MS (jetbridge/settings.py) says why
            "partitioner": PARTITIONER,
            # No compression: events are small and latency matters, and faust (aiokafka) then reads
            # them without extra codec libraries.
            "compression.type": "none",
        }
        base.update(config)
        base.setdefault("error_cb", self._on_error)
        self._waiting: set[asyncio.Future[Delivery]] = set()
        self._waiting_lock = threading.Lock()
        self._producer = Producer(with_logger(base))
        self._running = True
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-producer-poll", daemon=True)
        self._thread.start()

    def _on_error(self, error: ClientError) -> None:
        # On the thread serving callbacks (poll, flush). Other errors (a broker down) are retried by librdkafka.
        if error.code() != ClientError._AUTHENTICATION:
            _log_client_error(error)
            return
        failure = _authentication_failed(error)
        with self._waiting_lock:
            waiting = list(self._waiting)
        for future in waiting:
            future.get_loop().call_soon_threadsafe(_settle, future, None, failure)

    def _poll_loop(self) -> None:
        # poll serves each delivery report as soon as it arrives; the timeout only bounds how soon the loop
        # sees ``close()``, so it is long enough not to wake the thread 20 times a second for nothing.
        while self._running:
            self._producer.poll(0.5)

    async def send(
        self,
        topic: str,
        *,
        key: bytes | str | None,
        value: bytes | None,
        headers: Sequence[tuple[str, str | bytes | None]] | None = None,
    ) -> Delivery:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Delivery] = loop.create_future()
        with self._waiting_lock:
            self._waiting.add(done)
        done.add_done_callback(self._forget)

        def on_delivery(err: Any, msg: Message) -> None:
            if err is not None:
                exc = KafkaError(f"produce to {topic} failed: {err}")
                loop.call_soon_threadsafe(_settle, done, None, exc)
            else:
                result = Delivery(str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0))
                loop.call_soon_threadsafe(_settle, done, result, None)

        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=list(headers or []), on_delivery=on_delivery
                )
                break
            except BufferError:
                # The local queue is full: wait for deliveries to drain it (backpressure, not loss).
                await asyncio.sleep(0.005)
            except KafkaException as exc:
                done.cancel()
                raise KafkaError(f"produce to {topic} refused: {exc}") from exc
        return await done

    def _forget(self, future: asyncio.Future[Delivery]) -> None:
        with self._waiting_lock:
            self._waiting.discard(future)

    async def flush(self, timeout_s: float = 10.0) -> int:
        """Wait for everything queued to be delivered; the number still queued is returned."""
        return int(await asyncio.to_thread(self._producer.flush, timeout_s))

    async def close(self, timeout_s: float = 10.0) -> None:
        remaining = await self.flush(timeout_s)
        if remaining:
            log.warning("producer closed with undelivered messages", remaining=remaining)
        self._running = False
        await asyncio.to_thread(self._thread.join, 1.0)


def _settle(future: asyncio.Future[Delivery], result: Delivery | None, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    elif result is not None:
        future.set_result(result)


class AsyncConsumer:
    """confluent-kafka's Consumer with its blocking calls run in a worker thread.

    Every call runs on the consumer's own single thread, in order: librdkafka consumers are not meant
    to be used from two threads at once, and a close() queued behind a running poll waits for it.
    When the cluster refuses our credentials, ``consume`` raises a KafkaError saying so instead of returning
    nothing for ever.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._refused: KafkaError | None = None
        self._fatal: str | None = None
        self._config = with_logger({"error_cb": self._on_error} | dict(config))
        self._consumer = Consumer(self._config)
        self._subscription: tuple[list[str], dict[str, Any]] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-consumer")
        # How many times a fenced consumer was replaced by a new one (see ``_replace``).
        self.replaced = 0

    @property
    def raw(self) -> Consumer:
        return self._consumer

    def _on_error(self, error: ClientError) -> None:
        # Called inside poll, on the consumer's thread; ``consume`` raises it once that poll returns.
        if error.code() == ClientError._AUTHENTICATION:
            self._refused = _authentication_failed(error)
            return
        _log_client_error(error)
        if _fatal(error):
            self._fatal = error.str()

    def _replace(self) -> None:
        """On the consumer's thread: give up a consumer that hit a fatal error and join again with a new one.

        The one fatal error of a consumer is a static member fenced by the group: another join under its
        ``group.instance.id`` took its place (a broker restart can cause one: librdkafka gives up a session it
        could not renew and joins again while the broker still counts the first join). librdkafka then stops
        that consumer for good: it fetches nothing and rejoins never, while the process looks healthy. A new
        consumer under the same instance id takes the place back at once. Its partitions are reported lost to
        the subscriber first, so nothing still in flight is committed for them under the old assignment.
        """
        reason, self._fatal = self._fatal, None
        old = self._consumer
        topics, callbacks = self._subscription or ([], {})
        try:
            lost = list(old.assignment())
        except KafkaException:
            lost = []
        on_lost = callbacks.get("on_lost")
        if lost and on_lost is not None:
            on_lost(old, lost)
        with contextlib.suppress(KafkaException, RuntimeError):
            old.close()
        self._consumer = Consumer(self._config)
        self._consumer.subscribe(topics, **callbacks)
        self.replaced += 1
        log.warning(
            "Kafka consumer stopped by a fatal error; joined again with a new one",
            group=self._config.get("group.id"),
            instance=self._config.get("group.instance.id"),
            reason=reason,
            lost_partitions=len(lost),
        )

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self._subscription = (list(topics), dict(callbacks))
        self._consumer.subscribe(topics, **callbacks)

    async def assign(self, partitions: list[TopicPartition]) -> None:
        await self._run(self._consumer.assign, partitions)

    async def consume(self, max_messages: int = 100, timeout_s: float = 0.1) -> list[Message]:
        """Up to ``max_messages``, returning as soon as one is there (librdkafka's own ``consume``
        would wait for the whole batch or the timeout, which adds the timeout to every quiet hop)."""

        def take() -> list[Message]:
            first = self._consumer.poll(timeout_s)
            more = self._consumer.consume(max_messages - 1, 0) if first is not None and max_messages > 1 else []
            taken = [] if first is None else [first, *more]
            for message in taken:
                error = message.error()
                if error is not None and _fatal(error):
                    self._fatal = error.str()
            if self._fatal is not None:
                if self._subscription is None:
                    raise KafkaError(f"Kafka consumer stopped by a fatal error: {self._fatal}")
                self._replace()
                return []  # what the old one returned is re-read by whoever owns its partitions now
            return taken

        messages: list[Message] = await self._run(take)
        refused, self._refused = self._refused, None
        if refused is not None and not messages:
            raise refused
        return messages

    async def commit(self, offsets: list[TopicPartition]) -> None:
        if not offsets:
            return
        try:
            await self._run(lambda: self._consumer.commit(offsets=offsets, asynchronous=False))
        except KafkaException as exc:
            raise KafkaError(f"commit failed: {exc}") from exc

    async def commit_chosen(self, choose: Callable[[], list[TopicPartition]]) -> list[TopicPartition]:
        """Commit what ``choose`` returns, choosing on the consumer's own thread; returns what was committed.

        Rebalance callbacks run on that thread too (inside poll), so none can run between the choice and the
        commit: a partition revoked meanwhile is no longer chosen, instead of being committed over its new
        owner's progress.
        """

        def choose_and_commit() -> list[TopicPartition]:
            offsets = choose()
            if not offsets:
                return []
            result = self._consumer.commit(offsets=offsets, asynchronous=False)
            return [tp for tp in (result or offsets) if tp.error is None]

        try:
            committed: list[TopicPartition] = await self._run(choose_and_commit)
        except KafkaException as exc:
            raise KafkaError(f"commit failed: {exc}") from exc
        return committed

    async def pause_assigned(self) -> None:
        """Stop fetching every partition assigned now; polling goes on serving the group and rebalances."""
        await self._run(lambda: self._consumer.pause(self._consumer.assignment()))

    async def resume_assigned(self) -> None:
        """Fetch again every partition assigned now, from the position after the last message returned."""
        await self._run(lambda: self._consumer.resume(self._consumer.assignment()))

    async def partitions_of(self, topic: str, timeout_s: float = 10.0) -> list[int]:
        metadata = await self._run(self._consumer.list_topics, topic, timeout_s)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            raise KafkaError(f"topic {topic} not found: {info.error if info else 'no metadata'}")
        return sorted(info.partitions)

    async def end_offsets(self, topic: str, partitions: list[int]) -> list[TopicPartition]:
        """The current end of each partition, as positions to assign."""

        def ends() -> list[TopicPartition]:
            return [
                TopicPartition(topic, p, self._consumer.get_watermark_offsets(TopicPartition(topic, p), 10.0)[1])
                for p in partitions
            ]

        result: list[TopicPartition] = await self._run(ends)
        return result

    async def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            await self._run(self._consumer.close)
        self._thread.shutdown(wait=False)


async def apply_topics(
    admin_config: Mapping[str, Any], specs: Iterable[TopicSpec], *, replication_factor: int = 1
) -> dict[str, str]:
    """Create missing topics, align the configs of existing ones and add the partitions a growable one lacks; never
    deletes or shrinks (a topic's partitions cannot be removed).

    Returns what happened to each topic: ``created``, ``updated`` or ``unchanged``, followed by
    ``, partitions 3 → 12`` when partitions were added (only to a topic that ``grows``), or ``, kept …`` when its
    count differs from the declared one and stays.
    """
    admin = AdminClient(with_logger(admin_config))
    specs = list(specs)
    metadata = await asyncio.to_thread(admin.list_topics, timeout=15)
    existing = set(metadata.topics)
    outcome: dict[str, str] = {}
    to_create = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=replication_factor, config=s.configs())
        for s in specs
        if s.name not in existing
    ]
    if to_create:
        for name, future in admin.create_topics(to_create, operation_timeout=30).items():
            try:
                await asyncio.wrap_future(future)
                outcome[name] = "created"
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise KafkaError(f"creating {name}: {exc}") from exc
                outcome[name] = "unchanged"
    for spec in specs:
        if spec.name in outcome:
            continue
        outcome[spec.name] = await _align_configs(admin, spec)
        have = len(metadata.topics[spec.name].partitions)
        if have < spec.partitions and spec.grows:
            for future in admin.create_partitions([NewPartitions(spec.name, spec.partitions)]).values():
                await asyncio.wrap_future(future)
            outcome[spec.name] += f", partitions {have} → {spec.partitions}"
        elif have < spec.partitions:
            outcome[spec.name] += f", kept {have} partitions ({spec.partitions} declared; not grown in place)"
        elif have > spec.partitions:
            outcome[spec.name] += f", kept {have} partitions ({spec.partitions} declared; never removed)"
    return outcome


async def _align_configs(admin: AdminClient, spec: TopicSpec) -> str:
    """``updated`` or ``unchanged``: the topic's configs set to those declared."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name)
    described = admin.describe_configs([resource])
    current = await asyncio.wrap_future(described[resource])
    wanted = spec.configs()
    if all(current.get(k) is not None and current[k].value == v for k, v in wanted.items()):
        return "unchanged"
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in wanted.items()]
    update = ConfigResource(ConfigResource.Type.TOPIC, spec.name, incremental_configs=entries)
    for future in admin.incremental_alter_configs([update]).values():
        await asyncio.wrap_future(future)
    return "updated"


async def read_whole_and_follow(
    consumer: AsyncConsumer,
    topic: str,
    apply: Callable[[bytes | None], Awaitable[None]],
    caught_up: asyncio.Event,
    *,
    what: str,
    on_caught_up: Callable[[], None] | None = None,
    batch: int = 200,
    poll_s: float = 0.5,
    retry_s: float = 1.0,
) -> None:
    """Read a compacted topic (a table: the airlines' health, the orders, the tasks) whole from its beginning, then
    follow it, until cancelled: every partition assigned (no group, nothing committed), each record's value given to
    ``apply`` (None: a tombstone). ``caught_up`` is set once every partition was read up to where it ended at the
    start. A topic that does not exist yet, or a broker that hiccups, is tried again every ``retry_s``; ``what``
    names the table in the log lines."""
    while True:
        try:
            partitions = await consumer.partitions_of(topic)
            ends = {tp.partition: tp.offset for tp in await consumer.end_offsets(topic, partitions)}
            await consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            break
        except Exception as exc:  # noqa: BLE001 - a missing topic must not stop the process
            log.warning(f"{what} topic not readable yet; retrying", topic=topic, error=repr(exc))
            await asyncio.sleep(retry_s)
    left = {p: end for p, end in ends.items() if end > 0}
    while True:
        if not left and not caught_up.is_set():
            caught_up.set()
            if on_caught_up is not None:
                on_caught_up()
        try:
            messages = await consumer.consume(batch, poll_s)  # returns as soon as a record is there
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the reader must survive broker hiccups
            log.warning(f"{what} consumer error", topic=topic, error=repr(exc))
            await asyncio.sleep(retry_s)
            continue
        for message in messages:
            if message.error() is not None:
                continue
            await apply(message.value())
            partition, offset = int(message.partition() or 0), int(message.offset() or 0)
            if left.get(partition, 0) <= offset + 1:
                left.pop(partition, None)


async def assign_at_end(consumer: AsyncConsumer, topic: str, *, what: str, wait_s: float = 30.0) -> None:
    """Read ``topic`` from now on (every partition from its current end; no group, nothing committed): where a
    bridge waits for replies or answers to its own requests. Returns once positions are fixed, waiting up to
    ``wait_s`` for a broker still starting or a topic whose partitions have no leader yet."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + wait_s
    while True:
        try:
            partitions = await consumer.partitions_of(topic)
            positions = await consumer.end_offsets(topic, partitions)
            break
        except (JetbridgeError, KafkaException) as exc:
            if loop.time() >= give_up:
                raise
            log.info(f"{what} topic not ready yet; retrying", topic=topic, error=str(exc))
            await asyncio.sleep(0.5)
    await consumer.assign(positions)
