"""``python -m streams``: run the faust worker with the router and the aggregator."""

from __future__ import annotations

import sys

from jetbridge.log import configure_logging
from jetbridge.settings import get_settings


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="streams")
    from streams.app import app

    level = "info" if settings.log_level.upper() == "DEBUG" else "warn"
    sys.argv = [sys.argv[0], "--loop", "uvloop", "worker", "--loglevel", level, "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
