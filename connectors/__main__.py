"""``python -m connectors [--airline BA ...]``: run connector workers (see connectors/service.py)."""

from __future__ import annotations

import argparse

from connectors.service import run_connectors
from jetbridge.log import configure_logging
from jetbridge.runtime import run
from jetbridge.settings import get_settings
from jetbridge.tracing import configure_from_settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m connectors", description=__doc__)
    parser.add_argument("--airline", action="append", help="IATA code; repeat for several (default: all)")
    args = parser.parse_args()
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="connectors")
    configure_from_settings(settings, "connectors")
    run(run_connectors(settings, args.airline))


if __name__ == "__main__":
    main()
