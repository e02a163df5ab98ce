"""A short run of the benchmark (seconds), so `jetbridge bench` cannot rot: both systems measured side by
side against the test stack, and the JSON, the chart and the summary written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.run import BenchConfig, run_benchmark
from jetbridge.settings import Settings
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

LATENCIES = {"BA": 40, "AA": 50, "VS": 60, "DL": 70, "AY": 80}


async def test_short_benchmark_run_measures_both_systems_and_writes_its_reports(
    stack: Stack, settings: Settings, tmp_path: Path
) -> None:
    stack_settings = stack.settings()
    config = BenchConfig(
        rates=[4.0],
        warmup_s=1.0,
        hold_s=3.0,
        sessions=2,
        airline_latency_ms=LATENCIES,
        baseline_port=18089,
        stack_warmup_s=1.0,
        out_dir=tmp_path,
    )
    lines: list[str] = []
    folder = await run_benchmark(stack_settings, config, lines.append, start_stack=False)

    results = json.loads((folder / "results.json").read_text())
    assert {r["system"] for r in results["runs"]} == {"jetbridge", "baseline"}
    for run in results["runs"]:
        assert run["requests"] == 12, run
        assert run["errors"] == 0, run
        assert run["statuses"] == {"complete": 12}, run
        # Nothing can answer faster than the slowest airline's fixed latency.
        assert run["latency_ms"]["p50"] >= max(LATENCIES.values()), run
        assert run["cpu_s_per_request"]["total"] > 0
    [added] = results["added_latency_ms"]
    by = {r["system"]: r for r in results["runs"]}
    assert added["p50"] == pytest.approx(
        by["jetbridge"]["latency_ms"]["p50"] - by["baseline"]["latency_ms"]["p50"], abs=0.2
    )
    # One search: request, five calls, five responses, reply, audit (the plan is handed over in memory).
    events = results["kafka_events_per_request"]
    assert events["jb.airline-responses.v1"] == pytest.approx(5.0, abs=0.5)
    assert "jb.aggregator-control.v1" not in events
    assert events["total"] == pytest.approx(13.0, abs=0.5)
    assert set(results["peak_rss_mb"]["jetbridge"]) >= {"bridge", "streams", "connectors"}
    assert (folder / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (folder / "summary.md").read_text()
    assert "| 4 |" in summary
    assert "max sustained rate" in summary
    assert (tmp_path / "latest" / "results.json").exists()
    assert any("baseline at 4/s" in line for line in lines)
