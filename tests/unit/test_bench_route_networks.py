"""The 50-airline benchmark fleet: real airlines and routes from OpenFlights, a registry that loads strictly,
route pruning that fans a hub pair out wide and a thin route narrow, and the report of a run."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.report import write_network_summary
from bench.route_networks import (
    FLEET_SIZE,
    MEASURED_ROUTES,
    derive,
    network_fleet,
    real_airlines,
    serving,
    write_network_registry,
)
from bench.run import kafka_log_bytes, network_rows
from bench.synthetic_airlines import ROUTE, synthetic_fleet, write_registry
from connectors.pins import PinBook
from jetbridge.airlines import DEFAULT_REGISTRY, load_registry
from jetbridge.cli import main
from jetbridge.errors import ConfigurationError
from jetbridge.routing import route
from jetbridge.settings import Settings

OPENFLIGHTS = Path(__file__).resolve().parents[3] / "shared" / "data" / "openflights"


@pytest.fixture(scope="module")
def registry_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fleet = network_fleet(latencies_ms=[100, 140])
    return write_network_registry(
        tmp_path_factory.mktemp("net") / "airlines-50.toml", fleet, defaults_from=DEFAULT_REGISTRY
    )


def test_the_fifty_airline_registry_loads_strictly_with_every_airline_on_its_real_routes(registry_file: Path) -> None:
    registry = load_registry(registry_file)
    real = {a.code: a.routes for a in real_airlines()}
    assert len(registry) == FLEET_SIZE == len(real)
    for airline in registry:
        assert airline.routes == real[airline.code]
        assert airline.enabled
    kinds = [a.kind for a in registry]
    # Mostly NDC and REST; the five shipped airlines keep their kinds.
    assert (kinds.count("ndc"), kinds.count("rest"), kinds.count("mcp")) == (20, 20, 10)
    by_code = {a.code: a for a in registry}
    assert (by_code["BA"].kind, by_code["DL"].mapping, by_code["AY"].kind) == ("ndc", "delta", "mcp")


def test_every_mcp_airline_of_the_fleet_is_pinned_at_its_own_endpoint(registry_file: Path) -> None:
    mcp = [a for a in load_registry(registry_file) if a.kind == "mcp"]
    assert len(mcp) == 10
    for airline in mcp:
        assert airline.mcp_pins == registry_file.with_name("airlines-50-mcp-pins.toml")
        pin = PinBook(airline.mcp_pins).get(airline.code)
        assert pin is not None, airline.code
        assert pin.tools, airline.code
        assert pin.endpoint == airline.endpoint


def test_a_hub_pair_fans_out_to_many_airlines_and_a_thin_route_to_few(registry_file: Path) -> None:
    registry = load_registry(registry_file)
    deadline = datetime.now(UTC) + timedelta(seconds=3)

    def asked(origin: str, destination: str) -> set[str]:
        return set(route(registry, origin, destination, None, deadline=deadline).codes)

    hub, flagship, thin = MEASURED_ROUTES
    assert len(asked(*hub)) >= 15
    assert {"BA", "AA", "VS", "DL", "AY"} <= asked(*flagship)
    assert len(asked(*flagship)) == 11
    assert asked(*thin) == {"LH", "AF"}
    # A pair nobody in the fleet flies asks nobody.
    assert asked("LHR", "SYD") == set()
    # The fleet's own view agrees with the router's.
    for pair in MEASURED_ROUTES:
        assert set(serving(real_airlines(), pair)) == asked(*pair)


@pytest.mark.skipif(not OPENFLIGHTS.is_dir(), reason=f"no OpenFlights snapshot at {OPENFLIGHTS}")
def test_the_shipped_fleet_is_what_the_openflights_snapshot_derives(tmp_path: Path) -> None:
    derived = derive(OPENFLIGHTS, tmp_path)
    assert [(a.code, a.name, a.routes) for a in derived] == [(a.code, a.name, a.routes) for a in real_airlines()]
    assert derived[0].name == "American Airlines"
    assert next(a.name for a in derived if a.code == "VY") == "Vueling Airlines"


def _write_snapshot(folder: Path, airlines: list[list[str]], routes: list[list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "airlines.dat").open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(airlines)
    with (folder / "routes.dat").open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(routes)
    return folder


def _airline(code: str, name: str, country: str, active: str = "Y") -> list[str]:
    return ["1", name, "\\N", code, "XXX", "", country, active]


def _route(code: str, origin: str, destination: str, codeshare: str = "", stops: str = "0") -> list[str]:
    return [code, "1", origin, "1", destination, "1", codeshare, stops, "738"]


def test_derive_keeps_non_stop_routes_between_known_airports_and_ranks_by_busy_airports(tmp_path: Path) -> None:
    source = _write_snapshot(
        tmp_path / "of",
        [
            _airline("AA", "American Airlines", "United States"),
            _airline("QQ", "Gone Air", "United States", active="N"),
            _airline("CV", "Cargolux Cargo", "Luxembourg"),
            _airline("VY", "Formosa Airlines", "Taiwan"),
            _airline("VY", "Vueling Airlines", "Spain"),
        ],
        [
            _route("AA", "LHR", "JFK"),
            _route("AA", "JFK", "LHR", codeshare="Y"),  # sold by AA, flown by a partner: kept
            _route("AA", "JFK", "ORD", stops="1"),  # not non-stop: dropped
            _route("AA", "JFK", "QQQ"),  # unknown airport: dropped
            _route("QQ", "LHR", "JFK"),  # inactive airline: dropped
            _route("CV", "LHR", "JFK"),  # cargo: dropped
            _route("VY", "BCN", "MAD"),
            _route("VY", "MAD", "BCN"),
        ],
    )
    fleet = derive(source, tmp_path / "out", size=2)
    assert [(a.code, a.name) for a in fleet] == [("AA", "American Airlines"), ("VY", "Vueling Airlines")]
    assert fleet[0].routes == {("LHR", "JFK"), ("JFK", "LHR")}
    shipped = real_airlines(tmp_path / "out")
    assert [(a.code, a.routes) for a in shipped] == [(a.code, a.routes) for a in fleet]
    with pytest.raises(ConfigurationError, match="2 airlines with routes, not 3"):
        derive(source, tmp_path / "out3", size=3)


def test_derive_from_a_folder_without_openflights_data_says_which(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not readable"):
        derive(tmp_path / "missing", tmp_path / "out")


def test_a_missing_fleet_says_how_to_derive_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"python -m bench\.route_networks"):
        real_airlines(tmp_path)


@pytest.mark.parametrize("count", [0, FLEET_SIZE + 1])
def test_a_fleet_size_outside_the_shipped_one_is_refused(count: int) -> None:
    with pytest.raises(ConfigurationError, match=f"between 1 and {FLEET_SIZE}"):
        network_fleet(latencies_ms=[100], count=count)


def test_a_fleet_without_latencies_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least one latency"):
        network_fleet(latencies_ms=[])


def test_the_synthetic_fleet_still_flies_only_the_benchmark_route(tmp_path: Path) -> None:
    fleet = synthetic_fleet(3, taken={"BA", "AA", "VS", "DL", "AY"}, latencies_ms=[100])
    registry = load_registry(write_registry(tmp_path / "synthetic.toml", fleet, defaults_from=DEFAULT_REGISTRY))
    assert {a.routes for a in registry} == {frozenset({ROUTE})}
    assert "synthetic airlines, all flying LHR-JFK" in (tmp_path / "synthetic.toml").read_text()


def _run(system: str, name: str, codes: list[str], calls: float, p50: float) -> dict[str, Any]:
    events = {"jb.airline.BA.calls.v1": calls, "jb.airline-responses.v1": calls, "jb.requests.v1": 1.0}
    return {
        "system": system,
        "route": name,
        "airlines_serving": codes,
        "requests": 200,
        "errors": 1,
        "error_rate": 0.005,
        "latency_ms": {"p50": p50, "p95": p50 * 2, "p99": p50 * 3},
        "cpu_s_per_request": {"bridge": 0.004, "streams": 0.006, "connectors": 0.012, "total": 0.022}
        if system == "jetbridge"
        else {"direct-baseline": 0.009, "total": 0.009},
        "airlines_per_reply": {str(len(codes)): 199},
        "airline_statuses": {"ok": 199 * len(codes)},
        "kafka_events_per_request": events if system == "jetbridge" else {"total": 0.0},
        "kafka_bytes_per_request": {"jb.airline.BA.calls.v1": 400.0 * calls, "jb.requests.v1": 600.0}
        if system == "jetbridge"
        else {"total": 0.0},
    }


def test_the_report_renders_airlines_asked_per_route_and_cost_by_process(tmp_path: Path) -> None:
    hub = ["AA", "UA", "DL", "LH", "AF", "KL", "BA", "VS", "AY", "IB", "AZ", "NH", "JL", "CX", "OZ", "MH"]
    runs = [
        _run("jetbridge", "ORD-ATL", hub, 16.0, 310.0),
        _run("baseline", "ORD-ATL", hub, 0.0, 250.0),
        _run("jetbridge", "CDG-FRA", ["LH", "AF"], 2.0, 180.0),
        _run("baseline", "CDG-FRA", ["LH", "AF"], 0.0, 150.0),
    ]
    for run in runs:
        for key in ("kafka_events_per_request", "kafka_bytes_per_request"):
            run[key]["total"] = sum(v for k, v in run[key].items() if k != "total")
    results: dict[str, Any] = {
        "date": "2026-11-26T06:20:00+00:00",
        "machine": {"cpus": 2, "memory_gb": 7.8, "platform": "Linux", "python": "3.11.9"},
        "config": {"sessions": 8, "deadline_ms": 3000, "warmup_s": 5.0, "hold_s": 20.0},
        "rate": 10.0,
        "registry_airlines": 50,
        "registry_routes": 35749,
        "kinds": {"mcp": 10, "ndc": 20, "rest": 20},
        "airlines": [{"latency_ms": 100}, {"latency_ms": 140}],
        "by_route": network_rows(runs, 50),
        "peak_rss_mb": {
            "jetbridge": {"bridge": 120.0, "streams": 150.0, "connectors": 200.0},
            "baseline": {"direct-baseline": 90.0},
            "shared": {"simulators": 300.0, "load-generator": 80.0},
        },
    }
    assert results["by_route"][0]["jetbridge"]["calls"] == 16.0
    assert results["by_route"][0]["baseline"]["airlines_per_reply"] == 16.0
    path = tmp_path / "summary.md"
    write_network_summary(path, results)
    text = path.read_text()
    assert "# Jetbridge benchmark: 50 airlines with real route networks" in text
    assert "35749 routes in all, connector kinds 10 mcp, 20 ndc, 20 rest" in text
    assert "| ORD-ATL | 50 | 16 | 16.00 | 16.00 | 16.00 | 32% |" in text
    assert "| CDG-FRA | 50 | 2 | 2.00 | 2.00 | 2.00 | 4% |" in text
    assert "| ORD-ATL | 310 / 620 / 930 | 250 / 500 / 750 | 22.0 | 9.0 | 33.00 | 7000 | 0.50 % (1 of 200) |" in text
    assert "- CDG-FRA: calls topics 2.00 events, 800 B; jb.airline-responses.v1 2.00 events, - B; " in text
    assert "| route | bridge | streams | connectors | total |" in text
    assert "| CDG-FRA | 4.0 | 6.0 | 12.0 | 22.0 |" in text
    assert "- CDG-FRA: LH, AF" in text


def test_airlines_50_is_refused_alongside_another_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--airlines-50", "--airline-counts", "5"])
    assert exit_.value.code == 2
    assert "--airlines-50 is a scenario of its own" in capsys.readouterr().err


def test_kafka_log_bytes_sums_the_segments_of_each_topic_and_nothing_else(tmp_path: Path) -> None:
    data = tmp_path / "kafka" / "data"
    for partition, size in (("jb.requests.v1-0", 300), ("jb.requests.v1-1", 200), ("jb.airline.BA.calls.v1-0", 50)):
        (data / partition).mkdir(parents=True)
        (data / partition / "00000000000000000000.log").write_bytes(b"x" * size)
        (data / partition / "00000000000000000000.index").write_bytes(b"\0" * 4096)  # preallocated: not data
    (data / "__consumer_offsets-0").mkdir()
    (data / "__consumer_offsets-0" / "00000000000000000000.log").write_bytes(b"x" * 999)
    (tmp_path / "kafka" / "server.properties").write_text(f"node.id=1\nlog.dirs={data}\n", encoding="utf-8")
    settings = Settings(JB_HOME=tmp_path)
    # Kafka elsewhere (no local broker): nothing measured, rather than a stale figure.
    assert kafka_log_bytes(settings, ("jb.",)) == {}
    settings.run_dir.mkdir(parents=True)
    (settings.run_dir / "kafka.pid").write_text("4242\n")
    assert kafka_log_bytes(settings, ("jb.",)) == {"jb.requests.v1": 500, "jb.airline.BA.calls.v1": 50}
