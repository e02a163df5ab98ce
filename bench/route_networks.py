"""Fifty real airlines with their real route networks, simulated: ``jetbridge bench --airlines-50``.

The fleet is derived from OpenFlights (ODbL, as ``jetbridge/data``) by ``derive`` and shipped in
``bench/data/``: the 50 airlines with the most non-stop routes through the 50 busiest airports, each with
every non-stop route it sells. Busiest means most non-stop routes in OpenFlights; codeshares are kept
because a shopping API answers with the flights an airline sells, its partners' included; airports must be
in the reference data (``jetbridge/data/airports.csv``) or the registry would refuse them.

    python -m bench.route_networks ../shared/data/openflights bench/data

The registry (``write_network_registry``) lists each airline with ``routes = "none"`` and its routes as
``extra_routes``, so the router's route pruning, the baseline and the simulators all read the same network:
a search on a hub pair fans out to many airlines, one on a thin route to one or two. Connector kinds: the
five airlines the project ships keep theirs; the others take NDC, REST, NDC, REST, MCP in turn (an MCP
airline costs the connectors most), REST alternating between the simulators' two dialects.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from bench.synthetic_airlines import free_ports, write_registry
from jetbridge.errors import ConfigurationError
from jetbridge.reference import airports

__all__ = [
    "DATA_DIR",
    "FLEET_SIZE",
    "MEASURED_ROUTES",
    "NetworkAirline",
    "RealAirline",
    "derive",
    "kinds_count",
    "network_fleet",
    "real_airlines",
    "serving",
    "write_network_registry",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
FLEET_SIZE = 50
BUSIEST_AIRPORTS = 50
# The routes the benchmark measures: the fleet's busiest pair, the transatlantic flagship, a thin one.
MEASURED_ROUTES: tuple[tuple[str, str], ...] = (("ORD", "ATL"), ("LHR", "JFK"), ("CDG", "FRA"))
# The airlines the project ships (connectors/airlines.toml) keep the connector kind they have there.
_SHIPPED_KINDS: dict[str, tuple[str, str | None]] = {
    "BA": ("ndc", None),
    "AA": ("ndc", None),
    "VS": ("rest", "virgin_atlantic"),
    "DL": ("rest", "delta"),
    "AY": ("mcp", "finnair"),
}
_KIND_TURNS = ("ndc", "rest", "ndc", "rest", "mcp")
_REST_MAPPINGS = ("virgin_atlantic", "delta")


@dataclass(frozen=True, slots=True)
class RealAirline:
    """An OpenFlights airline and the non-stop (origin, destination) pairs it sells."""

    code: str
    name: str
    routes: frozenset[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class NetworkAirline:
    code: str
    name: str
    kind: str
    mapping: str | None
    endpoint: str
    latency_ms: int
    routes: frozenset[tuple[str, str]]


def _read_openflights(source: Path) -> tuple[dict[str, list[tuple[str, str]]], dict[str, set[tuple[str, str]]]]:
    """Active airlines' (name, country) by IATA code, and every code's non-stop routes between known airports."""
    known = airports()
    names: dict[str, list[tuple[str, str]]] = {}
    routes: dict[str, set[tuple[str, str]]] = {}
    try:
        with (source / "airlines.dat").open(encoding="utf-8", newline="") as f:
            for row in csv.reader(f):
                code, active = row[3], row[7]
                if len(code) == 2 and active == "Y" and "cargo" not in row[1].lower():
                    names.setdefault(code, []).append((row[1], row[6]))
        with (source / "routes.dat").open(encoding="utf-8", newline="") as f:
            for row in csv.reader(f):
                code, origin, destination, stops = row[0], row[2], row[4], row[7]
                if code in names and stops == "0" and origin in known and destination in known:
                    routes.setdefault(code, set()).add((origin, destination))
    except (OSError, IndexError) as exc:
        raise ConfigurationError(f"OpenFlights data in {source} is not readable: {exc}") from exc
    return names, routes


def _name(candidates: list[tuple[str, str]], routes: Iterable[tuple[str, str]]) -> str:
    """One code can name several airlines (VY: Vueling and Formosa): the one of the country it flies from most."""
    if len(candidates) == 1:
        return candidates[0][0]
    known = airports()
    countries = Counter(known[origin].country for origin, _ in routes)
    return max(candidates, key=lambda c: (countries[c[1]], c[0]))[0]


def derive(source: Path, target: Path, size: int = FLEET_SIZE) -> list[RealAirline]:
    """Choose the fleet from an OpenFlights snapshot in ``source``; writes it to ``target`` and returns it."""
    names, routes = _read_openflights(source)
    touches: Counter[str] = Counter()
    for pairs in routes.values():
        for origin, destination in pairs:
            touches[origin] += 1
            touches[destination] += 1
    busiest = {code for code, _ in touches.most_common(BUSIEST_AIRPORTS)}
    score = {code: sum(1 for o, d in pairs if o in busiest or d in busiest) for code, pairs in routes.items()}
    chosen = sorted(score, key=lambda code: (-score[code], code))[:size]
    if len(chosen) < size:
        raise ConfigurationError(f"OpenFlights data in {source} has {len(chosen)} airlines with routes, not {size}")
    fleet = [RealAirline(code, _name(names[code], routes[code]), frozenset(routes[code])) for code in chosen]
    target.mkdir(parents=True, exist_ok=True)
    with (target / "network-airlines.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "airline", "name", "routes_at_busiest_airports"])
        for rank, airline in enumerate(fleet, 1):
            writer.writerow([rank, airline.code, airline.name, score[airline.code]])
    with (target / "network-routes.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["airline", "origin", "destination"])
        for airline in fleet:
            writer.writerows((airline.code, o, d) for o, d in sorted(airline.routes))
    return fleet


@cache
def real_airlines(data_dir: Path = DATA_DIR) -> tuple[RealAirline, ...]:
    """The shipped fleet, in rank order (most routes through the busiest airports first)."""
    try:
        with (data_dir / "network-airlines.csv").open(encoding="utf-8", newline="") as f:
            ranked = [(row["airline"], row["name"]) for row in csv.DictReader(f)]
        pairs: dict[str, set[tuple[str, str]]] = {}
        with (data_dir / "network-routes.csv").open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                pairs.setdefault(row["airline"], set()).add((row["origin"], row["destination"]))
    except (OSError, KeyError) as exc:
        raise ConfigurationError(
            f"the 50-airline fleet in {data_dir} is not readable ({exc}): derive it with "
            "`python -m bench.route_networks <openflights folder> bench/data`"
        ) from exc
    return tuple(RealAirline(code, name, frozenset(pairs.get(code, ()))) for code, name in ranked)


def serving(fleet: Iterable[RealAirline | NetworkAirline], route: tuple[str, str]) -> list[str]:
    """Codes of the airlines of ``fleet`` that fly ``route`` non-stop: whom a search on it is fanned out to."""
    return [airline.code for airline in fleet if route in airline.routes]


def _kinds(codes: Sequence[str]) -> list[tuple[str, str | None]]:
    kinds: list[tuple[str, str | None]] = []
    turn = rest = 0
    for code in codes:
        if code in _SHIPPED_KINDS:
            kinds.append(_SHIPPED_KINDS[code])
            continue
        kind = _KIND_TURNS[turn % len(_KIND_TURNS)]
        turn += 1
        if kind == "rest":
            kinds.append(("rest", _REST_MAPPINGS[rest % len(_REST_MAPPINGS)]))
            rest += 1
        else:
            kinds.append((kind, "finnair" if kind == "mcp" else None))
    return kinds


def network_fleet(
    *, latencies_ms: Sequence[int], host: str = "127.0.0.1", count: int = FLEET_SIZE, data_dir: Path = DATA_DIR
) -> list[NetworkAirline]:
    """The first ``count`` real airlines as simulated ones: kinds as the module says, free ports of ``host``,
    latencies from ``latencies_ms`` in turn."""
    real = real_airlines(data_dir)
    if not 1 <= count <= len(real):
        raise ConfigurationError(f"between 1 and {len(real)} airlines with real route networks, not {count}")
    if not latencies_ms:
        raise ConfigurationError("the simulated airlines need at least one latency")
    chosen = real[:count]
    kinds = _kinds([a.code for a in chosen])
    fleet: list[NetworkAirline] = []
    for i, (airline, (kind, mapping), port) in enumerate(zip(chosen, kinds, free_ports(count, host), strict=True)):
        path = "/mcp" if kind == "mcp" else ""
        endpoint = f"http://{host}:{port}{path}"
        fleet.append(
            NetworkAirline(
                airline.code, airline.name, kind, mapping, endpoint, latencies_ms[i % len(latencies_ms)], airline.routes
            )
        )
    return fleet


def write_network_registry(path: Path, fleet: Sequence[NetworkAirline], *, defaults_from: Path) -> Path:
    """The fleet as an airline registry (format of ``connectors/airlines.toml``), checked as it reads back."""
    header = (
        f"# Written by `jetbridge bench --airlines-50`: {len(fleet)} real airlines (OpenFlights, ODbL) with "
        "their real non-stop routes, simulated."
    )
    return write_registry(path, fleet, defaults_from=defaults_from, header=header)


def kinds_count(fleet: Iterable[NetworkAirline]) -> Mapping[str, int]:
    """How many airlines of each connector kind."""
    return dict(sorted(Counter(a.kind for a in fleet).items()))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m bench.route_networks <openflights folder> <target folder>")
    derived = derive(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{len(derived)} airlines, {sum(len(a.routes) for a in derived)} routes")
