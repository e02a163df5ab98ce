"""Derive the small OpenFlights subset the project ships (airports with an IATA code, and the routes of
the simulated airlines) from a full OpenFlights snapshot.

    python infra/data/derive_openflights.py ../shared/data/openflights jetbridge/data

The output stays under the ODbL; jetbridge/data/README.md carries the attribution.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

SIMULATED_AIRLINES = ("BA", "AA", "VS", "DL", "AY")


def main(source: Path, target: Path) -> None:
    airports: dict[str, list[str]] = {}
    with (source / "airports.dat").open(encoding="utf-8") as f:
        for row in csv.reader(f):
            iata = row[4]
            if len(iata) == 3 and iata.isalpha() and iata.isupper() and row[12] == "airport":
                airports[iata] = [iata, row[1], row[2], row[3], row[6], row[7], row[11]]
    with (target / "airports.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["iata", "name", "city", "country", "latitude", "longitude", "tz"])
        for code in sorted(airports):
            w.writerow(airports[code])
    routes: set[tuple[str, str, str]] = set()
    with (source / "routes.dat").open(encoding="utf-8") as f:
        for row in csv.reader(f):
            airline, origin, destination, codeshare, stops = row[0], row[2], row[4], row[6], row[7]
            if (
                airline in SIMULATED_AIRLINES
                and codeshare != "Y"
                and stops == "0"
                and origin in airports
                and destination in airports
            ):
                routes.add((airline, origin, destination))
    with (target / "routes.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["airline", "origin", "destination"])
        for r in sorted(routes):
            w.writerow(r)
    print(f"{len(airports)} airports, {len(routes)} routes")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
