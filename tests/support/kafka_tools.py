"""Looking at topics from a test: end offsets, and what was written since."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, Message, TopicPartition

from jetbridge.airlines import load_registry
from jetbridge.http import build_http_client
from jetbridge.kafka import client_config, decode_headers
from jetbridge.runtime import open_codec
from jetbridge.settings import Settings
from jetbridge.topics import declared_topics
from schemas.codec import AvroCodec


class KafkaProbe:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._http = build_http_client()
        self.codec: AvroCodec | None = None

    async def open(self) -> None:
        specs = declared_topics(
            load_registry(self.settings.airlines_file), self.settings.topic_partitions, self.settings.topic_prefix
        )
        self.codec = await open_codec(self.settings, specs, self._http)

    async def close(self) -> None:
        await self._http.aclose()

    def _consumer(self) -> Consumer:
        return Consumer(
            client_config(self.settings) | {"group.id": f"test-probe-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )

    async def end_offsets(self, topic: str) -> dict[int, int]:
        def ends() -> dict[int, int]:
            consumer = self._consumer()
            try:
                metadata = consumer.list_topics(topic, timeout=10)
                return {
                    p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in metadata.topics[topic].partitions
                }
            finally:
                consumer.close()

        return await asyncio.to_thread(ends)

    async def read_since(
        self,
        topic: str,
        since: dict[int, int],
        *,
        until_s: float = 5.0,
        want: Callable[[list[Message]], bool] | None = None,
    ) -> list[Message]:
        """Messages written to ``topic`` after ``since``; stops early once ``want(messages)`` is true."""

        def read() -> list[Message]:
            consumer = self._consumer()
            try:
                consumer.assign([TopicPartition(topic, p, o) for p, o in since.items()])
                found: list[Message] = []
                stop = time.monotonic() + until_s
                while time.monotonic() < stop:
                    for message in consumer.consume(100, 0.2):
                        if message.error() is None:
                            found.append(message)
                    if want is not None and want(found):
                        break
                return found
            finally:
                consumer.close()

        return await asyncio.to_thread(read)

    @staticmethod
    def headers(message: Message) -> dict[str, str]:
        return decode_headers(message.headers())
