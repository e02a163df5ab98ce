"""``python -m streams``: run the faust worker with the router and the aggregator."""

from __future__ import annotations

import asyncio
import sys

import uvloop

from jetbridge.log import configure_logging
from jetbridge.settings import get_settings


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="streams")
    settings.state_dir.mkdir(parents=True, exist_ok=True)  # faust makes only the last level of its datadir
    # uvloop before faust creates its loop (faust's own --loop option comes too late: the app module,
    # imported below, already made one).
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from streams.app import app

    # --quiet (before the command) drops faust's ANSI banner; at "warn" or above faust would start a
    # terminal spinner, so the level stays "info" and our logging config (app.py) filters instead.
    sys.argv = [sys.argv[0], "--quiet", "worker", "--loglevel", "info", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
