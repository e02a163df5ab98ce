"""The router's unit-test surroundings: a stream context with a test codec, airlines skipped as a test says,
and an offer cache only when given one; and the codec with the router's topics registered."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

from jetbridge.offer_cache import OfferCache
from jetbridge.routing import SkipReason
from jetbridge.settings import Settings
from schemas.codec import AvroCodec
from schemas.models import AirlineCall, AirlineResponse, SearchRequest
from schemas.registry import SchemaRegistryClient
from streams.context import StreamContext
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
