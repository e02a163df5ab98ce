"""Log lines of third-party libraries (stdlib logging) come out as the same JSON as structlog's."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import sys

import pytest

from jetbridge.log import configure_logging, get_logger, stdlib_logging_config


def _configure_on(buffer: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    # Patched in the test itself: pytest puts its own capture back on sys.stderr between phases.
    monkeypatch.setattr(sys, "stderr", buffer)
    configure_logging("INFO", "json", process="streams")


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_library_lines_have_the_keys_of_our_own(stderr: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    _configure_on(stderr, monkeypatch)
    get_logger("streams.app").warning("ours", partitions=3)
    logging.getLogger("aiokafka").warning("theirs %s", "too")
    ours, theirs = _lines(stderr)
    assert theirs["event"] == "theirs too"
    assert theirs["logger"] == "aiokafka"
    assert set(ours) - {"partitions"} <= set(theirs)
    assert (theirs["level"], theirs["process"]) == ("warning", "streams")


def test_a_framework_that_replaces_the_root_handlers_keeps_our_format(
    stderr: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    _configure_on(stderr, monkeypatch)
    config = stdlib_logging_config()
    logging.getLogger().handlers.clear()  # what faust's worker does before applying its logging_config
    logging.config.dictConfig(config)
    logging.getLogger("faust.worker").error("boom")
    (line,) = _lines(stderr)
    assert (line["event"], line["logger"], line["level"]) == ("boom", "faust.worker", "error")
