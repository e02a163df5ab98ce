"""What the stream stages share: settings, topic names, the airline registry, the codec, the airlines'
health board and the offer cache, each opened once per process on first use. Nothing here knows faust.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from jetbridge.airlines import AirlineRegistry, load_registry
from jetbridge.health_board import HealthBoard, shared_board
from jetbridge.http import build_http_client
from jetbridge.kafka import client_config
from jetbridge.offer_cache import OfferCache
from jetbridge.redis_client import open_redis
from jetbridge.routing import SkipReason
from jetbridge.runtime import open_codec
from jetbridge.settings import Settings
from jetbridge.topics import TopicNames, declared_topics
from schemas.codec import AvroCodec

__all__ = ["Produce", "Send", "StreamContext"]

# Produce to a topic (by name) and return once the broker acknowledged it: a stage acknowledges its source
# event only after what it produced for it is durable (at-least-once).
Send = Callable[[str, bytes | str | None, bytes, Sequence[tuple[str, bytes]]], Awaitable[None]]

# Queue an event for a topic and return at once with the broker's acknowledgement still to come: the hot
# path queues everything one event causes (the producer batches it with its neighbours) and acknowledges
# the source event when every acknowledgement has come (``acks.py``), instead of one round trip per send.
Produce = Callable[[str, bytes | str | None, bytes, Sequence[tuple[str, bytes]]], Awaitable["asyncio.Future[Any]"]]


class StreamContext:
    """What the agents share: settings, the airline registry, the codec and the offer cache (opened on first
    use; ``aclose`` closes what was opened)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        self.airlines: AirlineRegistry = load_registry(settings.airlines_file)
        self._codec: AvroCodec | None = None
        self._offer_cache: OfferCache | None = None
        self._opened = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    async def codec(self) -> AvroCodec:
        if self._codec is None:
            async with self._lock:
                if self._codec is None:
                    http = build_http_client(timeout_s=10.0, max_connections=10)
                    specs = declared_topics(self.airlines, self.settings.topic_partitions, self.settings.topic_prefix)
                    self._codec = await open_codec(self.settings, specs, http)
        return self._codec

    async def offer_cache(self) -> OfferCache | None:
        """The offer cache, on one Redis client for the process; None when it is off (``JB_OFFER_CACHE=off``)."""
        if self.settings.cache == "off":
            return None
        if self._offer_cache is None:
            codec = await self.codec()
            async with self._lock:
                if self._offer_cache is None:
                    redis = await self._opened.enter_async_context(open_redis(self.settings.redis_url))
                    self._offer_cache = OfferCache(
                        redis, codec, topic=self.names.responses, prefix=self.settings.topic_prefix
                    )
        return self._offer_cache

    def cache_state(self) -> str:
        """For the health answer: ``off``, ``on`` (Redis answers or was not asked yet) or ``unavailable``."""
        if self.settings.cache == "off":
            return "off"
        return "unavailable" if self._offer_cache is not None and not self._offer_cache.available else "on"

    async def aclose(self) -> None:
        """Close what was opened (the offer cache's Redis connections)."""
        await self._opened.aclose()

    def health_board(self, codec: AvroCodec) -> HealthBoard:
        """The airlines' shared health, followed in the background from the first call on."""
        return shared_board(self.names.airline_health, codec, client_config(self.settings))

    def skip_reason(self, codec: AvroCodec) -> SkipReason:
        """The router's question to the health board: why an airline should not be called at all."""
        return self.health_board(codec).skip_reason
