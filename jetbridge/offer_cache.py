"""The offer cache: airlines' answers kept in Redis, per airline and normalised search, for the router to
answer from and the connectors to fill.

**Key**: ``jb:<prefix>offers:<airline>:<digest>``, the digest a SHA-256 of the normalised search (origin,
destination, dates, passenger mix, cabin, currency): the same search however an agent phrased it.

**Value**: a Redis hash, ``response`` the airline's `AirlineResponse` Avro-encoded as on
``jb.airline-responses.v1`` (schema id and all: analytics tools read it as they read the topic), ``fetched_at``
and ``fresh_until`` in epoch milliseconds.

**Freshness**: an entry is *fresh* until ``fresh_until`` = the earlier of the airline's freshness policy
(``cache_fresh_s`` in the airline registry) and its earliest offer's own expiry; the router answers from it
without calling the airline (``CACHE``). After that it is *stale* and serves only when the airline cannot
answer live (``STALE``), offer by offer, never past an offer's own expiry; Redis drops the whole entry when its
last offer expires (``PEXPIREAT``).

**Single flight**: a connector about to call an airline for a search takes the search's flight
(``SET NX`` on ``…:flight``, expiring with the call's budget); one that finds it taken waits for the entry
instead of calling (`wait_for`): an answer the airline gave since the waiting call was made, stored before the
flight lands. A flight that lands without one (the call failed, or its answer had no offers) leaves each waiter
to call the airline itself.

Redis is an optimisation, never the only copy of anything: when it does not answer within ``timeout_s``
every operation here behaves as a miss (no entry, flight granted, nothing stored), `available` turns False,
one warning is logged and ``jb_cache_available`` shows 0, and after ``retry_s`` Redis is asked again: the
cache is used again as soon as it answers, without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from jetbridge.log import get_logger
from jetbridge.metrics import CACHE_AVAILABLE, serve
from schemas.codec import AvroCodec
from schemas.models import AirlineResponse, SearchCriteria

__all__ = ["CachedAnswer", "OfferCache", "cache_digest"]

log = get_logger(__name__)

T = TypeVar("T")


def cache_digest(criteria: SearchCriteria) -> str:
    """The normalised search, hashed: what two searches must share to share an airline's answer."""
    normal = {
        "origin": criteria.origin.upper(),
        "destination": criteria.destination.upper(),
        "departure_date": criteria.departure_date.isoformat(),
        "return_date": criteria.return_date.isoformat() if criteria.return_date else None,
        "adults": criteria.adults,
        "children": criteria.children,
        "infants": criteria.infants,
        "cabin": criteria.cabin.value,
        "currency": criteria.currency.upper(),
    }
    return hashlib.sha256(json.dumps(normal, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


# Exact integer milliseconds both ways (a float timestamp can be a millisecond short).
def _ms(at: datetime) -> int:
    return (at - _EPOCH) // _MS


def _at(ms: int) -> datetime:
    return _EPOCH + ms * _MS


def _int_or_none(raw: bytes | None) -> int | None:
    return int(raw) if raw is not None else None


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """One airline's cached answer to one search: its response as the airline gave it, and when."""

    response: AirlineResponse
    fetched_at: datetime
    fresh_until: datetime

    def fresh(self, now: datetime) -> bool:
        return now < self.fresh_until

    def age_ms(self, now: datetime) -> int:
        return max(0, int((now - self.fetched_at).total_seconds() * 1000))

    def live_offers(self, now: datetime) -> AirlineResponse:
        """The response with only the offers that have not expired at ``now``."""
        kept = [o for o in self.response.offers if o.expires_at > now]
        return (
            self.response
            if len(kept) == len(self.response.offers)
            else self.response.model_copy(update={"offers": kept})
        )


class OfferCache:
    """The offer cache of one process: reads, writes, flights; a miss whenever Redis does not answer."""

    def __init__(
        self,
        redis: Redis,
        codec: AvroCodec,
        *,
        topic: str,
        prefix: str = "",
        timeout_s: float = 0.25,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._codec = codec
        self._topic = topic  # the responses topic: its subject is the value's schema
        self._prefix = f"jb:{prefix}offers:"
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self._clock = clock
        self._away_until: float | None = None
        serve(CACHE_AVAILABLE)
        CACHE_AVAILABLE.set(1)

    @property
    def available(self) -> bool:
        """False while Redis is away (every read a miss, every write skipped)."""
        return self._away_until is None

    def key(self, airline: str, criteria: SearchCriteria) -> str:
        return f"{self._prefix}{airline}:{cache_digest(criteria)}"

    # ---- reading ----
    async def get_many(self, airlines: Sequence[str], criteria: SearchCriteria) -> dict[str, CachedAnswer]:
        """The cached answers of ``airlines`` to ``criteria`` (one round trip); absent ones are misses."""
        if not airlines:
            return {}

        async def read() -> list[dict[bytes, bytes]]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for airline in airlines:
                    pipe.hgetall(self.key(airline, criteria))
                return list(await pipe.execute())

        nothing: list[dict[bytes, bytes]] = []
        found = await self._guarded("read", read, nothing)
        answers: dict[str, CachedAnswer] = {}
        for airline, fields in zip(airlines, found, strict=False):
            if not fields:
                continue
            try:
                response = await self._codec.decode(fields[b"response"], AirlineResponse)
                answers[airline] = CachedAnswer(
                    response, _at(int(fields[b"fetched_at"])), _at(int(fields[b"fresh_until"]))
                )
            except Exception as exc:  # noqa: BLE001 - a damaged entry is a miss, never a failed search
                log.warning("offer cache entry unreadable: treated as a miss", airline=airline, error=repr(exc))
        return answers

    async def get(self, airline: str, criteria: SearchCriteria) -> CachedAnswer | None:
        return (await self.get_many([airline], criteria)).get(airline)

    # ---- writing ----
    async def put(self, criteria: SearchCriteria, response: AirlineResponse, *, fresh_s: float) -> bool:
        """Keep an airline's live answer with offers: fresh for ``fresh_s`` or until its first offer expires,
        kept (stale) until its last offer expires. Returns whether it was stored."""
        now = datetime.now(UTC)
        expiries = [o.expires_at for o in response.offers if o.expires_at > now]
        if response.offers == [] or not expiries:
            return False
        fresh_until = min(now + timedelta(seconds=fresh_s), min(expiries))
        key = self.key(response.airline, criteria)
        value = self._codec.encode(self._topic, response)

        async def write() -> bool:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"response": value, "fetched_at": _ms(now), "fresh_until": _ms(fresh_until)})
                pipe.pexpireat(key, _ms(max(expiries)))
                await pipe.execute()
            return True

        return await self._guarded("write", write, False)

    # ---- single flight ----
    async def take_flight(self, airline: str, criteria: SearchCriteria, *, ttl_s: float, owner: str) -> bool:
        """Whether this caller is the one to call the airline for this search now: the flight was free, or is
        already this ``owner``'s (the same call replayed after its worker restarted). True too when Redis is
        away: then everyone calls."""
        key = f"{self.key(airline, criteria)}:flight"

        async def claim() -> bool:
            return bool(await self._redis.eval(_TAKE, 1, key, owner, max(1, int(ttl_s * 1000))))

        return await self._guarded("flight", claim, True)

    async def land(self, airline: str, criteria: SearchCriteria, *, owner: str) -> None:
        """End this caller's flight (its answer is stored, or it failed: a waiter may call itself)."""
        key = f"{self.key(airline, criteria)}:flight"

        async def release() -> None:
            # Only its own flight: one that expired and was taken by another caller is left alone.
            await self._redis.eval(_LAND, 1, key, owner)

        await self._guarded("flight", release, None)

    async def wait_for(
        self,
        airline: str,
        criteria: SearchCriteria,
        *,
        until: float,
        since: datetime | None = None,
        poll_s: float = 0.05,
    ) -> CachedAnswer | None:
        """Wait (until the monotonic time ``until``) for another caller's flight to store its answer: one the
        airline gave at or after ``since`` (the waiting call's own creation), or without ``since`` a fresh one.
        None when the flight ended without one, time ran out, or Redis is away: the caller calls itself."""
        key = self.key(airline, criteria)

        async def look() -> tuple[bool, int | None, int | None]:
            # The flight first: an answer is stored before its flight lands, so a landed flight's answer is seen.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.exists(f"{key}:flight")
                pipe.hmget(key, ["fetched_at", "fresh_until"])
                flying, (fetched, fresh) = await pipe.execute()
            return bool(flying), _int_or_none(fetched), _int_or_none(fresh)

        def wanted(fetched_ms: int, fresh_ms: int) -> bool:
            if since is not None:
                return fetched_ms >= _ms(since)
            return _ms(datetime.now(UTC)) < fresh_ms

        while self._clock() < until:
            seen = await self._guarded("flight", look, None)
            if seen is None:
                return None
            flying, fetched, fresh = seen
            if fetched is not None and fresh is not None and wanted(fetched, fresh):
                # One decode, once the answer is there (polls read two numbers, not the offers).
                answer = await self.get(airline, criteria)
                if answer is not None and answer.fetched_at >= _at(fetched):
                    return answer
            if not flying:
                return None
            await asyncio.sleep(max(0.0, min(poll_s, until - self._clock())))
        return None

    # ---- Redis away ----
    async def _guarded(self, what: str, operation: Callable[[], Awaitable[T]], otherwise: T) -> T:
        if self._away_until is not None and self._clock() < self._away_until:
            return otherwise
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await operation()
        except (RedisError, OSError, TimeoutError) as exc:
            if self._away_until is None:
                log.warning(
                    "offer cache unavailable: answering live until Redis answers",
                    operation=what,
                    error=str(exc) or type(exc).__name__,
                )
                CACHE_AVAILABLE.set(0)
            self._away_until = self._clock() + self._retry_s
            return otherwise
        if self._away_until is not None:
            self._away_until = None
            CACHE_AVAILABLE.set(1)
            log.warning("offer cache back: using it again")
        return result


_TAKE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_LAND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
