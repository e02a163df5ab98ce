"""On real Kafka and the session's real Redis, with the real simulated BA (NDC): connector workers use the offer
cache around their airline calls. Twenty identical calls at once reach the airline once (counted by the
simulator), with one worker and with two; an airline that goes down is answered from its stale offers, flagged
with their age and the reason, never past an offer's own expiry (simulator offers that expire in seconds); and
Redis not answering leaves the calls answered live, with one warning, the cache used again once it answers.

Each test has a topic space (and so cache keys) of its own; the workers run in the test's event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from confluent_kafka import Message
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from connectors.service import health_report
from connectors.worker import ConnectorWorker
from infra.simulators import Simulators
from jetbridge.airlines import Airline, BreakerPolicy, CachePolicy, RetryPolicy
from jetbridge.http import build_http_client
from jetbridge.offer_cache import OfferCache
from jetbridge.redis_client import open_redis
from jetbridge.settings import Settings
from schemas.models import AirlineResponse, OfferSource, ResponseStatus, SearchCriteria, now_utc
from tests.integration.simulators_fixture import control_client, running_simulators
from tests.support import factories as f
from tests.support.streams_worker import TopicSpace

pytestmark = pytest.mark.kafka

CODE = "BA"


@pytest.fixture(scope="module")
async def sims() -> AsyncIterator[Simulators]:
    async with running_simulators([CODE]) as running:
        yield running


@dataclasses.dataclass
class Running:
    worker: ConnectorWorker
    task: asyncio.Task[None]
    cache: OfferCache


class Lane:
    """One test's topics, the simulated BA, Redis, and the connector workers it starts."""

    def __init__(self, space: TopicSpace, sims: Simulators, control: httpx.AsyncClient, redis_url: str) -> None:
        self.space = space
        self.sims = sims
        self.control = control
        self.redis_url = redis_url
        self.http = build_http_client(timeout_s=10.0)
        self.running: list[Running] = []
        self._clients: list[Redis] = []
        assert space.codec is not None
        self.codec = space.codec

    def airline(self, **changes: Any) -> Airline:
        values: dict[str, Any] = {
            "retry": {"search": RetryPolicy(max_attempts=1)},
            "breaker": BreakerPolicy(window_s=60, min_calls=2, failure_rate=0.5, open_s=60, half_open_calls=1),
            "cache": CachePolicy(fresh_s=60, serve_stale=True),
        }
        return dataclasses.replace(self.sims.airline(CODE), **(values | changes))

    async def start(self, instance: str, *, redis_url: str | None = None, retry_s: float = 5.0) -> Running:
        """A worker as the service builds it: its own Redis client (0.25 s timeout) and offer cache."""
        redis = Redis.from_url(redis_url or self.redis_url, socket_connect_timeout=0.25, socket_timeout=0.25)
        self._clients.append(redis)
        cache = OfferCache(
            redis, self.codec, topic=self.space.names.responses, prefix=self.space.prefix, retry_s=retry_s
        )
        settings = self.space.settings
        worker = ConnectorWorker(
            self.airline(),
            codec=self.codec,
            producer=self.space.producer,
            consumer_config={"bootstrap.servers": settings.kafka_bootstrap_servers},
            http=self.http,
            calls_topic=self.space.names.calls(CODE),
            responses_topic=self.space.names.responses,
            dlq_topic=self.space.names.dlq,
            group_id=f"{self.space.prefix}jb.connector.{CODE}",
            instance=instance,
            session_timeout_ms=settings.group_session_timeout_ms,
            offer_cache=cache,
        )
        running = Running(worker, asyncio.create_task(worker.run()), cache)
        self.running.append(running)
        async with asyncio.timeout(30):
            await worker.assigned.wait()
        return running

    async def close(self) -> None:
        for running in self.running:
            running.worker.stop()
        for running in self.running:
            await asyncio.wait_for(running.task, 30)
        for client in self._clients:
            await client.aclose()
        await self.http.aclose()

    async def call(
        self, request_id: str, criteria: SearchCriteria | None = None, deadline_s: float = 8.0, *, fresh: bool = False
    ) -> None:
        call = f.airline_call(
            request_id=request_id,
            correlation_id=request_id,
            airline=CODE,
            criteria=criteria or f.criteria(),
            deadline=now_utc() + timedelta(seconds=deadline_s),
            fresh=fresh,
        )
        await self.space.send(self.space.names.calls(CODE), call, key=request_id)

    async def responses(self, want: Callable[[dict[str, AirlineResponse]], bool]) -> dict[str, AirlineResponse]:
        """Every response so far by request id, read until ``want`` holds."""
        found: dict[str, AirlineResponse] = {}
        loop = asyncio.get_running_loop()

        def enough(messages: list[Message]) -> bool:
            found.clear()
            for m in messages:
                response = asyncio.run_coroutine_threadsafe(self.codec.decode(m.value(), AirlineResponse), loop)
                decoded = response.result(10)
                found[decoded.request_id] = decoded
            return want(found)

        await asyncio.to_thread(self.space.read_all, self.space.names.responses, until=enough, timeout_s=30)
        assert want(found), f"responses never met the expectation: {sorted(found)}"
        return found

    async def answered(self, *request_ids: str) -> dict[str, AirlineResponse]:
        return await self.responses(lambda rs: set(request_ids) <= set(rs))

    async def airline_calls(self) -> int:
        """Business calls the simulated airline received (its own count)."""
        calls: int = (await self.control.get(f"/airlines/{CODE}")).json()[CODE]["calls"]
        return calls

    async def configure(self, **settings: Any) -> None:
        answer = await self.control.put(f"/airlines/{CODE}", json=settings)
        assert answer.status_code == 200, answer.text


@pytest.fixture
async def lane(settings: Settings, sims: Simulators) -> AsyncIterator[Lane]:
    space = TopicSpace(settings)
    await space.open()
    async with control_client(sims) as control:
        await control.post("/reset")
        made = Lane(space, sims, control, settings.redis_url)
        try:
            yield made
        finally:
            await made.close()
            await space.close()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def never_expired(responses: dict[str, AirlineResponse]) -> bool:
    return all(o.expires_at > r.produced_at for r in responses.values() for o in r.offers)


async def test_twenty_identical_calls_at_once_reach_the_airline_once(lane: Lane) -> None:
    await lane.configure(latency_ms=400)  # the first call is still in flight when the others arrive
    running = await lane.start("w1")
    coalesced = sample("jb_cache_coalesced_total", airline=CODE)
    ids = [f"same-{i}" for i in range(20)]
    await asyncio.gather(*(lane.call(request_id) for request_id in ids))
    answered = await lane.answered(*ids)

    assert await lane.airline_calls() == 1, "counted at the simulator"
    sources = [answered[i].source for i in ids]
    assert sources.count(OfferSource.LIVE) == 1
    assert sources.count(OfferSource.CACHE) == 19
    live = next(r for r in answered.values() if r.source is OfferSource.LIVE)
    for response in answered.values():
        assert response.status is ResponseStatus.OK
        assert [o.offer_id for o in response.offers] == [o.offer_id for o in live.offers]
        if response.source is OfferSource.CACHE:
            assert response.attempts == 0
            assert response.cached_at is not None
            assert response.cached_at <= response.produced_at
    assert never_expired(answered)
    assert sample("jb_cache_coalesced_total", airline=CODE) - coalesced == 19
    assert running.worker.handled == 20


async def test_calls_for_live_offers_only_each_reach_the_airline_and_refresh_the_cache(lane: Lane) -> None:
    """fresh=true: the agent's own call to the airline (no identical call's answer shared), never answered stale;
    its answer is stored for the searches that may use the cache."""
    await lane.configure(latency_ms=400)
    await lane.start("w1")
    ids = [f"live-{i}" for i in range(4)]
    await asyncio.gather(*(lane.call(request_id, fresh=True) for request_id in ids))
    answered = await lane.answered(*ids)
    assert await lane.airline_calls() == 4
    assert {answered[i].source for i in ids} == {OfferSource.LIVE}
    await lane.configure(fault="http_500")
    await lane.call("live-down", fresh=True)
    down = (await lane.answered("live-down"))["live-down"]
    assert (down.status, down.offers) == (ResponseStatus.ERROR, []), "no stale stand-in for live offers only"
    await lane.call("may-use-cache")
    cached = (await lane.answered("may-use-cache"))["may-use-cache"]
    assert cached.source in (OfferSource.STALE, OfferSource.CACHE), "the fresh calls' answer was stored"


async def test_twenty_identical_calls_shared_by_two_workers_reach_the_airline_once(lane: Lane) -> None:
    await lane.configure(latency_ms=400)
    first = await lane.start("w1")
    second = await lane.start("w2")

    def split() -> bool:
        mine, theirs = set(first.worker.health()["partitions"]), set(second.worker.health()["partitions"])
        return bool(mine) and bool(theirs) and not mine & theirs

    async with asyncio.timeout(30):
        while not split():  # noqa: ASYNC110 - the group's rebalance has no event to wait on
            await asyncio.sleep(0.05)
    ids = [f"two-{i}" for i in range(20)]
    await asyncio.gather(*(lane.call(request_id) for request_id in ids))
    answered = await lane.answered(*ids)

    assert await lane.airline_calls() == 1, "one call for both instances (their flight is in Redis)"
    assert [r.source for r in answered.values()].count(OfferSource.LIVE) == 1
    assert all(r.status is ResponseStatus.OK and r.offers for r in answered.values())
    assert first.worker.handled > 0
    assert second.worker.handled > 0, "each instance answered some of the twenty"
    assert first.worker.handled + second.worker.handled == 20


@pytest.mark.parametrize("fault", ["http_500", "refuse"])
async def test_an_airline_that_goes_down_is_answered_from_its_stale_offers_with_the_reason(
    lane: Lane, fault: str
) -> None:
    running = await lane.start("w1")
    stale = sample("jb_cache_stale_serves_total", airline=CODE)
    await lane.call("up")
    before = await lane.answered("up")
    assert before["up"].source is OfferSource.LIVE
    assert before["up"].offers

    await lane.configure(fault=fault)
    await lane.call("down")
    answered = await lane.answered("down")
    down = answered["down"]
    assert down.status is ResponseStatus.OK
    assert down.source is OfferSource.STALE
    assert down.cached_at is not None
    assert down.cached_at <= down.produced_at
    assert abs(down.cached_at - before["up"].produced_at) < timedelta(seconds=1), "when the airline gave them"
    assert [o.offer_id for o in down.offers] == [o.offer_id for o in before["up"].offers]
    assert down.error is not None
    assert down.error.code == "airline_unavailable", "why the offers are stale"

    # Two failures in the window open the circuit: the next call fails fast, and is answered stale too.
    assert running.worker.guard.breaker.state.value == "OPEN"
    calls = await lane.airline_calls()
    await lane.call("open")
    answered = await lane.answered("open")
    assert answered["open"].source is OfferSource.STALE
    assert answered["open"].error is not None
    assert answered["open"].error.code == "circuit_open"
    assert answered["open"].attempts == 0
    assert await lane.airline_calls() == calls
    assert sample("jb_cache_stale_serves_total", airline=CODE) - stale == 2
    assert never_expired(answered)


async def test_stale_offers_past_their_own_expiry_are_never_served(lane: Lane) -> None:
    await lane.start("w1")
    await lane.configure(offer_ttl_s=3)
    soon = f.criteria(departure_date=(datetime.now(UTC) + timedelta(days=30)).date())
    await lane.call("short-lived", soon)
    first = (await lane.answered("short-lived"))["short-lived"]
    assert first.offers
    expiry = max(o.expires_at for o in first.offers)
    assert expiry <= now_utc() + timedelta(seconds=3)

    await lane.configure(fault="http_500")
    await lane.call("still-alive", soon)
    alive = (await lane.answered("still-alive"))["still-alive"]
    assert alive.source is OfferSource.STALE
    assert all(o.expires_at > alive.produced_at for o in alive.offers)

    await asyncio.sleep(max(0.0, (expiry - datetime.now(UTC)).total_seconds()) + 0.1)  # past the offers' expiry
    await lane.call("expired", soon)
    answered = await lane.answered("expired")
    gone = answered["expired"]
    assert gone.status is ResponseStatus.ERROR, "no offers left to stand in: the failure, as before"
    assert gone.source is OfferSource.LIVE
    assert gone.offers == []
    assert gone.error is not None
    assert gone.error.code in {"airline_unavailable", "circuit_open"}  # two failures open the test's circuit
    assert never_expired(answered)


async def test_with_nothing_cached_a_down_airline_is_answered_with_its_error(lane: Lane) -> None:
    await lane.start("w1")
    await lane.configure(fault="http_500")
    await lane.call("nothing")
    response = (await lane.answered("nothing"))["nothing"]
    assert response.status is ResponseStatus.ERROR
    assert response.source is OfferSource.LIVE
    assert response.error is not None
    assert response.error.code == "airline_unavailable"


async def test_redis_not_listening_leaves_calls_answered_live_with_one_warning(
    lane: Lane, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await lane.start("w1", redis_url="redis://127.0.0.1:9/0")
    await lane.configure(latency_ms=300)
    ids = [f"away-{i}" for i in range(5)]
    await asyncio.gather(*(lane.call(request_id) for request_id in ids))
    answered = await lane.answered(*ids)

    assert all(r.status is ResponseStatus.OK and r.offers for r in answered.values())
    assert await lane.airline_calls() == 1, "identical calls still share one call inside the process"
    assert not running.cache.available
    assert health_report([running.worker], [running.task], "w1", cache=running.cache)["cache"] == "unavailable"
    assert capsys.readouterr().out.count("offer cache unavailable") == 1


async def test_redis_paused_mid_run_calls_go_live_then_the_cache_is_used_again_without_restart(
    lane: Lane, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await lane.start("w1", retry_s=0.5)
    await lane.call("before")
    assert (await lane.answered("before"))["before"].source is OfferSource.LIVE

    paused_for = f.criteria(departure_date=(datetime.now(UTC) + timedelta(days=40)).date())
    async with open_redis(settings.redis_url) as admin:
        await admin.client_pause(2000, all=True)
        started = time.monotonic()
        await lane.call("during", paused_for)
        during = (await lane.answered("during"))["during"]
        waited = time.monotonic() - started
        assert during.status is ResponseStatus.OK
        assert during.source is OfferSource.LIVE
        assert during.latency_ms < 1000, "Redis was waited for no longer than its timeout"
        assert not running.cache.available
        assert waited < 2.0
        await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - started)) + 0.6)  # the pause, then retry_s
    calls = await lane.airline_calls()
    back = f.criteria(departure_date=(datetime.now(UTC) + timedelta(days=41)).date())
    await lane.call("after", back)
    assert (await lane.answered("after"))["after"].source is OfferSource.LIVE
    assert running.cache.available, "the same worker, without a restart"
    assert await running.cache.get(CODE, back) is not None, "its answer is in Redis again"
    await lane.configure(fault="http_500")
    await lane.call("after-down", back)
    assert (await lane.answered("after-down"))["after-down"].source is OfferSource.STALE
    assert await lane.airline_calls() == calls + 2
    logged = capsys.readouterr().out
    assert logged.count("offer cache unavailable") == 1
    assert logged.count("offer cache back") == 1
