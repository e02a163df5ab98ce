"""Clients' allowances shared by bridge instances through a real Redis (`mcp_bridge.allowances.SharedLedger`).

Two `TrafficControl`s stand for two bridge processes: what one lets through counts for the other, for the
rate (burst), the daily quota and the look-to-book window alike. Redis not answering (paused) makes each
count in its own process, with a warning once, and Redis answering again makes them share again, with no
restart.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from jetbridge.airlines import load_registry
from jetbridge.errors import ClientRateLimited, OverLimit, QuotaExceeded
from jetbridge.redis_client import open_redis
from jetbridge.settings import Settings
from mcp_bridge.allowances import SharedLedger
from mcp_bridge.entitlements import ClientRegistry, Entitlement, TrafficControl

pytestmark = pytest.mark.kafka  # needs the test session's infrastructure (Redis)

AIRLINES = load_registry()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    async with open_redis(settings.redis_url, timeout_s=1.0) as client:
        yield client


def bridges(redis: Redis, allowance: Entitlement, *, n: int = 2, retry_s: float = 5.0) -> list[TrafficControl]:
    """``n`` bridges' traffic control over one Redis, under a prefix of their own (a stack of their own)."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    clients = ClientRegistry(Entitlement(), {"agent": allowance})
    return [
        TrafficControl(
            clients,
            AIRLINES,
            max_in_flight=100,
            process_default_deadline_ms=3000,
            ledger=SharedLedger(redis, prefix=prefix, retry_s=retry_s),
        )
        for _ in range(n)
    ]


async def admitted(traffic: TrafficControl) -> OverLimit | None:
    """None when the search was let through, else the refusal."""
    try:
        with await traffic.admit("agent"):
            return None
    except OverLimit as exc:
        return exc


async def test_two_bridges_share_one_burst_and_the_refusal_says_when_to_come_back(redis: Redis) -> None:
    first, second = bridges(redis, Entitlement(rate_per_s=0.01, burst=3))
    outcomes = [await admitted(b) for b in (first, second, first, second, first)]
    assert outcomes[:3] == [None, None, None]
    refused = [o for o in outcomes[3:] if o is not None]
    assert len(refused) == 2
    assert all(isinstance(o, ClientRateLimited) and o.retry_after_s >= 90 for o in refused)  # 1 token / 100 s
    assert "burst 3" in refused[0].message


async def test_two_bridges_share_the_daily_quota_and_the_look_to_book_window(redis: Redis) -> None:
    first, second = bridges(redis, Entitlement(rate_per_s=100, burst=100, daily_quota=2))
    assert [await admitted(b) for b in (first, second)] == [None, None]
    over = await admitted(first)
    assert isinstance(over, QuotaExceeded)
    assert "daily quota of 2" in over.message

    first, second = bridges(redis, Entitlement(rate_per_s=100, burst=100, look_to_book_searches=1))
    assert await admitted(second) is None
    window = await admitted(first)
    assert isinstance(window, QuotaExceeded)
    assert "look-to-book" in window.message


async def test_a_refused_search_spends_nothing_on_either_bridge(redis: Redis) -> None:
    first, second = bridges(redis, Entitlement(rate_per_s=100, burst=100, daily_quota=1))
    assert await admitted(first) is None
    for _ in range(3):
        assert isinstance(await admitted(second), QuotaExceeded)
    keys = [k async for k in redis.scan_iter(match="jb:*allowance:{agent}:*")]
    assert keys, "the counts are in Redis"


async def test_redis_not_answering_counts_in_each_process_then_shares_again_without_restart(
    redis: Redis, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = bridges(redis, Entitlement(rate_per_s=0.01, burst=1), retry_s=0.5)
    ledger = first.ledger
    assert isinstance(ledger, SharedLedger)
    async with open_redis(settings.redis_url) as admin:
        await admin.client_pause(1500, all=True)
        # Each bridge now counts its own: the burst of one, once per process.
        assert [await admitted(b) for b in (first, second)] == [None, None]
        assert not ledger.shared
        assert isinstance(await admitted(first), ClientRateLimited)
        await asyncio.sleep(2.0)  # the pause is over, and the retry period
    assert await admitted(first) is None  # the shared bucket: untouched while Redis was away
    assert ledger.shared
    assert isinstance(await admitted(second), ClientRateLimited)  # shared again: that was the one token
    logged = capsys.readouterr().out
    assert logged.count("shared allowances unavailable") == 2  # once per bridge, not once per search
    assert logged.count("shared allowances back") == 2
