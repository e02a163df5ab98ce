"""The cache-hit scenario of `jetbridge bench --cache-mix SHARE`: repeated searches, both systems side by side.

Agents repeat themselves. Here a share of the searches (``--cache-mix 0.8``: 80 %) repeats one of a small pool
of searches (the same route, dates and passengers), the rest are new; both systems get the same sequence at
the same offered rate. Jetbridge answers a repeat within its freshness from the offer cache; the direct
fan-out baseline has no cache and calls every airline every time. Reported per system: searches per second
answered, latency, CPU per search and **airline calls per search** (counted at the simulators, as an airline
would count them).

Then the cost of a hit itself: one search repeated in one session after the cache holds it, against reading
the same cached answers straight from Redis (the five airlines' entries in one round trip): the difference is
what the backbone adds to a cache hit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.measure import ProcessMeter
from bench.report import percentile, write_cache_summary, write_json
from bench.run import (
    BenchConfig,
    Say,
    Writer,
    _baseline_running,
    _configure_simulators,
    _jetbridge_processes,
    _kafka_prefixes,
    _metered,
    _run_one,
    _settle,
    _write,
    with_token,
)
from jetbridge.airlines import load_registry
from jetbridge.offer_cache import OfferCache
from jetbridge.redis_client import open_redis
from jetbridge.runtime import open_codec
from jetbridge.settings import Settings
from jetbridge.topics import TopicNames, declared_topics
from mcp_bridge.agent import open_agent
from schemas.models import Cabin, SearchCriteria

__all__ = ["mixed_arguments", "run_cache_mix"]

# Distinct searches the repeats are drawn from: each is asked again well within the default freshness (60 s).
POOL = 10
HIT_PROBES = 40


def mixed_arguments(share: float, deadline_ms: int, *, pool: int = POOL) -> Callable[[int], dict[str, Any]]:
    """Search ``i`` of a run: one of ``pool`` searches for a ``share`` of them (spread evenly), else a new one."""
    today = datetime.now(UTC).date()
    every = round(share * 100)

    def make(i: int) -> dict[str, Any]:
        repeated = (i * 37) % 100 < every  # evenly spread over the run, the same for both systems
        # New searches differ by date and passengers from the pool and from each other.
        day = i % pool if repeated else pool + i
        return {
            "origin": "LHR",
            "destination": "JFK",
            "departure_date": (today + timedelta(days=7 + day % 300)).isoformat(),
            "adults": 1 if repeated else 1 + (day // 300) % 4,
            "deadline_ms": deadline_ms,
        }

    return make


async def _airline_calls(control_url: str) -> int:
    """Business calls the simulated airlines received so far."""
    async with httpx.AsyncClient(base_url=control_url, timeout=10, trust_env=False) as http:
        airlines = (await http.get("/airlines")).json()
    return sum(int(entry.get("calls", 0)) for entry in airlines.values())


async def _hit_cost(settings: Settings, config: BenchConfig, arguments: dict[str, Any]) -> dict[str, Any]:
    """One search repeated in one session once cached, against the same answers read straight from Redis."""
    async with open_agent(settings.bridge_url, token=config.token) as agent:
        await agent.call_tool("search_offers", arguments)  # fills the cache
        await asyncio.sleep(0.5)
        through: list[float] = []
        sources: dict[str, int] = {}
        for _ in range(HIT_PROBES):
            started = time.perf_counter()
            result = await agent.call_tool("search_offers", arguments)
            through.append((time.perf_counter() - started) * 1000)
            for airline in (result.structured_content or {}).get("airlines", []):
                sources[str(airline.get("source"))] = sources.get(str(airline.get("source")), 0) + 1
    registry = load_registry(settings.airlines_file)
    codes = [a.code for a in registry.serving("LHR", "JFK")]
    criteria = SearchCriteria(
        origin="LHR",
        destination="JFK",
        departure_date=datetime.fromisoformat(arguments["departure_date"]).date(),
        adults=arguments["adults"],
        cabin=Cabin.ECONOMY,
        currency=settings.currency,
    )
    names = TopicNames(settings.topic_prefix)
    specs = declared_topics(registry, settings.topic_partitions, settings.topic_prefix)
    async with httpx.AsyncClient(timeout=10) as http, open_redis(settings.redis_url) as redis:
        codec = await open_codec(settings, specs, http)
        cache = OfferCache(redis, codec, topic=names.responses, prefix=settings.topic_prefix)
        direct: list[float] = []
        found = 0
        for _ in range(HIT_PROBES):
            started = time.perf_counter()
            found = len(await cache.get_many(codes, criteria))
            direct.append((time.perf_counter() - started) * 1000)
    return {
        "probes": HIT_PROBES,
        "through_jetbridge_ms": {"p50": percentile(through, 50), "p99": percentile(through, 99)},
        "direct_redis_ms": {"p50": percentile(direct, 50), "p99": percentile(direct, 99)},
        "added_p50_ms": percentile(through, 50) - percentile(direct, 50),
        "airline_sources": sources,
        "entries_read_directly": found,
    }


async def run_cache_mix(settings: Settings, config: BenchConfig, say: Say, *, start_stack: bool = True) -> Path:
    """Both systems at ``config.cache_mix_rate`` with ``config.cache_mix`` repeated searches; returns the folder."""
    config = with_token(settings, config)
    if start_stack:
        from infra.stack.control import up

        await up(settings, say)
    control_url = f"http://{settings.simulator_host}:{settings.simulator_control_port}"
    baseline_url = f"http://127.0.0.1:{config.baseline_port}/mcp"
    rate, share = config.cache_mix_rate, config.cache_mix
    runs: list[dict[str, Any]] = []
    async with _baseline_running(settings, config.baseline_port, control_url) as baseline_pid:
        await _configure_simulators(control_url, config.airline_latency_ms)
        jetbridge_processes = _jetbridge_processes(settings)
        pids = _metered(settings, jetbridge_processes, baseline_pid)
        meter = ProcessMeter(pids)
        meter.start()
        prefixes = _kafka_prefixes(settings)
        for system, url, own in (
            ("jetbridge", settings.bridge_url, jetbridge_processes),
            ("baseline", baseline_url, ("direct-baseline",)),
        ):
            say(f"bench: {system} at {rate:g}/s, {share:.0%} repeated searches")
            calls_before = await _airline_calls(control_url)
            row = await _run_one(
                settings, prefixes, url, system, rate, config, meter, own, mixed_arguments(share, config.deadline_ms)
            )
            searches = round((config.warmup_s + config.hold_s) * rate)
            row["airline_calls_per_search"] = round((await _airline_calls(control_url) - calls_before) / searches, 3)
            row["answered_per_s"] = round(row["ok"] / config.hold_s, 2)
            runs.append(row)
            say(
                f"       answered {row['answered_per_s']:g}/s, p50 {row['latency_ms']['p50']:.0f} ms, "
                f"airline calls per search {row['airline_calls_per_search']:g}"
            )
        await _settle(meter, tuple(pids))
        await meter.stop()
        say("bench: the cost of a cache hit, through Jetbridge and straight from Redis")
        hit = await _hit_cost(settings, config, mixed_arguments(1.0, config.deadline_ms)(0))
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "scenario": {"repeated_share": share, "pool": POOL, "rate": rate, "hold_s": config.hold_s},
        "runs": runs,
        "cache_hit": hit,
    }
    reports: dict[str, Writer] = {"results.json": write_json, "summary.md": write_cache_summary}
    return _write(config.out_dir, results, reports, latest="latest-cache-mix")
