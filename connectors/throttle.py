"""The Throttler of one airline credential: a token bucket, and the airline's own ``Retry-After`` as a hold.

The bucket is refilled at ``rate_per_s`` and banks at most ``burst`` tokens; every attempt at the airline takes
one. A hold (the airline answered 429 or 503 with ``Retry-After``) gives no token at all until it ends.
Pure (the clock is given): the worker decides whether to wait, start the call, or stop consuming.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from jetbridge.airlines import RateLimit

__all__ = ["TokenBucket"]


class TokenBucket:
    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._tokens = float(limit.burst)
        self._at = clock()
        self.held_until = 0.0

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(float(self.limit.burst), self._tokens + (now - self._at) * self.limit.rate_per_s)
            self._at = now

    @property
    def held(self) -> bool:
        return self._clock() < self.held_until

    def try_take(self) -> bool:
        """Take a token if one is there now."""
        now = self._clock()
        if now < self.held_until:
            return False
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_s(self) -> float:
        """How long until a token can be taken (0 when one is there now)."""
        now = self._clock()
        self._refill(now)
        start = max(now, self.held_until)
        tokens = min(float(self.limit.burst), self._tokens + (start - now) * self.limit.rate_per_s)
        if tokens >= 1.0:
            return start - now
        return start - now + (1.0 - tokens) / self.limit.rate_per_s

    def refund(self) -> None:
        """Give back a token taken for an attempt that was not made."""
        self._refill(self._clock())
        self._tokens = min(float(self.limit.burst), self._tokens + 1.0)

    def hold(self, until: float) -> None:
        """No token before ``until`` (the bucket's clock); a shorter hold never shortens a longer one."""
        self.held_until = max(self.held_until, until)

    def tokens(self) -> float:
        self._refill(self._clock())
        return self._tokens
