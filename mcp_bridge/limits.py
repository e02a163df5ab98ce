"""The three limits an allowance is spent against, counted in memory: a token bucket (rate, burst), a daily
quota and a trailing window of searches (look-to-book). `mcp_bridge.allowances` keeps them per allowance,
here or (the same rules, in a Lua script) in Redis."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["DAY_S", "DailyQuota", "SearchWindow", "TokenBucket"]

DAY_S = 86_400


@dataclass(slots=True)
class TokenBucket:
    """The Throttler: ``rate_per_s`` tokens a second, at most ``burst`` held; a search takes one."""

    rate_per_s: float
    burst: int
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate_per_s: float, burst: int, now: float) -> TokenBucket:
        return cls(rate_per_s, burst, float(burst), now)

    def wait_s(self, now: float) -> float:
        """0 when a token is there, else how long until one is."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate_per_s

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)  # a wall clock set back never drains the bucket
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate_per_s)
        self.updated = now


@dataclass(slots=True)
class DailyQuota:
    """Searches per UTC day (``limit`` 0: no quota); the count starts again at midnight UTC."""

    limit: int
    day: int = -1
    used: int = 0

    def wait_s(self, now: float) -> float:
        self._roll(now)
        if self.limit == 0 or self.used < self.limit:
            return 0.0
        return DAY_S - now % DAY_S

    def take(self, now: float) -> None:
        self._roll(now)
        self.used += 1

    def _roll(self, now: float) -> None:
        day = int(now // DAY_S)
        if day != self.day:
            self.day, self.used = day, 0


@dataclass(slots=True)
class SearchWindow:
    """The look-to-book budget's searches side: at most ``limit`` searches without a booking in the trailing
    ``window_s`` (``limit`` 0: no budget). A booking will start the count again (`booked`)."""

    limit: int
    window_s: float
    times: deque[float] = field(default_factory=deque)

    def wait_s(self, now: float) -> float:
        self._prune(now)
        if self.limit == 0 or len(self.times) < self.limit:
            return 0.0
        return self.times[0] + self.window_s - now

    def take(self, now: float) -> None:
        if self.limit:
            self.times.append(now)

    def booked(self) -> None:
        self.times.clear()

    def _prune(self, now: float) -> None:
        while self.times and self.times[0] <= now - self.window_s:
            self.times.popleft()
