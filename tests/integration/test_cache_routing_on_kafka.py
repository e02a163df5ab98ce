"""The router's cache decision on a real stream worker, a real broker and a real Redis, on topics (and cache
keys) of their own: a cached answer answers its airline with no call on its calls topic, flagged ``cache``
with its age; an airline whose circuit is open is answered from stale offers; ``fresh`` calls the airline
anyway; and two workers share the work. Also: the unit tests' in-memory cache answers as Redis does.

Like ``test_streams_on_kafka.py`` these stand in for the bridge and the connectors (requests in, responses
in), and fill the cache as a connector would (`OfferCache.put`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from jetbridge.offer_cache import OfferCache
from jetbridge.redis_client import open_redis
from jetbridge.settings import Settings
from schemas.models import (
    AirlineHealth,
    AirlineOutcome,
    AirlineResponse,
    AirlineStatus,
    CircuitState,
    ReplyStatus,
    SearchReply,
    now_utc,
)
from tests.support import factories as f
from tests.support.offer_cache_double import MemoryOfferCache
from tests.support.streams_worker import StreamsWorker, TopicSpace, running_worker

pytestmark = pytest.mark.kafka


def rid() -> str:
    return f"req-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    async with open_redis(settings.redis_url) as client:
        yield client


@pytest.fixture
def cache(space: TopicSpace, redis: Redis) -> OfferCache:
    """The offer cache as the space's stream workers see it (its prefix: keys of its own)."""
    assert space.codec is not None
    return OfferCache(redis, space.codec, topic=space.names.responses, prefix=space.prefix)


@pytest.fixture
async def worker(space: TopicSpace, test_home: Path) -> AsyncIterator[StreamsWorker]:
    async with running_worker(space, test_home, "streams-c1") as proc:
        yield proc


async def fill(cache: OfferCache, airline: str, *, fresh_s: float = 60.0) -> AirlineResponse:
    """``airline``'s answer to the default search, kept as its connector keeps one (fresh_s 0: stale at once)."""
    response = f.response(airline, request_id="req-earlier", correlation_id="req-earlier")
    assert await cache.put(f.criteria(), response, fresh_s=fresh_s)
    return response


async def calls_for(space: TopicSpace, airline: str, request_id: str, *, wait_s: float) -> int:
    """How many calls for ``request_id`` reached ``airline``'s calls topic (read for ``wait_s`` when none)."""
    messages = await asyncio.to_thread(
        space.read_all,
        space.names.calls(airline),
        until=lambda found: any(m.key() == request_id.encode() for m in found),
        timeout_s=wait_s,
    )
    return sum(1 for m in messages if m.key() == request_id.encode())


async def reply_to(space: TopicSpace, request_id: str, timeout_s: float = 15.0) -> SearchReply:
    replies = await space.replies(until=lambda r: any(x.request_id == request_id for x in r), timeout_s=timeout_s)
    [reply] = [r for r in replies if r.request_id == request_id]
    return reply


def by_airline(reply: SearchReply) -> dict[str, AirlineStatus]:
    return {a.airline: a for a in reply.airlines}


async def test_the_in_memory_cache_of_the_unit_tests_answers_as_redis_does(cache: OfferCache) -> None:
    await fill(cache, "BA")
    await fill(cache, "AA", fresh_s=0)
    memory = MemoryOfferCache()
    for answer in (await cache.get_many(["BA", "AA"], f.criteria())).values():
        memory.keep(f.criteria(), answer)
    same_search = f.criteria(origin="lhr", destination="jfk", currency="usd")  # phrased otherwise
    other_day = f.criteria(departure_date=f.criteria().departure_date + timedelta(days=2))
    searches = [f.criteria(), same_search, f.criteria(adults=2), other_day]
    for criteria in searches:
        for airlines in (["BA", "AA", "VS"], ["VS"], [], ["AA"]):
            assert await memory.get_many(airlines, criteria) == await cache.get_many(airlines, criteria)
    assert set(await cache.get_many(["BA", "AA", "VS"], same_search)) == {"BA", "AA"}


async def test_a_cached_answer_answers_its_airline_with_no_call_and_fresh_true_calls_it(
    space: TopicSpace, worker: StreamsWorker, cache: OfferCache
) -> None:
    kept = await fill(cache, "BA")
    request_id = rid()
    started = time.monotonic()
    await space.request(f.request(["BA", "AA"], request_id=request_id, correlation_id=request_id))
    assert await calls_for(space, "AA", request_id, wait_s=15) == 1, "AA has no cached answer: it is called"
    await space.respond(f.response("AA", request_id=request_id, correlation_id=request_id))
    reply = await reply_to(space, request_id)
    print(f"search with one airline from the cache: reply in {(time.monotonic() - started) * 1000:.0f} ms")
    assert reply.status is ReplyStatus.COMPLETE
    ba, aa = by_airline(reply)["BA"], by_airline(reply)["AA"]
    assert (ba.status, ba.source, ba.offer_count) == (AirlineOutcome.OK, "cache", 1)
    assert ba.age_ms is not None
    assert ba.age_ms >= 0
    assert (aa.source, aa.age_ms) == ("live", None)
    assert {o.offer_id for o in reply.offers} >= {o.offer_id for o in kept.offers}
    assert await calls_for(space, "BA", request_id, wait_s=2) == 0, "no call reached BA's topic"

    fresh_id = rid()
    await space.request(f.request(["BA"], request_id=fresh_id, correlation_id=fresh_id, fresh=True))
    assert await calls_for(space, "BA", fresh_id, wait_s=15) == 1, "fresh=true: BA is called despite its entry"
    await space.respond(f.response("BA", request_id=fresh_id, correlation_id=fresh_id))
    assert by_airline(await reply_to(space, fresh_id))["BA"].source == "live"


async def test_an_airline_with_its_circuit_open_is_answered_from_stale_offers(
    space: TopicSpace, worker: StreamsWorker, cache: OfferCache
) -> None:
    now = now_utc()
    opened = AirlineHealth(
        airline="AA",
        state=CircuitState.OPEN,
        since=now,
        until=now + timedelta(minutes=5),
        reason="failure rate 100%",
        reporter="test",
        reported_at=now,
    )
    await space.send(space.names.airline_health, opened, key="AA")
    # The worker follows the health topic in the background: wait (with a deadline) until it routes around AA.
    give_up = time.monotonic() + 20
    while True:
        probe = rid()
        other_day = f.criteria(departure_date=f.criteria().departure_date + timedelta(days=1))
        deadline = now_utc() + timedelta(milliseconds=800)
        await space.request(
            f.request(["AA"], request_id=probe, correlation_id=probe, criteria=other_day, deadline=deadline)
        )
        if by_airline(await reply_to(space, probe))["AA"].status is AirlineOutcome.CIRCUIT_OPEN:
            break
        assert time.monotonic() < give_up, "the worker never saw AA's circuit open"
    await fill(cache, "AA", fresh_s=0)  # stale at once
    request_id = rid()
    await space.request(f.request(["BA", "AA"], request_id=request_id, correlation_id=request_id))
    await space.respond(f.response("BA", request_id=request_id, correlation_id=request_id))
    reply = await reply_to(space, request_id)
    aa = by_airline(reply)["AA"]
    assert (aa.status, aa.source, aa.error_code, aa.offer_count) == (AirlineOutcome.OK, "stale", "circuit_open", 1)
    assert aa.age_ms is not None
    assert reply.status is ReplyStatus.COMPLETE, "a stale answer is an answer"
    assert await calls_for(space, "AA", request_id, wait_s=2) == 0


async def test_two_workers_answer_repeated_searches_from_the_cache_without_a_call(
    space: TopicSpace, test_home: Path, cache: OfferCache
) -> None:
    await fill(cache, "BA")
    workers = [StreamsWorker(space, test_home, f"streams-c{i}") for i in (1, 2)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            await w.healthy()
        ids = [rid() for _ in range(24)]
        started = time.monotonic()
        for request_id in ids:
            await space.request(f.request(["BA"], request_id=request_id, correlation_id=request_id))
        replies = await space.replies(until=lambda r: len(r) >= len(ids), timeout_s=30)
        print(f"{len(ids)} searches answered from the cache in {(time.monotonic() - started) * 1000:.0f} ms")
        assert sorted(r.request_id for r in replies) == sorted(ids), "exactly one reply each"
        assert {(r.status, by_airline(r)["BA"].source) for r in replies} == {(ReplyStatus.COMPLETE, "cache")}
        calls = await asyncio.to_thread(space.read_all, space.names.calls("BA"), until=lambda m: False, timeout_s=2)
        assert calls == [], "no airline call at all"
        healths = [await w.health() for w in workers]
        assert all(h["replies_sent"] > 0 for h in healths), f"both workers answered some: {healths}"
        assert {h["offer_cache"] for h in healths} == {"on"}
    finally:
        for w in workers:
            w.kill()
