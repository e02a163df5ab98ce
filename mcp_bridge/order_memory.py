"""What the order tools remember between calls: each client's latest price of an offer, and what it spent today.

``create_order`` books at the total the person confirms, and that total is the one ``price_offer`` last gave the
client for the offer (a quote): the confirmation is shown without calling the airline, and a declined one calls
nothing. The spend cap counts the totals booked per client and UTC day. Both live in Redis, shared by every bridge
instance (an agent's next call may reach another one); while Redis does not answer within ``timeout_s``, in this
process (a quote priced on another instance is then "not priced": price again), back to Redis within ``retry_s``
of it answering. Neither is the only copy of anything: a quote is re-made by pricing again, and the orders
themselves are on ``jb.orders.v1``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from pydantic import AwareDatetime, BaseModel, ConfigDict
from redis.asyncio import Redis
from redis.exceptions import RedisError

from jetbridge.log import get_logger

__all__ = ["OrderMemory", "Quote"]

log = get_logger(__name__)

# Quotes kept in this process while Redis is away (the latest ones).
_LOCAL_QUOTES = 10_000

# Spend the amount unless it takes the day's total past the cap (0: no cap). Amounts in cents. Returns the total
# after spending, or -1 when refused (with the total as it stands as the second value).
_RESERVE = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
if cap > 0 and spent + amount > cap then
  return {-1, spent}
end
local total = redis.call('INCRBY', KEYS[1], amount)
redis.call('EXPIRE', KEYS[1], 172800)
return {total, total}
"""


class Quote(BaseModel):
    """The airline's live price of an offer, as given to one client (no personal data)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    offer_id: str  # Jetbridge's offer id, <IATA>:<the airline's offer id>
    airline: str
    total_amount: Decimal
    currency: str
    expires_at: AwareDatetime
    passenger_count: int
    documents_required: bool
    flights: list[str]


class OrderMemory:
    def __init__(
        self,
        redis: Redis | None,
        *,
        prefix: str = "",
        timeout_s: float = 0.25,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._reserve = redis.register_script(_RESERVE) if redis is not None else None
        self._prefix = f"jb:{prefix}orders:"
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self._clock = clock
        self._away_until: float | None = None
        self._quotes: OrderedDict[str, Quote] = OrderedDict()
        self._spent: dict[str, int] = {}

    @property
    def shared(self) -> bool:
        return self._redis is not None and self._away_until is None

    def _use_redis(self) -> Redis | None:
        if self._redis is None:
            return None
        if self._away_until is not None and self._clock() < self._away_until:
            return None
        return self._redis

    def _away(self, exc: BaseException) -> None:
        if self._away_until is None:
            log.warning(
                "order memory unavailable: quotes and spend kept in this process until Redis answers",
                error=str(exc) or type(exc).__name__,
            )
        self._away_until = self._clock() + self._retry_s

    def _back(self) -> None:
        if self._away_until is not None:
            self._away_until = None
            log.warning("order memory back in Redis")

    # ---- quotes ----
    async def put_quote(self, client_id: str, quote: Quote) -> None:
        key = f"{self._prefix}quote:{{{client_id}}}:{quote.offer_id}"
        self._quotes[key] = quote
        self._quotes.move_to_end(key)
        while len(self._quotes) > _LOCAL_QUOTES:
            self._quotes.popitem(last=False)
        redis = self._use_redis()
        if redis is None:
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                await redis.set(key, quote.model_dump_json().encode(), pxat=int(quote.expires_at.timestamp() * 1000))
        except (RedisError, OSError, TimeoutError) as exc:
            self._away(exc)
            return
        self._back()

    async def quote(self, client_id: str, offer_id: str) -> Quote | None:
        """The client's latest live price of the offer, while the offer has not expired."""
        key = f"{self._prefix}quote:{{{client_id}}}:{offer_id}"
        found: Quote | None = None
        redis = self._use_redis()
        if redis is not None:
            try:
                async with asyncio.timeout(self._timeout_s):
                    raw = await redis.get(key)
            except (RedisError, OSError, TimeoutError) as exc:
                self._away(exc)
                found = self._quotes.get(key)
            else:
                self._back()
                found = Quote.model_validate_json(raw) if raw is not None else None
        else:
            found = self._quotes.get(key)
        if found is not None and found.expires_at <= datetime.now(UTC):
            return None
        return found

    # ---- spend ----
    @staticmethod
    def _day() -> str:
        return datetime.now(UTC).strftime("%Y%m%d")

    async def reserve(self, client_id: str, amount: Decimal, cap: Decimal) -> tuple[bool, Decimal]:
        """Spend ``amount`` of the client's day unless it passes ``cap`` (0: none): (spent, the day's total)."""
        cents, cap_cents = _cents(amount), _cents(cap)
        key = f"{self._prefix}spend:{{{client_id}}}:{self._day()}"
        redis = self._use_redis()
        if redis is not None and self._reserve is not None:
            try:
                async with asyncio.timeout(self._timeout_s):
                    total, standing = await self._reserve(keys=[key], args=[cents, cap_cents])
            except (RedisError, OSError, TimeoutError) as exc:
                self._away(exc)
            else:
                self._back()
                return int(total) >= 0, Decimal(int(standing)) / 100
        spent = self._spent.get(key, 0)
        if cap_cents > 0 and spent + cents > cap_cents:
            return False, Decimal(spent) / 100
        self._spent[key] = spent + cents
        return True, Decimal(spent + cents) / 100

    async def spent(self, client_id: str) -> Decimal:
        key = f"{self._prefix}spend:{{{client_id}}}:{self._day()}"
        redis = self._use_redis()
        if redis is not None:
            try:
                async with asyncio.timeout(self._timeout_s):
                    raw = await redis.get(key)
            except (RedisError, OSError, TimeoutError) as exc:
                self._away(exc)
            else:
                self._back()
                return Decimal(int(raw or 0)) / 100
        return Decimal(self._spent.get(key, 0)) / 100

    async def release(self, client_id: str, amount: Decimal) -> None:
        """Give back a reservation whose order was certainly not made."""
        cents = _cents(amount)
        key = f"{self._prefix}spend:{{{client_id}}}:{self._day()}"
        redis = self._use_redis()
        if redis is not None:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await redis.decrby(key, cents)
            except (RedisError, OSError, TimeoutError) as exc:
                self._away(exc)
            else:
                self._back()
                return
        self._spent[key] = max(0, self._spent.get(key, 0) - cents)


def _cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())
