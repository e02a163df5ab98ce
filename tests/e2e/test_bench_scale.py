"""Short runs of `jetbridge bench --airline-counts` and `--airlines-50` (seconds of load), so neither mode can rot.

A stack of its own (home, ports and topic prefix) runs the usual five airlines. Each run restarts it with
another registry (synthetic airlines, 2 and then 3 per search; then 50 real airlines with their route
networks, searched on three busy routes), measures both systems, writes its reports, and brings the stack
back with its own registry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench.route_networks import MEASURED_ROUTES, network_fleet, serving
from bench.run import BenchConfig, run_airline_counts, run_network
from infra.stack.backends import Infra
from jetbridge.airlines import load_registry
from jetbridge.settings import Settings
from tests.conftest import PORT_SHIFT
from tests.e2e.conftest import Stack, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

# Ports and topics apart from the end-to-end and chaos stacks, so this one can run beside them.
PREFIX = "scale."
BRIDGE_PORT = 18180 + PORT_SHIFT
BASELINE_PORT = 18189 + PORT_SHIFT
SIM_CONTROL_PORT = 19180 + PORT_SHIFT
HEALTH_PORT_BASE = 18600 + PORT_SHIFT
AIRLINE_PORT_SHIFT = 10400 + PORT_SHIFT  # 9201 -> 19601

COUNTS = (2, 3)
LATENCIES = [40, 60]  # taken in turn: 40, 60, 40 ms
RATE = 4.0
MEASURED = 8  # RATE x hold_s
SYSTEMS = ("jetbridge", "baseline")


@pytest.fixture(scope="module")
def scale_stack(infra: Infra, test_home: Path) -> Iterator[Stack]:
    with running_stack(
        infra,
        test_home / "bench-scale",
        bridge_port=BRIDGE_PORT,
        control_port=SIM_CONTROL_PORT,
        health_port_base=HEALTH_PORT_BASE,
        airline_port_shift=AIRLINE_PORT_SHIFT,
        JB_TOPIC_PREFIX=PREFIX,
    ) as started:
        yield started


def _supervisor_env(stack: Stack) -> dict[str, str]:
    pid = int((stack.home / "run" / "supervisor.pid").read_text().strip())
    return dict(psutil.Process(pid).environ())


def own_settings(stack: Stack) -> Settings:
    return stack.settings(JB_AIRLINES_FILE=stack.env["JB_AIRLINES_FILE"])


def short_run(out_dir: Path, **mode: Any) -> BenchConfig:
    """Seconds of load per measurement: enough to check the mode, not to measure it."""
    return BenchConfig(
        warmup_s=1.0,
        hold_s=2.0,
        sessions=2,
        baseline_port=BASELINE_PORT,
        stack_warmup_s=1.0,
        out_dir=out_dir,
        synthetic_latency_ms=LATENCIES,
        **mode,
    )


def assert_restored(stack: Stack, lines: list[str]) -> None:
    """The stack runs again as before: its own registry, every instance healthy."""
    assert any("stack restored" in line for line in lines), lines
    assert _supervisor_env(stack)["JB_AIRLINES_FILE"] == stack.env["JB_AIRLINES_FILE"]
    status = stack.jetbridge("status")
    assert status.returncode == 0, status.stdout


async def test_airline_count_run_measures_both_systems_per_count_and_brings_the_stack_back(
    scale_stack: Stack, settings: Settings, tmp_path: Path
) -> None:
    lines: list[str] = []
    config = short_run(tmp_path, airline_counts=[3, 2], airline_counts_rate=RATE)
    folder = await run_airline_counts(own_settings(scale_stack), config, lines.append)
    print("\n".join(lines))

    results = json.loads((folder / "results.json").read_text())
    assert [a["kind"] for a in results["airlines"]] == ["ndc", "rest", "mcp"]
    codes = [a["code"] for a in results["airlines"]]
    assert not set(codes) & {"BA", "AA", "VS", "DL", "AY"}
    runs = {(r["system"], r["airline_count"]): r for r in results["runs"]}
    assert set(runs) == {(system, n) for system in SYSTEMS for n in COUNTS}
    for (_, n), run in runs.items():
        assert run["requests"] == MEASURED, run
        assert run["errors"] == 0, run
        assert run["statuses"] == {"complete": MEASURED}, run
        # Every search was answered with exactly the N airlines it asked for, each of them ok.
        assert run["airlines_per_reply"] == {str(n): MEASURED}, run
        assert run["airline_statuses"] == {"ok": n * MEASURED}, run
        assert run["latency_ms"]["p50"] >= max(LATENCIES), run
        assert run["cpu_s_per_request"]["total"] > 0, run

    # Jetbridge: one call and one response per airline asked, on its prefixed topics; the baseline: none.
    by_count = {row["airlines"]: row for row in results["by_count"]}
    for n in COUNTS:
        jb = by_count[n]["jetbridge"]
        assert jb["calls"] == pytest.approx(n, abs=0.01), jb
        assert jb["responses"] == pytest.approx(n, abs=0.01), jb
        assert by_count[n]["baseline"]["kafka_events_per_search"] == 0
        assert set(by_count[n]["added_latency_ms"]) == {"p50", "p95", "p99"}
    events = runs[("jetbridge", 3)]["kafka_events_per_request"]
    assert all(topic.startswith(PREFIX) for topic in events if topic != "total"), events
    growth = by_count[3]["jetbridge"]["kafka_events_per_search"] - by_count[2]["jetbridge"]["kafka_events_per_search"]
    assert growth == pytest.approx(2.0, abs=0.2)
    assert results["growth"]["kafka_events_per_added_airline"] == pytest.approx(2.0, abs=0.2)

    assert (folder / "airline-counts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (folder / "summary.md").read_text()
    assert "| 2 |" in summary
    assert "| 3 |" in summary
    assert "Each added airline per search" in summary
    assert load_registry(folder / "airlines.toml").codes() == codes
    assert (tmp_path / "latest-airline-counts" / "results.json").exists()
    assert any("restarting it with the synthetic registry" in line for line in lines), lines
    assert any("3 airlines, baseline at 4/s" in line for line in lines), lines

    assert_restored(scale_stack, lines)


async def test_the_50_airline_run_asks_only_the_airlines_that_fly_each_route_and_brings_the_stack_back(
    scale_stack: Stack, settings: Settings, tmp_path: Path
) -> None:
    lines: list[str] = []
    folder = await run_network(own_settings(scale_stack), short_run(tmp_path, rates=[RATE]), lines.append)
    print("\n".join(lines))

    results = json.loads((folder / "results.json").read_text())
    fleet = network_fleet(latencies_ms=LATENCIES)
    assert results["registry_airlines"] == len(fleet) == 50
    assert [a["code"] for a in results["airlines"]] == [a.code for a in fleet]
    assert set(results["kinds"]) == {"ndc", "rest", "mcp"}
    rows = {row["route"]: row for row in results["by_route"]}
    assert list(rows) == ["-".join(route) for route in MEASURED_ROUTES]
    for route in MEASURED_ROUTES:
        row = rows["-".join(route)]
        flying = serving(fleet, route)
        assert row["airlines_serving_codes"] == flying
        assert 1 < len(flying) < 50, "a busy route, but not every airline flies it"
        jb, base = row["jetbridge"], row["baseline"]
        for figures in (jb, base):
            assert figures["requests"] == MEASURED, figures
            assert figures["errors"] == 0, figures
            # Route pruning: each reply carries exactly the airlines that fly the route, each of them ok.
            assert figures["airlines_per_reply"] == len(flying), figures
            assert figures["airline_statuses"] == {"ok": len(flying) * MEASURED}, figures
        # Jetbridge called those airlines and no other: one call and one response per airline that flies it.
        assert jb["calls"] == pytest.approx(len(flying), abs=0.01), jb
        assert jb["responses"] == pytest.approx(len(flying), abs=0.01), jb
        assert base["kafka_events_per_search"] == 0

    summary = (folder / "summary.md").read_text()
    assert "## Airlines asked per search" in summary
    for route in MEASURED_ROUTES:
        assert f"| {'-'.join(route)} | 50 | {len(serving(fleet, route))} |" in summary
    assert load_registry(folder / "airlines.toml").codes() == [a.code for a in fleet]
    assert (tmp_path / "latest-airlines-50" / "results.json").exists()

    assert_restored(scale_stack, lines)
