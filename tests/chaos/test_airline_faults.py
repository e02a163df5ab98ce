"""Airlines are protected from us, on the chaos stack (real processes, broker and simulators), each scenario
bounded in time and printing what it counted:

- an airline answering 500 to everything: once its breaker opens, searches come back as fast as the healthy
  airlines with that airline ``circuit_open``, and calls reaching it drop to the half-open probes;
- an airline answering 429 with ``Retry-After: 2``: no call reaches it for 2 s after each 429;
- an airline slower than the deadline: once its breaker opens (slow calls), searches stop costing the deadline.

Calls are counted at the simulators, statuses read from what the agent got, circuit states from the
connector worker's /health. Every scenario ends with every circuit closed again, so the next finds a healthy
stack. Run alone with `pytest tests/chaos/test_airline_faults.py -s`.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.chaos.conftest import SOON, ChaosStack, Outcome, report

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.kafka]

DEADLINE_MS = 3000
ALL = ("BA", "AA", "VS", "DL", "AY")


@dataclass(frozen=True)
class Search:
    """One agent's search: how long it took and each airline's status."""

    started: float
    elapsed_s: float
    status: str
    airlines: dict[str, tuple[str, str | None]]

    def outcome(self) -> Outcome:
        return Outcome(None, self.status, None, self.elapsed_s, DEADLINE_MS / 1000, self.started)


async def search(chaos: ChaosStack) -> Search:
    # Live offers only (the faults are the point, not the cache that would stand in for them).
    arguments = {
        "origin": "LHR",
        "destination": "JFK",
        "departure_date": SOON,
        "deadline_ms": DEADLINE_MS,
        "fresh": True,
    }
    started = time.monotonic()
    async with chaos.stack.agent() as client:
        called = time.monotonic()
        result = await client.call_tool("search_offers", arguments)
    elapsed = time.monotonic() - called
    assert not result.is_error, result.content
    content = result.structured_content or {}
    statuses = {a["airline"]: (a["status"], a.get("error_code")) for a in content["airlines"]}
    return Search(started, elapsed, content["status"], statuses)


async def searches_while(
    chaos: ChaosStack, rate_per_s: float, keep_going: Callable[[], Awaitable[bool]], limit_s: float
) -> list[Search]:
    """Searches arriving at ``rate_per_s`` (each its own agent) while ``keep_going()`` and for at most ``limit_s``."""
    tasks: list[asyncio.Task[Search]] = []
    stop_at = time.monotonic() + limit_s
    while time.monotonic() < stop_at and await keep_going():
        tasks.append(asyncio.create_task(search(chaos)))
        await asyncio.sleep(1 / rate_per_s)
    return list(await asyncio.gather(*tasks))


async def for_s(seconds: float) -> Callable[[], Awaitable[bool]]:
    stop_at = time.monotonic() + seconds

    async def going() -> bool:
        return time.monotonic() < stop_at

    return going


async def simulator(chaos: ChaosStack, code: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=chaos.stack.control_url, timeout=5, trust_env=False) as http:
        state: dict[str, Any] = (await http.get(f"/airlines/{code}")).json()[code]
        return state


async def circuits(chaos: ChaosStack) -> dict[str, dict[str, Any]]:
    """Each airline's circuit as the connector worker's /health shows it."""
    url = chaos.instances()["connectors-1"]["health_url"]
    async with httpx.AsyncClient(timeout=2, trust_env=False) as http:
        found: dict[str, dict[str, Any]] = (await http.get(url)).json()["circuits"]
        return found


def p50_ms(found: list[Search]) -> int:
    return round(statistics.median(s.elapsed_s for s in found) * 1000) if found else -1


def statuses_of(found: list[Search], code: str) -> Counter[str]:
    return Counter(s.airlines[code][1] or s.airlines[code][0] for s in found if code in s.airlines)


async def healed(chaos: ChaosStack, limit_s: float = 45.0) -> float:
    """Every airline healthy again and every circuit closed (probes succeed once the open interval ends)."""
    await chaos.airlines()
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        outcome = await search(chaos)
        states = {code: c["state"] for code, c in (await circuits(chaos)).items()}
        if outcome.status == "complete" and set(states.values()) == {"closed"}:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise AssertionError(f"circuits not all closed within {limit_s} s: {await circuits(chaos)}")


async def assert_every_search_answered(
    chaos: ChaosStack, marks: dict[str, dict[int, int]], found: list[Search]
) -> None:
    counts = await chaos.counts(marks, [s.outcome() for s in found])
    assert counts.lost == [], f"requests without a reply: {counts.lost}"
    assert counts.duplicated == [], f"requests with more than one reply: {counts.duplicated}"


async def test_a_failing_airline_is_cut_off_by_its_breaker_and_a_throttling_one_is_left_alone_for_its_retry_after(
    chaos: ChaosStack,
) -> None:
    chaos.up("streams=1,connectors=1")
    await healed(chaos)
    marks = await chaos.marks()

    # ---- VS answers 500 to everything ----
    await chaos.airlines(VS={"fault": "http_500"})
    phase_started = time.monotonic()

    async def vs_closed() -> bool:
        return bool((await circuits(chaos))["VS"]["state"] == "closed")

    before = await searches_while(chaos, 3, vs_closed, limit_s=20)
    opened = await circuits(chaos)
    assert opened["VS"]["state"] != "closed", f"VS's breaker did not open in 20 s: {opened['VS']}"
    open_after_s = time.monotonic() - phase_started
    calls_at_open = (await simulator(chaos, "VS"))["calls"]
    after = await searches_while(chaos, 3, await for_s(12), limit_s=12)
    vs = await simulator(chaos, "VS")
    probes = vs["calls"] - calls_at_open
    fast = [s for s in after if s.airlines["VS"][0] == "circuit_open"]
    report(
        f"[faults] VS http_500: breaker open after {len(before)} searches ({open_after_s:.1f} s: "
        f"{opened['VS']['reason']}); VS calls at the simulator: {calls_at_open} until open, {probes} in the "
        f"{len(after)} searches of the next 12 s; search p50 {p50_ms(before)} ms before, {p50_ms(fast)} ms with VS "
        f"circuit_open; VS statuses after: {dict(statuses_of(after, 'VS'))}"
    )
    assert len(fast) >= 0.8 * len(after), "searches while the circuit is open say circuit_open"
    assert all(s.status == "partial" for s in fast), "the four healthy airlines answered"
    assert max(s.elapsed_s for s in fast) < 1.5, "answered with the healthy airlines, not at the 3 s deadline"
    half_open_calls, open_s = 2, 10.0  # connectors/airlines.toml [defaults.breaker]
    assert probes <= half_open_calls * (1 + int(12 / open_s)), f"{probes} calls reached VS while its circuit was open"

    # ---- BA answers 429 with Retry-After: 2 (VS healthy again) ----
    await chaos.airlines(BA={"fault": "throttle", "retry_after_s": 2})
    throttled = await searches_while(chaos, 4, await for_s(10), limit_s=10)
    ba = await simulator(chaos, "BA")
    arrivals = [c["at"] for c in ba["recent_calls"]]
    bursts = [t for i, t in enumerate(arrivals) if i == 0 or t - arrivals[i - 1] > 0.25]
    gaps = [b - a for a, b in itertools.pairwise(bursts)]
    report(
        f"[faults] BA 429 Retry-After 2 s: {len(throttled)} searches in 10 s; BA received {ba['calls']} calls in "
        f"{len(bursts)} bursts, gaps between bursts {min(gaps, default=0):.2f}-{max(gaps, default=0):.2f} s; "
        f"BA statuses: {dict(statuses_of(throttled, 'BA'))}; search p50 {p50_ms(throttled)} ms"
    )
    assert ba["answers"].keys() <= {"throttle"}
    assert len(bursts) >= 3
    assert min(gaps) >= 1.9, f"a call reached BA before its Retry-After was over: gaps {gaps}"
    assert statuses_of(throttled, "BA").keys() <= {"airline_throttled", "circuit_open"}
    assert statuses_of(throttled, "BA")["airline_throttled"] >= 0.8 * len(throttled)
    assert time.monotonic() - phase_started <= 60

    await assert_every_search_answered(chaos, marks, before + after + throttled)
    report(f"[faults] every circuit closed again {await healed(chaos):.1f} s after the faults were cleared")


async def test_an_airline_slower_than_the_deadline_stops_costing_searches_the_deadline_once_its_breaker_opens(
    chaos: ChaosStack,
) -> None:
    chaos.up("streams=1,connectors=1")
    await healed(chaos)
    marks = await chaos.marks()
    await chaos.airlines(DL={"latency_ms": 4000, "jitter_ms": 0})
    started = time.monotonic()

    async def dl_closed() -> bool:
        return bool((await circuits(chaos))["DL"]["state"] == "closed")

    before = await searches_while(chaos, 2, dl_closed, limit_s=25)
    opened = await circuits(chaos)
    assert opened["DL"]["state"] != "closed", f"DL's breaker did not open in 25 s: {opened['DL']}"
    open_after_s = time.monotonic() - started
    calls_at_open = (await simulator(chaos, "DL"))["calls"]
    after = await searches_while(chaos, 2, await for_s(8), limit_s=8)
    calls_after = (await simulator(chaos, "DL"))["calls"] - calls_at_open
    slow = [s for s in before if s.airlines["DL"][0] == "timeout"]
    fast = [s for s in after if s.airlines["DL"][0] == "circuit_open"]
    report(
        f"[faults] DL 4 s (deadline 3 s): breaker open after {len(before)} searches ({open_after_s:.1f} s: "
        f"{opened['DL']['reason']}); search latency p50 {p50_ms(slow)} ms / max "
        f"{max((s.elapsed_s for s in slow), default=0) * 1000:.0f} ms before, p50 {p50_ms(fast)} ms / max "
        f"{max((s.elapsed_s for s in fast), default=0) * 1000:.0f} ms after; DL calls at the simulator in the "
        f"{len(after)} searches after: {calls_after}"
    )
    assert "slow_call_rate" in opened["DL"]["reason"]
    assert slow, "before: DL timed out"
    assert min(s.elapsed_s for s in slow) >= 2.0, "before: each search waited for DL's timeout"
    assert len(fast) >= 0.8 * len(after)
    assert max(s.elapsed_s for s in fast) < 1.5, "after: answered without waiting for DL"
    assert p50_ms(fast) * 3 < p50_ms(slow)
    await assert_every_search_answered(chaos, marks, before + after)
    report(f"[faults] every circuit closed again {await healed(chaos):.1f} s after DL was fast again")
