"""Structured logging, configured once per process.

JSON lines when not on a terminal (the local stack writes them to `.jetbridge/logs/`), readable output on
a terminal. Per-event context (correlation_id, request_id, airline) is bound with
``structlog.contextvars.bound_contextvars`` as a context manager, so it never leaks into the next event.
Processors drop keys that could carry secrets or passenger data, whatever a caller passes.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger", "stdlib_logging_config"]

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


# Words that mark a secret anywhere in a key (`sasl.password`, a librdkafka setting; `kafka_sasl_password`;
# `client_secret`), and words that do as a key's last part (`access_token`, `sasl.oauthbearer.token`; not
# `tokens_left` or `token_error`, which say nothing secret).
_SECRET_WORDS = ("password", "passwd", "secret")
_SECRET_LAST_PARTS = frozenset({"token", "credential", "credentials", "authorization", "apikey"})


def _secret(key: str) -> bool:
    lowered = key.lower()
    if lowered in _REDACTED_KEYS or any(word in lowered for word in _SECRET_WORDS):
        return True
    return re.split(r"[._-]", lowered)[-1] in _SECRET_LAST_PARTS


def _redacted(value: Any) -> Any:
    # A mapping logged whole (a client config, headers) is looked into, so its secrets go too.
    if isinstance(value, Mapping):
        return {k: "[redacted]" if isinstance(k, str) and _secret(k) else _redacted(v) for k, v in value.items()}
    return value


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        event_dict[key] = "[redacted]" if _secret(key) else _redacted(event_dict[key])
    return event_dict


_configured = False
# The formatter every stdlib handler of this process uses, so libraries' lines match structlog's.
_stdlib_formatter: logging.Formatter | None = None


def configure_logging(level: str = "INFO", fmt: str = "auto", *, process: str | None = None) -> None:
    """Set up structlog and the stdlib root logger for this process. Safe to call twice."""
    global _configured, _stdlib_formatter
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
    # Third-party libraries (aiokafka, faust, uvicorn, httpx) log through the stdlib: the same processors
    # and renderer make their lines JSON with the same keys (plus the library's logger name).
    _stdlib_formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_stdlib_formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries speak from WARNING up, whatever the level of our own lines.
    root.setLevel(max(numeric, logging.WARNING))
    if process:
        structlog.contextvars.bind_contextvars(process=process)
    _configured = True


def stdlib_logging_config() -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict that keeps the root logger on this module's formatter.

    For frameworks that replace the root logger's handlers with their own at start-up (faust's worker:
    pass it as ``faust.App(..., logging_config=stdlib_logging_config())``). Call ``configure_logging`` first.
    """
    if _stdlib_formatter is None:
        raise RuntimeError("configure_logging() first")
    formatter = _stdlib_formatter
    root = logging.getLogger()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"jetbridge": {"()": lambda: formatter}},
        "handlers": {"jetbridge": {"class": "logging.StreamHandler", "formatter": "jetbridge", "stream": sys.stderr}},
        "root": {"level": logging.getLevelName(root.level), "handlers": ["jetbridge"]},
    }


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
