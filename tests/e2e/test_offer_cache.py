"""The offer cache through the whole stack, as agents see it and as airlines count it (issue 10).

A repeated search within its freshness makes no airline call, every airline's part says ``source: cache``
with its age; 20 identical searches at once make one call per airline; ``fresh=true`` calls them all again.
Calls are counted at the simulators, as the airlines would count them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack, error_text

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

AIRLINES = 5  # LHR-JFK in the shipped registry


def cached_search(days: int, **overrides: Any) -> dict[str, Any]:
    """A search of its own (a date no other test asks for), the cache left to decide."""
    departure = (datetime.now(UTC).date() + timedelta(days=days)).isoformat()
    return {"origin": "LHR", "destination": "JFK", "departure_date": departure, "adults": 1} | overrides


async def calls_by_airline(simulators: httpx.AsyncClient) -> dict[str, int]:
    return {code: int(a["calls"]) for code, a in (await simulators.get("/airlines")).json().items()}


async def airline_calls(simulators: httpx.AsyncClient) -> int:
    return sum((await calls_by_airline(simulators)).values())


async def search(stack: Stack, arguments: dict[str, Any]) -> dict[str, Any]:
    async with stack.agent() as agent:
        result = await agent.call_tool("search_offers", arguments)
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    return dict(result.structured_content)


async def test_a_repeated_search_makes_no_airline_call_and_says_where_its_offers_came_from(
    stack: Stack, simulators: httpx.AsyncClient
) -> None:
    arguments = cached_search(33)
    before = await airline_calls(simulators)
    first = await search(stack, arguments)
    after_first = await airline_calls(simulators)
    await asyncio.sleep(0.3)
    again = await search(stack, arguments)
    after_again = await airline_calls(simulators)
    live = await search(stack, arguments | {"fresh": True})
    after_live = await airline_calls(simulators)

    assert after_first - before == AIRLINES
    assert {a["source"] for a in first["airlines"]} == {"live"}
    assert after_again == after_first, "the repeat was answered from the cache"
    assert again["status"] == "complete"
    assert {a["source"] for a in again["airlines"]} == {"cache"}
    assert all(a["age_ms"] >= 300 for a in again["airlines"])
    assert {o["offer_id"] for o in again["offers"]} == {o["offer_id"] for o in first["offers"]}
    assert after_live - after_again == AIRLINES, "fresh=true calls every airline"
    assert {a["source"] for a in live["airlines"]} == {"live"}


async def test_twenty_identical_searches_at_once_make_one_call_per_airline(
    stack: Stack, simulators: httpx.AsyncClient
) -> None:
    arguments = cached_search(34, adults=2)
    before = await calls_by_airline(simulators)
    results = await asyncio.gather(*(search(stack, arguments) for _ in range(20)))
    after = await calls_by_airline(simulators)
    calls = {code: after[code] - before[code] for code in after}
    sources = [a["source"] for r in results for a in r["airlines"]]
    print(f"20 identical searches at once: airline calls {calls}; sources { ({s: sources.count(s) for s in sources}) }")
    assert sum(calls.values()) == AIRLINES, calls
    assert all(r["status"] == "complete" for r in results)
    assert sources.count("live") == AIRLINES
