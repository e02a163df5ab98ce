"""Each airline's answer to a search, as it reaches ``jb.airline-responses.v1``: for progress and late airlines.

`ResponseWatcher` reads every partition of the response topic from its end, like the reply correlator (no consumer
group, nothing committed: an answer matters only to the instance watching its request while the search runs). It
looks at headers first and decodes only the answers of the requests it was asked to watch; each airline's answer
is handed on once, however often it was delivered.

`replies_of` finds one request's reply on ``jb.replies.v1`` after the fact: the partition its key hashes to (the
producers' partitioner, Kafka's murmur2: `partition_for`), from the request's creation time (a broker time index
lookup), following the partition until the reply arrives or ``until`` passes. Nothing is addressed by instance
there, so a bridge that did not send the request (a restarted one) finds the reply its predecessor waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from confluent_kafka import TopicPartition

from jetbridge.errors import DecodeError, SchemaRegistryError
from jetbridge.kafka import HEADER_REQUEST_ID, AsyncConsumer, assign_at_end, decode_headers
from jetbridge.log import get_logger
from schemas.codec import AvroCodec
from schemas.models import AirlineResponse, SearchReply, now_utc

__all__ = ["ResponseWatcher", "murmur2", "partition_for", "replies_of"]

log = get_logger(__name__)

OnResponse = Callable[[AirlineResponse], None]


class ResponseWatcher:
    def __init__(self, *, instance_id: str, topic: str, codec: AvroCodec, consumer_config: dict[str, Any]) -> None:
        self._topic = topic
        self._codec = codec
        self._consumer = AsyncConsumer(
            consumer_config
            | {
                "group.id": f"jb.bridge-responses.{instance_id}",  # required by librdkafka; never joined
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 100,
                "fetch.min.bytes": 1,
            }
        )
        self._watching: dict[str, tuple[OnResponse, set[str]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.seen = 0
        # The topic is read only while a call needs it (a progress token, a task): every search's airline answers
        # pass through it, and following it for none cost the bridge 2 ms of CPU per search (issue 11, bench).
        self._users = 0
        self._switch = asyncio.Lock()
        self._active = asyncio.Event()
        self._wait_s = 30.0

    async def start(self, wait_s: float = 30.0) -> None:
        """Ready to follow the topic: nothing is read until a call needs it (`following`)."""
        self._wait_s = wait_s
        self._task = asyncio.create_task(self._run(), name="response-watcher")

    @contextlib.asynccontextmanager
    async def following(self) -> AsyncIterator[None]:
        """While a call needs the airlines' answers: from the first such call on, the topic is read from where it
        ended then (every partition; no group, nothing committed); after the last one it is let go. Enter it
        before the request is published, so no answer to it is missed."""
        async with self._switch:
            if self._users == 0:
                await assign_at_end(self._consumer, self._topic, what="response", wait_s=self._wait_s)
                self._active.set()
            self._users += 1
        try:
            yield
        finally:
            async with self._switch:
                self._users -= 1
                if self._users == 0:
                    self._active.clear()
                    await self._consumer.assign([])

    def watch(self, request_id: str, on_response: OnResponse) -> None:
        """Call ``on_response`` with each airline's answer to ``request_id`` (once per airline) until `unwatch`."""
        self._watching[request_id] = (on_response, set())

    def unwatch(self, request_id: str) -> None:
        self._watching.pop(request_id, None)

    @property
    def watching(self) -> int:
        return len(self._watching)

    async def _run(self) -> None:
        while True:
            await self._active.wait()
            try:
                messages = await self._consumer.consume(500, 0.25)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must survive broker hiccups
                log.warning("response watcher consumer error", error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            for message in messages:
                if message.error() is None:
                    await self._dispatch(message)

    async def _dispatch(self, message: Any) -> None:
        headers = decode_headers(message.headers())
        request_id = headers.get(HEADER_REQUEST_ID) or (message.key() or b"").decode("utf-8", "replace")
        if request_id not in self._watching:
            return
        try:
            response = await self._codec.decode(message.value(), AirlineResponse)
        except (DecodeError, SchemaRegistryError) as exc:
            log.warning("undecodable airline response skipped", request_id=request_id, error=str(exc))
            return
        watched = self._watching.get(request_id)
        if watched is None or response.request_id != request_id:
            return
        on_response, airlines = watched
        if response.airline in airlines:
            return  # a redelivery (a connector retried its produce): counted once
        airlines.add(response.airline)
        self.seen += 1
        try:
            on_response(response)
        except Exception as exc:  # noqa: BLE001 - one watcher's bug must not stop the others
            log.error("response watcher callback failed", request_id=request_id, error=repr(exc))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._watching.clear()
        await self._consumer.close()


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (its Java client's ``Utils.murmur2``), as an unsigned 32-bit value."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail, rest = length & ~3, length % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for(key: str, partitions: int) -> int:
    """The partition a keyed record goes to (librdkafka's ``murmur2_random``, faust's and Java's default)."""
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


async def replies_of(
    request_id: str,
    *,
    topic: str,
    codec: AvroCodec,
    consumer_config: dict[str, Any],
    since: datetime,
    until: datetime,
) -> SearchReply | None:
    """The reply to ``request_id`` on ``topic`` written since ``since``, waiting for it until ``until``."""
    consumer = AsyncConsumer(
        consumer_config | {"group.id": f"jb.bridge-recovery.{request_id}", "enable.auto.commit": False}
    )
    try:
        partitions = await consumer.partitions_of(topic)
        partition = partition_for(request_id, len(partitions))
        wanted = [TopicPartition(topic, partition, int(since.timestamp() * 1000))]
        found = await asyncio.get_running_loop().run_in_executor(
            None, lambda: consumer.raw.offsets_for_times(wanted, 10.0)
        )
        start = found[0].offset
        if start < 0:  # nothing written since: follow the partition from its end
            start = (await consumer.end_offsets(topic, [partition]))[0].offset
        await consumer.assign([TopicPartition(topic, partition, start)])
        while True:
            for message in await consumer.consume(500, 0.25):
                if message.error() is not None:
                    continue
                headers = decode_headers(message.headers())
                if headers.get(HEADER_REQUEST_ID, (message.key() or b"").decode("utf-8", "replace")) != request_id:
                    continue
                try:
                    return await codec.decode(message.value(), SearchReply)
                except (DecodeError, SchemaRegistryError) as exc:
                    log.warning("undecodable reply skipped", request_id=request_id, error=str(exc))
            if now_utc() >= until:
                return None
    finally:
        await consumer.close()
