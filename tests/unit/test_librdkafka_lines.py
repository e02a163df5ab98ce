"""librdkafka's own log lines: one of each kind per window, however many clients repeat it, and the lines of a
consumer nobody else polls (the lag monitors') written while it runs, not all at once when it closes."""

from __future__ import annotations

import asyncio
import logging

import pytest

from jetbridge.kafka import LIBRDKAFKA_LOGGER, RepeatFilter
from jetbridge.metrics import LagMonitor

REFUSED = "[thrd:127.0.0.1:9/bootstrap]: 127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines() -> Lines:
    return Lines()


def logger_with(repeat: RepeatFilter, lines: Lines) -> logging.Logger:
    logger = logging.Logger("librdkafka-under-test", logging.DEBUG)
    logger.addFilter(repeat)
    logger.addHandler(lines)
    return logger


def test_every_client_repeating_one_failure_is_one_line_per_window_and_the_next_says_how_many(lines: Lines) -> None:
    clock = Clock()
    logger = logger_with(RepeatFilter(window_s=30, clock=clock), lines)
    for _ in range(50):
        for client in ("jb-lag-BA#consumer-14", "jb-lag-AY#consumer-18", "connectors-1#producer-1"):
            # confluent-kafka's call: (facility, client name, text)
            logger.error("%s [%s] %s", "FAIL", client, REFUSED)
        clock.now += 0.3
    assert lines.seen == [f"FAIL [jb-lag-BA#consumer-14] {REFUSED}"]

    clock.now += 15.1  # the window is over
    logger.error("%s [%s] %s", "FAIL", "jb-lag-AY#consumer-18", REFUSED)
    assert lines.seen[1] == f"FAIL [jb-lag-AY#consumer-18] {REFUSED} (and 149 more like it in the last 30 s)"

    clock.now += 31
    logger.error("%s [%s] %s", "FAIL", "jb-lag-AY#consumer-18", REFUSED)
    assert lines.seen[2] == f"FAIL [jb-lag-AY#consumer-18] {REFUSED}", "nothing was held back this time"


def test_other_texts_facilities_and_levels_are_other_kinds(lines: Lines) -> None:
    logger = logger_with(RepeatFilter(window_s=30, clock=Clock()), lines)
    logger.error("%s [%s] %s", "FAIL", "c#consumer-1", REFUSED)
    logger.error("%s [%s] %s", "FAIL", "c#consumer-1", REFUSED.replace(":9", ":19092"))
    logger.error("%s [%s] %s", "REQTMOUT", "c#consumer-1", REFUSED)
    logger.warning("%s [%s] %s", "FAIL", "c#consumer-1", REFUSED)
    logger.critical("FATAL %s", "fenced")  # a line of our own (an error callback's), not a client's
    assert len(lines.seen) == 5


def test_the_processes_librdkafka_logger_has_the_filter() -> None:
    assert any(isinstance(f, RepeatFilter) for f in LIBRDKAFKA_LOGGER.filters)


async def test_a_lag_monitors_lines_are_written_while_it_runs(lines: Lines) -> None:
    # Its consumer is never polled for messages; its log lines wait for a poll (they came out at shutdown).
    LIBRDKAFKA_LOGGER.addHandler(lines)
    level = LIBRDKAFKA_LOGGER.level
    LIBRDKAFKA_LOGGER.setLevel(logging.DEBUG)
    monitor = LagMonitor(
        {"bootstrap.servers": "127.0.0.1:9", "client.id": "jb-lag-test", "debug": "broker"},
        "jb.connector.ZZ",
        ["t.jb.airline.ZZ.calls.v1"],
        interval_s=0.2,
    )
    monitor.start()
    try:
        async with asyncio.timeout(20):
            while True:
                if any("jb-lag-test" in line for line in lines.seen):
                    break
                await asyncio.sleep(0.1)
    finally:
        await monitor.close()
        LIBRDKAFKA_LOGGER.removeHandler(lines)
        LIBRDKAFKA_LOGGER.setLevel(level)
