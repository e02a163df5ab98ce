"""The connector side of the offer cache (`connectors/call_cache.py`) over an in-memory cache: identical calls in
one process share one airline call, a call whose search is in flight elsewhere waits for its stored answer, a
live answer with offers is stored before its flight lands, and a call the airline cannot answer gets the stale
offers still alive, with the failure kept; never an expired offer, never an answer older than the call."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from connectors.call_cache import Answer, CallCache, LiveCall, stands_in_for
from connectors.resilience import CallOutcome
from connectors.worker import airline_response
from jetbridge.airlines import CachePolicy, load_registry
from jetbridge.errors import (
    AirlineQuarantined,
    AirlineRejected,
    AirlineThrottled,
    AirlineTimeout,
    AirlineUnavailable,
    CircuitOpen,
    JetbridgeError,
    RateLimited,
)
from jetbridge.offer_cache import CachedAnswer, cache_digest
from schemas.models import AirlineCall, AirlineResponse, Offer, OfferSource, ResponseStatus, SearchCriteria, now_utc
from tests.support import factories as f

BA = load_registry()["BA"]


class MemoryCache:
    """The offer cache's semantics in a dict: entries with their fetch time, flights with their owner."""

    def __init__(self) -> None:
        self.entries: dict[str, CachedAnswer] = {}
        self.flights: dict[str, str] = {}
        self.events: list[str] = []

    async def get(self, airline: str, criteria: SearchCriteria) -> CachedAnswer | None:
        return self.entries.get(f"{airline}:{cache_digest(criteria)}")

    async def put(self, criteria: SearchCriteria, response: AirlineResponse, *, fresh_s: float) -> bool:
        await asyncio.sleep(0.01)  # a round trip: the response is told meanwhile
        now = now_utc()
        self.store(response, fetched_at=now, fresh_s=fresh_s)
        self.events.append("put")
        return True

    async def take_flight(self, airline: str, criteria: SearchCriteria, *, ttl_s: float, owner: str) -> bool:
        key = f"{airline}:{cache_digest(criteria)}"
        if key in self.flights:
            return False
        self.flights[key] = owner
        self.events.append("take")
        return True

    async def land(self, airline: str, criteria: SearchCriteria, *, owner: str) -> None:
        key = f"{airline}:{cache_digest(criteria)}"
        if self.flights.get(key) == owner:
            del self.flights[key]
            self.events.append("land")

    async def wait_for(
        self, airline: str, criteria: SearchCriteria, *, until: float, since: datetime | None = None
    ) -> CachedAnswer | None:
        key = f"{airline}:{cache_digest(criteria)}"
        while time.monotonic() < until:
            entry = self.entries.get(key)
            if entry is not None and (since is None or entry.fetched_at >= since):
                return entry
            if key not in self.flights:
                return None
            await asyncio.sleep(0.01)
        return None

    def store(self, response: AirlineResponse, *, fetched_at: datetime, fresh_s: float = 60) -> None:
        key = f"{response.airline}:{cache_digest(f.criteria())}"
        self.entries[key] = CachedAnswer(response, fetched_at, fetched_at + timedelta(seconds=fresh_s))


class Airline:
    """The live call: counts its calls, answers at once or when released, or fails."""

    def __init__(self, *, hold: bool = False, error: JetbridgeError | None = None) -> None:
        self.calls = 0
        self.released = asyncio.Event()
        if not hold:
            self.released.set()
        self.error = error
        self.offers = [f.offer("BA")]

    async def __call__(self, budget_s: float) -> CallOutcome[list[Offer]]:
        self.calls += 1
        await self.released.wait()
        if self.error is not None:
            return CallOutcome(None, self.error, 1, now_utc())
        return CallOutcome(self.offers, None, 1)


class Told:
    """What the worker published: one response per call."""

    def __init__(self) -> None:
        self.responses: list[AirlineResponse] = []

    def respond_to(
        self, call: AirlineCall
    ) -> tuple[Callable[[Answer], AirlineResponse], Callable[[AirlineResponse], Awaitable[None]]]:
        def respond(answer: Answer) -> AirlineResponse:
            return airline_response(
                BA,
                request_id=call.request_id,
                correlation_id=call.correlation_id,
                offers=answer.offers,
                error=answer.error,
                latency_ms=1,
                attempts=answer.attempts,
                source=answer.source,
                cached_at=answer.cached_at,
            )

        async def tell(response: AirlineResponse) -> None:
            self.responses.append(response)

        return respond, tell


async def answer(
    calls: CallCache, call: AirlineCall, live: LiveCall, told: Told, budget_s: float = 5.0, *, stale_ok: bool = True
) -> Answer:
    respond, tell = told.respond_to(call)
    return await calls.answer(call, budget_s=budget_s, live=live, respond=respond, tell=tell, stale_ok=stale_ok)


def call(request_id: str, **overrides: object) -> AirlineCall:
    return f.airline_call(request_id=request_id, correlation_id=request_id, **overrides)


def counted(name: str, code: str = "BA") -> float:
    return REGISTRY.get_sample_value(f"{name}_total", {"airline": code}) or 0.0


def entry_response(**overrides: Any) -> AirlineResponse:
    return f.response("BA", request_id="earlier", **overrides)


async def test_identical_calls_in_one_process_share_one_airline_call() -> None:
    cache, told = MemoryCache(), Told()
    calls = CallCache(BA, cache, instance="w1")
    airline = Airline(hold=True)
    coalesced, saved = counted("jb_cache_coalesced"), counted("jb_cache_calls_saved")

    running = [asyncio.create_task(answer(calls, call(f"r{i}"), airline, told)) for i in range(5)]
    await asyncio.sleep(0.05)
    airline.released.set()
    answers = await asyncio.gather(*running)

    assert airline.calls == 1
    assert [a.source for a in answers].count(OfferSource.LIVE) == 1
    assert [a.source for a in answers].count(OfferSource.CACHE) == 4
    shared = [r for r in told.responses if r.source is OfferSource.CACHE]
    assert {r.request_id for r in told.responses} == {f"r{i}" for i in range(5)}
    assert all(r.attempts == 0 and r.cached_at is not None and r.status is ResponseStatus.OK for r in shared)
    assert counted("jb_cache_coalesced") - coalesced == 4
    assert counted("jb_cache_calls_saved") - saved == 4


async def test_a_live_answer_is_stored_before_its_flight_lands_and_while_it_is_told() -> None:
    cache, told = MemoryCache(), Told()
    await answer(CallCache(BA, cache, instance="w1"), call("r1"), Airline(), told)

    assert cache.events == ["take", "put", "land"]
    assert len(told.responses) == 1
    assert told.responses[0].source is OfferSource.LIVE
    stored = await cache.get("BA", f.criteria())
    assert stored is not None
    assert stored.response.request_id == "r1"


async def test_a_call_whose_search_is_in_flight_elsewhere_waits_for_the_stored_answer() -> None:
    cache, told = MemoryCache(), Told()
    cache.flights[f"BA:{cache_digest(f.criteria())}"] = "another-instance:r0"
    waiting = call("r1")
    airline = Airline()
    running = asyncio.create_task(answer(CallCache(BA, cache, instance="w1"), waiting, airline, told))
    await asyncio.sleep(0.05)
    fetched = now_utc()
    cache.store(entry_response(), fetched_at=fetched)
    done = await running

    assert airline.calls == 0
    assert done.source is OfferSource.CACHE
    assert done.shared
    assert told.responses[0].cached_at == fetched
    assert told.responses[0].request_id == "r1"


async def test_a_flight_that_lands_without_an_answer_leaves_the_waiter_to_call_itself() -> None:
    cache, told = MemoryCache(), Told()
    key = f"BA:{cache_digest(f.criteria())}"
    cache.flights[key] = "another-instance:r0"
    airline = Airline()
    running = asyncio.create_task(answer(CallCache(BA, cache, instance="w1"), call("r1"), airline, told))
    await asyncio.sleep(0.05)
    del cache.flights[key]  # it failed: nothing stored
    done = await running

    assert airline.calls == 1
    assert done.source is OfferSource.LIVE


async def test_an_answer_older_than_the_call_is_not_shared_with_it() -> None:
    cache, told = MemoryCache(), Told()
    made = now_utc()
    cache.store(entry_response(), fetched_at=made - timedelta(seconds=5))
    airline = Airline()
    done = await answer(CallCache(BA, cache, instance="w1"), call("r1", created_at=made), airline, told)

    assert airline.calls == 1, "the router answers fresh repeats; the connector only shares newer answers"
    assert done.source is OfferSource.LIVE


async def test_an_answer_stored_since_the_call_was_made_is_used_without_calling() -> None:
    cache, told = MemoryCache(), Told()
    made = now_utc() - timedelta(seconds=1)  # the call waited on the topic while another flight landed
    cache.store(entry_response(), fetched_at=now_utc())
    airline = Airline()
    done = await answer(CallCache(BA, cache, instance="w1"), call("r1", created_at=made), airline, told)

    assert airline.calls == 0
    assert done.source is OfferSource.CACHE
    assert cache.events == ["take", "land"]


@pytest.mark.parametrize(
    "error",
    [
        AirlineUnavailable("BA: HTTP 500"),
        AirlineTimeout("BA did not answer within 2.00 s"),
        CircuitOpen("BA circuit open (failure rate 0.75)"),
        RateLimited("BA rate limit has no room before the deadline"),
        AirlineThrottled("BA asks to wait 2 s", retry_after_s=2),
    ],
    ids=lambda e: e.code,
)
async def test_a_call_the_airline_cannot_answer_gets_the_stale_offers_still_alive(error: JetbridgeError) -> None:
    cache, told = MemoryCache(), Told()
    now = now_utc()
    alive = f.offer("BA", amount="510.00", expires_at=now + timedelta(minutes=5))
    expired = f.offer("BA", amount="490.00", expires_at=now - timedelta(seconds=1))
    fetched = now - timedelta(minutes=10)
    cache.store(entry_response(offers=[alive, expired]), fetched_at=fetched)
    stale = counted("jb_cache_stale_serves")

    done = await answer(CallCache(BA, cache, instance="w1"), call("r1"), Airline(error=error), told)

    response = told.responses[0]
    assert response.status is ResponseStatus.OK
    assert response.source is OfferSource.STALE
    assert response.cached_at == fetched
    assert [o.offer_id for o in response.offers] == [alive.offer_id], "never an expired offer"
    assert response.error is not None
    assert response.error.code == error.code
    assert done.error is error
    assert counted("jb_cache_stale_serves") - stale == 1


async def test_with_every_cached_offer_expired_the_failure_is_answered_as_it_is() -> None:
    cache, told = MemoryCache(), Told()
    gone = f.offer("BA", expires_at=now_utc() - timedelta(milliseconds=1))
    cache.store(entry_response(offers=[gone]), fetched_at=now_utc() - timedelta(minutes=1))

    await answer(CallCache(BA, cache, instance="w1"), call("r1"), Airline(error=AirlineUnavailable("down")), told)

    response = told.responses[0]
    assert response.status is ResponseStatus.ERROR
    assert response.source is OfferSource.LIVE
    assert response.offers == []
    assert response.error is not None
    assert response.error.code == "airline_unavailable"


async def test_no_stale_offers_for_a_refusal_or_an_airline_whose_policy_says_no() -> None:
    cache, told = MemoryCache(), Told()
    cache.store(entry_response(), fetched_at=now_utc() - timedelta(minutes=1))
    await answer(CallCache(BA, cache, instance="w1"), call("r1"), Airline(error=AirlineRejected("no")), told)
    strict = dataclasses.replace(BA, cache=CachePolicy(serve_stale=False))
    await answer(CallCache(strict, cache, instance="w1"), call("r2"), Airline(error=AirlineUnavailable("x")), told)

    assert [r.status for r in told.responses] == [ResponseStatus.ERROR, ResponseStatus.ERROR]
    assert all(r.offers == [] for r in told.responses)


def test_a_quarantine_is_never_answered_stale_an_open_circuit_is() -> None:
    assert not stands_in_for(AirlineQuarantined("AY: its MCP tools differ from the approved pin"))
    assert stands_in_for(CircuitOpen("AY circuit open"))
    assert not stands_in_for(None)


async def test_a_failed_call_is_shared_with_its_identical_followers_and_lands_at_once() -> None:
    cache, told = MemoryCache(), Told()
    calls = CallCache(BA, cache, instance="w1")
    airline = Airline(hold=True, error=AirlineUnavailable("BA: HTTP 500"))
    running = [asyncio.create_task(answer(calls, call(f"r{i}"), airline, told)) for i in range(3)]
    await asyncio.sleep(0.05)
    airline.released.set()
    answers = await asyncio.gather(*running)

    assert airline.calls == 1, "a failing airline gets one call, not one per identical search"
    assert all(a.error is not None and a.error.code == "airline_unavailable" for a in answers)
    assert [a.shared for a in answers].count(True) == 2
    assert all(r.status is ResponseStatus.ERROR for r in told.responses)
    assert cache.events == ["take", "land"]


async def test_a_follower_whose_budget_ends_first_answers_deadline_exceeded() -> None:
    cache, told = MemoryCache(), Told()
    calls = CallCache(BA, cache, instance="w1")
    airline = Airline(hold=True)
    leader = asyncio.create_task(answer(calls, call("r1"), airline, told))
    await asyncio.sleep(0.02)
    done = await answer(calls, call("r2"), airline, told, budget_s=0.05)
    airline.released.set()
    await leader

    assert done.error is not None
    assert done.error.code == "deadline_exceeded"
    assert done.shared
    assert airline.calls == 1


async def test_a_follower_leads_when_the_call_it_waited_for_is_cancelled() -> None:
    cache, told = MemoryCache(), Told()
    calls = CallCache(BA, cache, instance="w1")
    stuck = Airline(hold=True)
    leader = asyncio.create_task(answer(calls, call("r1"), stuck, told))
    await asyncio.sleep(0.02)
    follower = asyncio.create_task(answer(calls, call("r2"), Airline(), told))
    await asyncio.sleep(0.02)
    leader.cancel()
    done = await follower

    assert done.source is OfferSource.LIVE
    assert not done.shared
    assert cache.flights == {}, "both flights landed"


async def test_a_call_for_live_offers_only_gets_the_failure_not_stale_offers_even_from_its_leader() -> None:
    cache, told = MemoryCache(), Told()
    cache.store(entry_response(), fetched_at=now_utc() - timedelta(minutes=1))
    calls = CallCache(BA, cache, instance="w1")
    airline = Airline(hold=True, error=AirlineUnavailable("BA: HTTP 500"))
    leader = asyncio.create_task(answer(calls, call("r1"), airline, told))
    fresh_only = asyncio.create_task(answer(calls, call("r2"), airline, told, stale_ok=False))
    await asyncio.sleep(0.05)
    airline.released.set()
    stale, live_only = await leader, await fresh_only

    assert stale.source is OfferSource.STALE
    assert live_only.source is OfferSource.LIVE
    assert live_only.offers == []
    assert live_only.error is not None
    assert airline.calls == 1


async def test_a_follower_that_allows_stale_offers_gets_them_when_its_leader_was_live_only() -> None:
    cache, told = MemoryCache(), Told()
    cache.store(entry_response(), fetched_at=now_utc() - timedelta(minutes=1))
    calls = CallCache(BA, cache, instance="w1")
    airline = Airline(hold=True, error=AirlineUnavailable("BA: HTTP 500"))
    leader = asyncio.create_task(answer(calls, call("r1"), airline, told, stale_ok=False))
    follower = asyncio.create_task(answer(calls, call("r2"), airline, told))
    await asyncio.sleep(0.05)
    airline.released.set()

    assert (await leader).source is OfferSource.LIVE
    assert (await follower).source is OfferSource.STALE
