"""What a Jetbridge process opens at start-up and closes at exit: the airline registry, the schema
registry client and codec (every declared topic's schema registered), and a producer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import uvloop

from jetbridge.airlines import AirlineRegistry, load_registry
from jetbridge.errors import SchemaRegistryError
from jetbridge.http import build_http_client
from jetbridge.kafka import AsyncProducer, client_config
from jetbridge.log import get_logger
from jetbridge.settings import Settings
from jetbridge.topics import TopicSpec, declared_topics
from schemas.codec import AvroCodec
from schemas.registry import SchemaRegistryClient

__all__ = ["Runtime", "kafka_config", "open_codec", "open_runtime", "run"]

T = TypeVar("T")

log = get_logger(__name__)


def kafka_config(settings: Settings, client_id: str) -> dict[str, Any]:
    """librdkafka settings common to every client of this process (the cluster, its security, our name)."""
    return client_config(settings) | {"client.id": client_id}


def registry_client(settings: Settings, http: httpx.AsyncClient) -> SchemaRegistryClient:
    """A client of the schema registry the settings name (``SCHEMA_REGISTRY_URL``, with its basic auth)."""
    auth = None
    if settings.schema_registry_auth is not None:
        user, _, password = settings.schema_registry_auth.get_secret_value().partition(":")
        auth = (user, password)
    return SchemaRegistryClient(settings.schema_registry_url, http, auth=auth)


async def open_codec(
    settings: Settings, specs: list[TopicSpec], http: httpx.AsyncClient, *, wait_s: float = 60.0
) -> AvroCodec:
    """A codec with every topic's value schema registered; waits for a registry that is still starting."""
    codec = AvroCodec(registry_client(settings, http))
    loop = asyncio.get_running_loop()
    give_up = loop.time() + wait_s
    while True:
        try:
            await asyncio.gather(*(codec.register(s.name, s.model) for s in specs if s.model is not None))
            return codec
        except SchemaRegistryError as exc:
            if loop.time() >= give_up:
                raise
            log.warning("schema registry not ready, retrying", error=str(exc))
            await asyncio.sleep(1.0)


@dataclass
class Runtime:
    settings: Settings
    airlines: AirlineRegistry
    http: httpx.AsyncClient
    codec: AvroCodec
    producer: AsyncProducer

    async def close(self) -> None:
        await self.producer.close()
        await self.http.aclose()


async def open_runtime(settings: Settings, *, client_id: str, producer: dict[str, Any] | None = None) -> Runtime:
    airlines = load_registry(settings.airlines_file)
    http = build_http_client(timeout_s=10.0, max_connections=10)
    specs = declared_topics(airlines, settings.topic_partitions, settings.topic_prefix)
    codec = await open_codec(settings, specs, http)
    config = kafka_config(settings, client_id) | {"linger.ms": settings.producer_linger_ms} | (producer or {})
    return Runtime(settings, airlines, http, codec, AsyncProducer(config))


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's main coroutine on uvloop (libuv's event loop: less CPU per I/O event than
    asyncio's default); every long-running Jetbridge process starts through here."""
    return uvloop.run(main)
