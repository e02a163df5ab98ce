"""The connector's side of the offer cache (``jetbridge/offer_cache.py``, README "The offer cache"), around
each airline call of a worker:

    single flight     identical calls (one airline, one normalised search) share one airline call: inside the
    (request          process through one shared future (no Redis needed), across instances through the
    collapsing)       search's flight in Redis: a call that finds it taken waits, within its budget, for the
                      answer the flight stores, and calls the airline itself when the flight lands without one
    cache-aside fill  a live answer with offers is stored while its response is being published, before its
                      flight lands, so the waiters find it
    stale-if-error    a live call that failed because the airline cannot answer now (error, timeout, circuit
                      open, our rate limit, its Retry-After) is answered from the cached entry when the airline's
                      policy allows (``cache.serve_stale``): status OK, source STALE, ``cached_at``, only the
                      offers not yet expired, and the live failure kept in ``error`` so the reply says why

A shared answer is source CACHE with the time the airline gave it (``cached_at``). A connector uses only
answers the airline gave after the call was made (the call's ``created_at``): the router answers fresh repeats
before calling, so an older entry is not what the call is for. A call the agent asked live offers for
(``AirlineCall.fresh``) is never answered stale.
A quarantined airline is never answered from the cache: its calls do not get here (``connectors/worker.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from connectors.resilience import CallOutcome
from jetbridge.airlines import Airline
from jetbridge.errors import (
    AirlineBadResponse,
    AirlineQuarantined,
    AirlineTimeout,
    AirlineUnavailable,
    CircuitOpen,
    DeadlineExceeded,
    JetbridgeError,
    RateLimited,
)
from jetbridge.metrics import CACHE_CALLS_SAVED, CACHE_COALESCED, CACHE_STALE_SERVES
from jetbridge.offer_cache import CachedAnswer, cache_digest
from schemas.models import AirlineCall, AirlineResponse, Offer, OfferSource, SearchCriteria, now_utc

__all__ = ["Answer", "CallCache", "FlightCache", "LiveCall", "stands_in_for"]


class FlightCache(Protocol):
    """What a worker asks of the offer cache (`jetbridge.offer_cache.OfferCache`)."""

    async def get(self, airline: str, criteria: SearchCriteria) -> CachedAnswer | None: ...

    async def put(self, criteria: SearchCriteria, response: AirlineResponse, *, fresh_s: float) -> bool: ...

    async def take_flight(self, airline: str, criteria: SearchCriteria, *, ttl_s: float, owner: str) -> bool: ...

    async def land(self, airline: str, criteria: SearchCriteria, *, owner: str) -> None: ...

    async def wait_for(
        self, airline: str, criteria: SearchCriteria, *, until: float, since: datetime | None = None
    ) -> CachedAnswer | None: ...


LiveCall = Callable[[float], Awaitable[CallOutcome[list[Offer]]]]
"""The airline call itself, within a budget in seconds (the worker's guarded call)."""

# Failures that say the airline cannot answer now, which stale offers may stand in for. Not a refusal
# (airline_rejected: it answered), and not a quarantine (an operator must look at the airline first).
_UNAVAILABLE = (AirlineTimeout, AirlineUnavailable, AirlineBadResponse, CircuitOpen, RateLimited, DeadlineExceeded)


def stands_in_for(error: JetbridgeError | None) -> bool:
    """Whether stale offers may answer a call that failed with ``error``."""
    return isinstance(error, _UNAVAILABLE) and not isinstance(error, AirlineQuarantined)


@dataclass(frozen=True, slots=True)
class Answer:
    """What one call came to: its offers, the live call's failure (kept when stale offers stand in), where the
    offers came from and when the airline gave them."""

    offers: list[Offer]
    error: JetbridgeError | None
    attempts: int
    first_failed_at: datetime | None = None
    source: OfferSource = OfferSource.LIVE
    fetched_at: datetime = field(default_factory=now_utc)
    shared: bool = False  # the airline was not called for it: an identical call's answer

    @classmethod
    def live(cls, outcome: CallOutcome[list[Offer]]) -> Answer:
        return cls(outcome.result or [], outcome.error, outcome.attempts, outcome.first_failed_at)

    @property
    def cached_at(self) -> datetime | None:
        """When the airline gave the offers, for a response not answered live."""
        return None if self.source is OfferSource.LIVE else self.fetched_at

    def for_another_call(self) -> Answer:
        """This answer given to an identical call that shared it (no attempt of its own, offers still alive)."""
        now = now_utc()
        source = OfferSource.CACHE if self.source is OfferSource.LIVE and self.error is None else self.source
        offers = [o for o in self.offers if o.expires_at > now]
        return replace(self, offers=offers, attempts=0, source=source, shared=True)


# How much longer than one attempt (the airline's timeout_ms) a flight is held before a waiting call may take it.
FLIGHT_SLACK_S = 0.5


class CallCache:
    """One worker's use of the offer cache around its airline calls (single flight, fill, stale-if-error)."""

    def __init__(
        self, airline: Airline, cache: FlightCache, *, instance: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.airline = airline
        self.cache = cache
        self._instance = instance
        self._clock = clock
        # The calls of this process in flight, by normalised search: their identical followers await them.
        self._flights: dict[str, asyncio.Future[Answer]] = {}

    async def answer(
        self,
        call: AirlineCall,
        *,
        budget_s: float,
        live: LiveCall,
        respond: Callable[[Answer], AirlineResponse],
        tell: Callable[[AirlineResponse], Awaitable[None]],
        stale_ok: bool = True,
    ) -> Answer:
        """Answer ``call`` within ``budget_s``: ``live`` calls the airline when no identical call's answer will do,
        ``respond`` makes the answer's response and ``tell`` publishes it. ``stale_ok`` False (the agent asked for
        live offers) answers a failure as it is. Returns the answer, for the worker's metrics and dead letters."""
        until = self._clock() + budget_s
        digest = cache_digest(call.criteria)
        while (leader := self._flights.get(digest)) is not None:
            shared = await self._follow(call, leader, until, stale_ok)
            if shared is not None:
                await tell(respond(shared))
                return self._counted(shared)
            # The identical call gave up (cancelled at shutdown): this one leads now, or follows the next.
        flight: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._flights[digest] = flight

        def share(answer: Answer) -> None:
            if self._flights.get(digest) is flight:
                del self._flights[digest]  # later calls lead their own: this answer is older than they are
            if not flight.done():
                flight.set_result(answer.for_another_call())

        try:
            return self._counted(await self._lead(call, until, live, respond, tell, share, stale_ok))
        finally:
            if self._flights.get(digest) is flight:
                del self._flights[digest]
            if not flight.done():
                flight.cancel()

    async def _follow(
        self, call: AirlineCall, leader: asyncio.Future[Answer], until: float, stale_ok: bool
    ) -> Answer | None:
        """The answer of the identical call in flight in this process; None when it gave up."""
        started = self._clock()
        done, _ = await asyncio.wait({leader}, timeout=max(0.0, until - started))
        if not done:
            waited = self._clock() - started
            late = DeadlineExceeded(
                f"{self.airline.code}: an identical call in flight did not answer in {waited:.2f} s"
            )
            return await self._stale(call, Answer([], late, 0, shared=True), stale_ok)
        if leader.cancelled():
            return None
        shared = leader.result()
        if shared.source is OfferSource.STALE and not stale_ok:
            return replace(shared, offers=[], source=OfferSource.LIVE, fetched_at=now_utc())
        if shared.error is not None and shared.source is OfferSource.LIVE:
            return await self._stale(call, shared, stale_ok)  # the leader may have been live-only
        return shared

    async def _lead(
        self,
        call: AirlineCall,
        until: float,
        live: LiveCall,
        respond: Callable[[Answer], AirlineResponse],
        tell: Callable[[AirlineResponse], Awaitable[None]],
        share: Callable[[Answer], None],
        stale_ok: bool,
    ) -> Answer:
        cache, code, criteria = self.cache, self.airline.code, call.criteria
        owner = f"{self._instance}:{call.request_id}"
        # The flight lasts one attempt (and a little): a leader that died is replaced by a waiting call while it
        # still has time to call the airline itself, not at the end of its budget.
        flight_s = min(until - self._clock(), self.airline.timeout_ms / 1000 + FLIGHT_SLACK_S)
        took = await cache.take_flight(code, criteria, ttl_s=max(0.001, flight_s), owner=owner)
        landed = not took

        async def land() -> None:
            nonlocal landed
            if not landed:
                landed = True
                await cache.land(code, criteria, owner=owner)

        try:
            if took:
                # Another instance's flight may have landed between the router's call and this one.
                found = await cache.get(code, criteria)
                if found is not None and found.fetched_at < call.created_at:
                    found = None
            else:
                found = await cache.wait_for(code, criteria, until=until, since=call.created_at)
            answer = _shared(found) if found is not None else None
            if answer is None:
                answer = Answer.live(await live(max(0.0, until - self._clock())))
                if answer.error is not None:
                    await land()  # its waiters call the airline themselves, now
                    answer = await self._stale(call, answer, stale_ok)
            share(answer)
            response = respond(answer)
            if answer.source is OfferSource.LIVE and answer.error is None and answer.offers:
                filling = asyncio.create_task(self._fill_then_land(call, response, land))
                try:
                    await tell(response)
                finally:
                    await filling
            else:
                await land()
                await tell(response)
            return answer
        finally:
            await land()

    async def fill(self, call: AirlineCall, response: AirlineResponse) -> None:
        """Keep a live answer with offers that no flight shared (a ``fresh`` call's): it refreshes the cache."""
        if response.source is OfferSource.LIVE and response.error is None and response.offers:
            await self.cache.put(call.criteria, response, fresh_s=self.airline.cache.fresh_s)

    async def _fill_then_land(
        self, call: AirlineCall, response: AirlineResponse, land: Callable[[], Awaitable[None]]
    ) -> None:
        try:
            await self.cache.put(call.criteria, response, fresh_s=self.airline.cache.fresh_s)
        finally:
            await land()

    async def _stale(self, call: AirlineCall, failure: Answer, stale_ok: bool) -> Answer:
        """``failure``, with the cached offers still alive standing in when the call and its airline's policy
        allow."""
        if not stale_ok or not self.airline.cache.serve_stale or not stands_in_for(failure.error):
            return failure
        entry = await self.cache.get(self.airline.code, call.criteria)
        if entry is None:
            return failure
        offers = entry.live_offers(now_utc()).offers
        if not offers:
            return failure
        return replace(failure, offers=offers, source=OfferSource.STALE, fetched_at=entry.fetched_at)

    def _counted(self, answer: Answer) -> Answer:
        code = self.airline.code
        if answer.shared:
            CACHE_COALESCED.labels(code).inc()
        if answer.source is OfferSource.CACHE:
            CACHE_CALLS_SAVED.labels(code).inc()
        elif answer.source is OfferSource.STALE:
            CACHE_STALE_SERVES.labels(code).inc()
        return answer


def _shared(entry: CachedAnswer) -> Answer | None:
    """Another flight's stored answer as this call's, when some of its offers are still alive."""
    offers = entry.live_offers(now_utc()).offers
    if not offers:
        return None
    return Answer(offers, None, 0, source=OfferSource.CACHE, fetched_at=entry.fetched_at, shared=True)
