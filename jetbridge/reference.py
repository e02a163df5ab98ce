"""Reference data shipped with the project: airports (IATA) and the routes airlines fly.

Derived from OpenFlights (ODbL); see `jetbridge/data/README.md`. Loaded once per process, read-only.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["DATA_DIR", "Airport", "airports", "great_circle_km", "routes_by_airline"]

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True, slots=True)
class Airport:
    iata: str
    name: str
    city: str
    country: str
    latitude: float
    longitude: float
    tz: str


@cache
def airports() -> dict[str, Airport]:
    """Every airport with an IATA code, by code."""
    with (DATA_DIR / "airports.csv").open(encoding="utf-8", newline="") as f:
        return {
            row["iata"]: Airport(
                iata=row["iata"],
                name=row["name"],
                city=row["city"],
                country=row["country"],
                latitude=float(row["latitude"]),
                longitude=float(row["longitude"]),
                tz=row["tz"] if row["tz"] != "\\N" else "UTC",
            )
            for row in csv.DictReader(f)
        }


@cache
def routes_by_airline(path: Path = DATA_DIR / "routes.csv") -> dict[str, frozenset[tuple[str, str]]]:
    """Non-stop (origin, destination) pairs each airline flies."""
    pairs: dict[str, set[tuple[str, str]]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            pairs.setdefault(row["airline"], set()).add((row["origin"], row["destination"]))
    return {code: frozenset(p) for code, p in pairs.items()}


def great_circle_km(a: Airport, b: Airport) -> float:
    """Distance between two airports along the earth's surface (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a.latitude, a.longitude, b.latitude, b.longitude))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))
