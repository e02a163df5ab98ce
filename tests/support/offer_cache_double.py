"""An in-memory stand-in for the offer cache's reading side (`jetbridge.offer_cache.OfferCache.get_many`), for
unit tests of the router. Keyed like the real one (airline and normalised search); that it answers as the real
one does over Redis is proven by ``tests/integration/test_cache_routing_on_kafka.py``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from jetbridge.offer_cache import CachedAnswer, cache_digest
from schemas.models import AirlineResponse, SearchCriteria, now_utc


class MemoryOfferCache:
    """Answers kept in a dict; records every lookup (which airlines, which search)."""

    def __init__(self) -> None:
        self._answers: dict[tuple[str, str], CachedAnswer] = {}
        self.lookups: list[tuple[list[str], SearchCriteria]] = []

    def keep(self, criteria: SearchCriteria, answer: CachedAnswer) -> None:
        self._answers[(answer.response.airline, cache_digest(criteria))] = answer

    async def get_many(self, airlines: Sequence[str], criteria: SearchCriteria) -> dict[str, CachedAnswer]:
        self.lookups.append((list(airlines), criteria))
        digest = cache_digest(criteria)
        return {a: found for a in airlines if (found := self._answers.get((a, digest))) is not None}


def answer(
    response: AirlineResponse, *, age: timedelta, fresh_for: timedelta, now: datetime | None = None
) -> CachedAnswer:
    """``response`` as cached ``age`` ago, fresh for ``fresh_for`` more (negative: stale since)."""
    at = now or now_utc()
    return CachedAnswer(response, fetched_at=at - age, fresh_until=at + fresh_for)
