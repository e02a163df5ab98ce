"""Where the clients' allowances are counted: in Redis, shared by every bridge instance, or in this process.

An allowance (`mcp_bridge.entitlements.Entitlement`) is spent one search at a time: a token of its bucket
(rate, burst), one of its daily quota, one of its look-to-book window. With several bridge instances behind a
load balancer, counts kept per process would let a client through N times its allowance, so
`SharedLedger` keeps them in Redis: one Lua script checks all three limits and spends them together,
atomically, on Redis's clock (every instance sees the same time). Keys are per allowance, under the stack's
topic prefix, with a hash tag so a Redis Cluster keeps an allowance's keys on one shard:

    jb:<prefix>allowance:{<name>}:bucket   hash  tokens, updated           expires once full again
    jb:<prefix>allowance:{<name>}:day:<n>  int   searches on UTC day n     expires after two days
    jb:<prefix>allowance:{<name>}:window   zset  searches in the window    expires after the window

Redis is an optimisation here too, never a single point of failure: when it does not answer (within
``timeout_s``), the search is counted by `LocalLedger` in this process instead, the bridge says so once in
its log and in ``jb_allowances_shared``, and goes back to Redis on its own after ``retry_s``. While Redis is
away each instance enforces the whole allowance on what it sees, as a single instance would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from jetbridge.log import get_logger
from jetbridge.metrics import ALLOWANCES_SHARED, serve
from mcp_bridge.limits import DailyQuota, SearchWindow, TokenBucket

__all__ = ["Ledger", "LocalLedger", "Refusal", "SharedLedger", "Spend"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Spend:
    """What one search would spend of an allowance: its limits, by name (the allowance's key)."""

    name: str
    rate_per_s: float
    burst: int
    daily_quota: int
    window_searches: int
    window_s: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """Which limit refused a search (``quota``, ``window`` or ``rate``) and how long until it would not."""

    limit: str
    wait_s: float


class Ledger(Protocol):
    async def spend(self, spend: Spend) -> Refusal | None:
        """Check every limit and, when none refuses, spend one search of each; nothing is spent on a refusal."""
        ...

    async def booked(self, name: str) -> None:
        """A booking by the allowance ``name``: its look-to-book window starts again (no search is left unpaid)."""
        ...


@dataclass(slots=True)
class _State:
    bucket: TokenBucket
    quota: DailyQuota
    window: SearchWindow


@dataclass
class LocalLedger:
    """The allowances as this process counts them (one bridge instance, or Redis away)."""

    clock: Callable[[], float] = time.time
    _states: dict[str, _State] = field(default_factory=dict)

    async def spend(self, spend: Spend) -> Refusal | None:
        return self.spend_now(spend)

    async def booked(self, name: str) -> None:
        self.booked_now(name)

    def booked_now(self, name: str) -> None:
        state = self._states.get(name)
        if state is not None:
            state.window.booked()

    def spend_now(self, spend: Spend) -> Refusal | None:
        now = self.clock()
        state = self._states.get(spend.name)
        if state is None:
            state = _State(
                TokenBucket.full(spend.rate_per_s, spend.burst, now),
                DailyQuota(spend.daily_quota),
                SearchWindow(spend.window_searches, spend.window_s),
            )
            self._states[spend.name] = state
        for limit, wait in (
            ("quota", state.quota.wait_s(now)),
            ("window", state.window.wait_s(now)),
            ("rate", state.bucket.wait_s(now)),
        ):
            if wait > 0:
                return Refusal(limit, wait)
        state.bucket.take(now)
        state.quota.take(now)
        state.window.take(now)
        return None


# KEYS: bucket, day prefix, window. ARGV: rate, burst, daily quota, window searches, window seconds, member.
# Returns {"ok", "0"} having spent one of each, or {limit, wait seconds} having spent nothing.
_SPEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local quota, wlimit, wsec = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local day = KEYS[2] .. math.floor(now / 86400)
if quota > 0 then
  local used = tonumber(redis.call('GET', day) or '0')
  if used >= quota then return {'quota', tostring(86400 - now % 86400)} end
end
if wlimit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - wsec)
  if redis.call('ZCARD', KEYS[3]) >= wlimit then
    local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {'window', tostring(tonumber(first[2]) + wsec - now)}
  end
end
local held = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(held[1]) or burst
local updated = tonumber(held[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
if tokens < 1 then return {'rate', tostring((1 - tokens) / rate)} end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
if quota > 0 then
  redis.call('INCR', day)
  redis.call('EXPIRE', day, 172800)
end
if wlimit > 0 then
  redis.call('ZADD', KEYS[3], now, ARGV[6])
  redis.call('EXPIRE', KEYS[3], math.ceil(wsec) + 60)
end
return {'ok', '0'}
"""


class SharedLedger:
    """The allowances in Redis, shared by every bridge instance; `LocalLedger` while Redis does not answer."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "",
        fallback: LocalLedger | None = None,
        timeout_s: float = 0.25,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(_SPEND)
        self._prefix = f"jb:{prefix}allowance:"
        self.fallback = fallback or LocalLedger()
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self._clock = clock
        self._away_until: float | None = None  # while set, Redis is not asked before then
        serve(ALLOWANCES_SHARED)
        ALLOWANCES_SHARED.set(1)

    @property
    def shared(self) -> bool:
        """Whether searches are being counted in Redis now (False: in this process, Redis being away)."""
        return self._away_until is None

    async def booked(self, name: str) -> None:
        self.fallback.booked_now(name)
        if self._away_until is not None and self._clock() < self._away_until:
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._redis.delete(f"{self._prefix}{{{name}}}:window")
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("booking not counted in the shared look-to-book window", error=str(exc) or type(exc).__name__)

    async def spend(self, spend: Spend) -> Refusal | None:
        if self._away_until is not None and self._clock() < self._away_until:
            return self.fallback.spend_now(spend)
        base = f"{self._prefix}{{{spend.name}}}:"
        try:
            async with asyncio.timeout(self._timeout_s):
                limit, wait = await self._script(
                    keys=[f"{base}bucket", f"{base}day:", f"{base}window"],
                    args=[
                        spend.rate_per_s,
                        spend.burst,
                        spend.daily_quota,
                        spend.window_searches,
                        spend.window_s,
                        uuid.uuid4().hex,
                    ],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            if self._away_until is None:
                log.warning(
                    "shared allowances unavailable: counting in this process until Redis answers",
                    error=str(exc) or type(exc).__name__,
                )
                ALLOWANCES_SHARED.set(0)
            self._away_until = self._clock() + self._retry_s
            return self.fallback.spend_now(spend)
        if self._away_until is not None:
            self._away_until = None
            ALLOWANCES_SHARED.set(1)
            log.warning("shared allowances back: counting in Redis again")
        name = limit.decode() if isinstance(limit, bytes) else str(limit)
        return None if name == "ok" else Refusal(name, float(wait))
