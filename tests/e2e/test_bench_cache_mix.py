"""A short run of the cache-hit scenario (`jetbridge bench --cache-mix`), so it cannot rot: both systems
measured side by side on repeated searches, airline calls counted at the simulators, and the cost of a hit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cache_mix import run_cache_mix
from bench.run import BenchConfig
from jetbridge.settings import Settings
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


async def test_short_cache_mix_run_counts_fewer_airline_calls_for_jetbridge_and_reports_a_hit(
    stack: Stack, settings: Settings, tmp_path: Path
) -> None:
    stack_settings = stack.settings()
    config = BenchConfig(
        warmup_s=1.0, hold_s=4.0, sessions=2, baseline_port=18088, cache_mix=0.8, cache_mix_rate=5.0, out_dir=tmp_path
    )
    lines: list[str] = []
    folder = await run_cache_mix(stack_settings, config, lines.append, start_stack=False)

    results = json.loads((folder / "results.json").read_text())
    by = {r["system"]: r for r in results["runs"]}
    assert set(by) == {"jetbridge", "baseline"}
    assert by["baseline"]["airline_calls_per_search"] == pytest.approx(5.0)
    assert by["jetbridge"]["airline_calls_per_search"] < by["baseline"]["airline_calls_per_search"]
    assert all(r["errors"] == 0 for r in by.values())
    hit = results["cache_hit"]
    assert hit["airline_sources"] == {"cache": 5 * hit["probes"]}
    assert hit["entries_read_directly"] == 5
    assert hit["through_jetbridge_ms"]["p50"] > hit["direct_redis_ms"]["p50"] > 0
    assert "airline calls per search" in (folder / "summary.md").read_text()
    assert (tmp_path / "latest-cache-mix" / "results.json").exists()
