"""Structured logging, configured once per process.

JSON lines when not on a terminal (the local stack writes them to `.jetbridge/logs/`), readable output on
a terminal. Per-event context (correlation_id, request_id, airline) is bound with
``structlog.contextvars.bound_contextvars`` as a context manager, so it never leaks into the next event.
Processors drop keys that could carry secrets or passenger data, whatever a caller passes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger"]

# Keys that must never reach a log line, whatever a caller binds.
_REDACTED_KEYS = frozenset(
    {
        "authorization",
        "api_key",
        "apikey",
        "password",
        "secret",
        "token",
        "credential",
        "passenger",
        "passengers",
        "name",
        "given_name",
        "surname",
        "email",
        "phone",
        "date_of_birth",
        "document",
    }
)


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in _REDACTED_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


_configured = False


def configure_logging(level: str = "INFO", fmt: str = "auto", *, process: str | None = None) -> None:
    """Set up structlog and the stdlib root logger for this process. Safe to call twice."""
    global _configured
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Third-party libraries log through the stdlib; keep them quiet and on the same stream.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)
    if process:
        structlog.contextvars.bind_contextvars(process=process)
    _configured = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
