"""The router's unit-test surroundings: a stream context with a test codec, airlines skipped as a test says,
and an offer cache only when given one; the codec with the router's topics registered; and routing one
request with every event it queues recorded (no broker)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jetbridge.kafka import decode_headers
from jetbridge.offer_cache import OfferCache
from jetbridge.routing import SkipReason
from jetbridge.settings import Settings
from schemas.codec import AvroCodec
from schemas.models import AirlineCall, AirlineResponse, SearchRequest
from schemas.registry import SchemaRegistryClient
from streams.context import StreamContext
from streams.router import Routed, Router
from tests.support.offer_cache_double import MemoryOfferCache
from tests.support.registry_double import RegistryDouble


class Context(StreamContext):
    """A stream context with a test codec, airlines skipped as told, and an offer cache only when given one."""

    def __init__(self, codec: AvroCodec, skips: dict[str, str], cache: MemoryOfferCache | None = None) -> None:
        super().__init__(Settings(JB_OFFER_CACHE="on" if cache is not None else "off"))
        self._test_codec = codec
        self._test_cache = cache
        self.skips = skips

    async def codec(self) -> AvroCodec:
        return self._test_codec

    async def offer_cache(self) -> OfferCache | None:
        return self._test_cache  # type: ignore[return-value]  # the reading side is all the router uses

    def skip_reason(self, codec: AvroCodec) -> SkipReason:
        def reason(code: str, _deadline: datetime) -> str | None:
            return self.skips.get(code)

        return reason


@contextlib.asynccontextmanager
async def router_codec() -> AsyncIterator[AvroCodec]:
    """A codec on a registry double with the requests, responses and every airline's calls registered."""
    async with RegistryDouble().client() as http:
        avro = AvroCodec(SchemaRegistryClient("http://registry.test", http))
        ctx = StreamContext(Settings())
        await avro.register(ctx.names.requests, SearchRequest)
        await avro.register(ctx.names.responses, AirlineResponse)
        for a in ctx.airlines:
            await avro.register(ctx.names.calls(a.code), AirlineCall)
        yield avro


TRACE = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"


@dataclass
class Sent:
    """One event the router queued."""

    topic: str
    key: bytes | str | None
    value: bytes
    headers: dict[str, str]


async def route_recorded(
    ctx: Context, codec: AvroCodec, request: SearchRequest, answered: Collection[str] = ()
) -> tuple[list[Sent], Routed]:
    """Route ``request`` in ``ctx``; every event it queues is recorded, none is acknowledged."""
    sent: list[Sent] = []

    async def produce(
        topic: str, key: bytes | str | None, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        sent.append(Sent(topic, key, value, decode_headers(list(headers))))
        return asyncio.get_running_loop().create_future()  # the broker has not answered yet

    routed = await Router(ctx, produce).route(codec, request, {"traceparent": TRACE}, answered)
    return sent, routed
