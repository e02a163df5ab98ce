"""The offer cache (`jetbridge.offer_cache.OfferCache`) on the test session's real Redis: an airline's answer
stored Avro-encoded as on its topic, fresh until the earlier of its policy and its first offer's expiry, kept
(stale) until its last offer expires and then dropped by Redis; one flight per search, landed only by its
owner; waiting for a flight's answer; and Redis not answering: every operation a miss within its timeout, one
warning, and the cache used again once Redis answers, without a new client.

Each test has a topic prefix of its own (its own keys); the codec registers with an in-memory registry.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from jetbridge.offer_cache import OfferCache, cache_digest
from jetbridge.redis_client import open_redis
from jetbridge.settings import Settings
from schemas.codec import AvroCodec, schema_id_of
from schemas.models import AirlineResponse, OfferSource, now_utc
from schemas.registry import SchemaRegistryClient
from tests.support import factories as f
from tests.support.registry_double import RegistryDouble

pytestmark = pytest.mark.kafka  # needs the test session's infrastructure (Redis)

TOPIC = "jb.airline-responses.v1"


@pytest.fixture
async def codec() -> AsyncIterator[AvroCodec]:
    async with RegistryDouble().client() as http:
        made = AvroCodec(SchemaRegistryClient("http://registry.test", http))
        await made.register(TOPIC, AirlineResponse)
        yield made


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    async with open_redis(settings.redis_url, timeout_s=0.25) as client:
        yield client


def cache_on(redis: Redis, codec: AvroCodec, *, timeout_s: float = 0.25, retry_s: float = 5.0) -> OfferCache:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    return OfferCache(redis, codec, topic=TOPIC, prefix=prefix, timeout_s=timeout_s, retry_s=retry_s)


def answer_with(*expires_in_s: float, request_id: str = "r1") -> AirlineResponse:
    now = now_utc()  # milliseconds, as Avro keeps them
    offers = [
        f.offer("BA", amount=f"{500 + i}.00", expires_at=now + timedelta(milliseconds=int(s * 1000)))
        for i, s in enumerate(expires_in_s)
    ]
    return f.response("BA", request_id=request_id, offers=offers)


async def test_an_answer_is_stored_as_its_topic_has_it_fresh_until_its_first_offer_expires_kept_until_its_last(
    redis: Redis, codec: AvroCodec
) -> None:
    cache = cache_on(redis, codec)
    criteria = f.criteria()
    response = answer_with(600, 1200)
    before = datetime.now(UTC)
    assert await cache.put(criteria, response, fresh_s=60)

    key = cache.key("BA", criteria)
    assert key.endswith(f"offers:BA:{cache_digest(criteria)}")
    raw = await redis.hget(key, "response")
    assert isinstance(raw, bytes)
    assert schema_id_of(raw) == await codec.register(TOPIC, AirlineResponse)  # the wire format, as on the topic
    assert await codec.decode(raw, AirlineResponse) == response
    expires_ms = await redis.pexpiretime(key)
    assert expires_ms == round(max(o.expires_at for o in response.offers).timestamp() * 1000), "its last offer's"

    found = await cache.get("BA", criteria)
    assert found is not None
    assert found.response == response
    assert found.fresh(datetime.now(UTC))
    assert before - timedelta(milliseconds=1) <= found.fetched_at <= datetime.now(UTC)
    assert found.fresh_until <= found.fetched_at + timedelta(seconds=60)
    assert await cache.get("BA", f.criteria(adults=2)) is None, "another search, another key"

    short = answer_with(0.5, 30)
    assert await cache.put(criteria, short, fresh_s=60)
    first_expiry = await cache.get("BA", criteria)
    assert first_expiry is not None
    first = min(o.expires_at for o in short.offers)
    assert first_expiry.fresh_until == first, "fresh until its first offer's expiry, not for the policy's 60 s"


async def test_a_stale_entry_serves_only_its_offers_still_alive_and_redis_drops_it_after_the_last(
    redis: Redis, codec: AvroCodec
) -> None:
    cache = cache_on(redis, codec)
    criteria = f.criteria()
    assert await cache.put(criteria, answer_with(0.4, 1.0), fresh_s=0.2)
    await asyncio.sleep(0.5)
    entry = await cache.get("BA", criteria)
    assert entry is not None
    now = datetime.now(UTC)
    assert not entry.fresh(now), "past its policy's freshness"
    alive = entry.live_offers(now)
    assert [o.total_amount for o in alive.offers] == [501], "the offer that expired is gone"
    assert entry.age_ms(now) >= 500
    await asyncio.sleep(0.7)
    assert await cache.get("BA", criteria) is None, "dropped when its last offer expired"


async def test_an_answer_without_live_offers_is_not_stored(redis: Redis, codec: AvroCodec) -> None:
    cache = cache_on(redis, codec)
    assert not await cache.put(f.criteria(), f.response("BA", offers=[]), fresh_s=60)
    assert not await cache.put(f.criteria(), answer_with(-1), fresh_s=60)
    assert await cache.get("BA", f.criteria()) is None


async def test_get_many_reads_every_airlines_answer_in_one_round_trip(redis: Redis, codec: AvroCodec) -> None:
    cache = cache_on(redis, codec)
    criteria = f.criteria()
    await cache.put(criteria, answer_with(600), fresh_s=60)
    await cache.put(criteria, f.response("AA", offers=[f.offer("AA")]), fresh_s=60)
    found = await cache.get_many(["BA", "AA", "VS"], criteria)
    assert sorted(found) == ["AA", "BA"]
    assert found["AA"].response.source is OfferSource.LIVE


async def test_one_flight_per_search_landed_only_by_its_owner_and_gone_with_its_budget(
    redis: Redis, codec: AvroCodec
) -> None:
    cache = cache_on(redis, codec)
    criteria = f.criteria()
    assert await cache.take_flight("BA", criteria, ttl_s=5, owner="w1:r1")
    assert not await cache.take_flight("BA", criteria, ttl_s=5, owner="w2:r2")
    assert await cache.take_flight("AA", criteria, ttl_s=5, owner="w2:r2"), "another airline, another flight"
    await cache.land("BA", criteria, owner="w2:r2")
    assert not await cache.take_flight("BA", criteria, ttl_s=5, owner="w3:r3"), "not its flight to land"
    await cache.land("BA", criteria, owner="w1:r1")
    assert await cache.take_flight("BA", criteria, ttl_s=0.2, owner="w3:r3")
    await asyncio.sleep(0.3)
    assert await cache.take_flight("BA", criteria, ttl_s=5, owner="w4:r4"), "an abandoned flight ends with its budget"
    assert await cache.take_flight("BA", criteria, ttl_s=5, owner="w4:r4"), "the same call replayed: still its flight"


async def test_a_waiter_gets_the_answer_its_flight_stores_or_none_when_it_lands_without_one(
    redis: Redis, codec: AvroCodec
) -> None:
    cache = cache_on(redis, codec)
    criteria = f.criteria()
    await cache.put(criteria, answer_with(600, request_id="older"), fresh_s=0)  # an earlier answer, not fresh
    await asyncio.sleep(0.01)
    made = datetime.now(UTC)  # the waiting call is made after it
    assert await cache.take_flight("BA", criteria, ttl_s=5, owner="w1:r1")

    async def fly() -> None:
        await asyncio.sleep(0.2)
        await cache.put(criteria, answer_with(600, request_id="r1"), fresh_s=60)
        await cache.land("BA", criteria, owner="w1:r1")

    flying = asyncio.create_task(fly())
    found = await cache.wait_for("BA", criteria, until=time.monotonic() + 5, since=made)
    await flying
    assert found is not None
    assert found.response.request_id == "r1"

    made = datetime.now(UTC)
    assert await cache.take_flight("BA", criteria, ttl_s=5, owner="w1:r2")

    async def fail() -> None:
        await asyncio.sleep(0.2)
        await cache.land("BA", criteria, owner="w1:r2")

    failing = asyncio.create_task(fail())
    started = time.monotonic()
    assert await cache.wait_for("BA", criteria, until=started + 5, since=made) is None, "r1's answer is older"
    assert time.monotonic() - started < 1, "it stopped waiting when the flight landed"
    await failing

    assert await cache.take_flight("BA", criteria, ttl_s=5, owner="w1:r3")
    started = time.monotonic()
    assert await cache.wait_for("BA", criteria, until=started + 0.3, since=datetime.now(UTC)) is None
    assert 0.3 <= time.monotonic() - started < 0.6, "until its own budget's end, no longer"


async def test_redis_not_listening_makes_every_operation_a_miss_at_once_with_one_warning(
    codec: AvroCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    async with open_redis("redis://127.0.0.1:9/0", timeout_s=0.25) as nowhere:
        cache = cache_on(nowhere, codec, retry_s=60)
        criteria = f.criteria()
        started = time.monotonic()
        assert await cache.get("BA", criteria) is None
        assert await cache.take_flight("BA", criteria, ttl_s=5, owner="w1:r1"), "everyone calls the airline"
        assert not await cache.put(criteria, answer_with(600), fresh_s=60)
        await cache.land("BA", criteria, owner="w1:r1")
        assert await cache.wait_for("BA", criteria, until=time.monotonic() + 5, since=datetime.now(UTC)) is None
        assert time.monotonic() - started < 0.5
        assert not cache.available
    assert capsys.readouterr().out.count("offer cache unavailable") == 1


async def test_a_paused_redis_is_waited_for_no_longer_than_the_timeout_and_used_again_without_restart(
    redis: Redis, codec: AvroCodec, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = cache_on(redis, codec, timeout_s=0.25, retry_s=0.5)
    criteria = f.criteria()
    assert await cache.put(criteria, answer_with(600), fresh_s=60)
    async with open_redis(settings.redis_url) as admin:
        await admin.client_pause(1200, all=True)
        started = time.monotonic()
        assert await cache.get("BA", criteria) is None, "a miss, not a wait"
        assert time.monotonic() - started < 0.5
        assert not cache.available
        started = time.monotonic()
        assert await cache.take_flight("BA", criteria, ttl_s=5, owner="w1:r1")
        assert time.monotonic() - started < 0.05, "known away: not asked again before retry_s"
        await asyncio.sleep(1.5)  # the pause is over, and the retry period
    assert await cache.get("BA", criteria) is not None, "the same client, the same entry"
    assert cache.available
    logged = capsys.readouterr().out
    assert logged.count("offer cache unavailable") == 1
    assert logged.count("offer cache back") == 1
