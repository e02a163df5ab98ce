"""A hook into one search as `SearchService` runs it: who is told when it is published, and how long it may hold.

The MCP layer sets an observer for the duration of a tool call (`observing`); the service, which knows nothing of
MCP, asks the current one (`current_observer`) how long to let the backbone work (a task keeps following late
airlines past the agent's own deadline) and tells it the request it publishes, before it is published, so the
request's answers can be watched from the first one.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from datetime import datetime
from typing import Protocol

from schemas.models import SearchRequest

__all__ = ["SearchObserver", "current_observer", "observing"]


class SearchObserver(Protocol):
    def hold_ms(self, deadline_ms: int) -> int:
        """The deadline the request is published with, for an agent's ``deadline_ms`` (at least that)."""
        ...

    def published(self, request: SearchRequest, agent_deadline: datetime) -> None:
        """``request`` is about to be published; the agent expects an answer by ``agent_deadline``."""
        ...


_current: contextvars.ContextVar[SearchObserver | None] = contextvars.ContextVar(
    "jetbridge_search_observer", default=None
)


def current_observer() -> SearchObserver | None:
    return _current.get()


@contextlib.contextmanager
def observing(observer: SearchObserver | None) -> Iterator[None]:
    token = _current.set(observer)
    try:
        yield
    finally:
        _current.reset(token)
