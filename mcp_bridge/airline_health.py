"""The bridge's view of every airline's circuit breaker and quarantine, for ``list_airlines``.

A small background reader of ``jb.airline-health.v1`` (the connectors' ``HealthBoard``, read-only: the
bridge never calls an airline, so it never reports on one). It starts with the bridge and never stops it:
while the topic cannot be read, every circuit shows as ``closed`` (unknown), as before the breaker existed, and
no airline as quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass

from jetbridge.health_board import NEVER, HealthBoard
from jetbridge.runtime import kafka_config
from jetbridge.settings import Settings
from jetbridge.topics import TopicNames
from schemas.codec import AvroCodec
from schemas.models import CircuitState

__all__ = ["AirlineHealthView", "CircuitView"]


@dataclass(frozen=True, slots=True)
class CircuitView:
    """One airline's circuit as an agent sees it, and why a connector worker quarantined it (None: it did not)."""

    state: str  # closed | open | half_open
    since: str | None = None
    next_probe_at: str | None = None
    reason: str | None = None
    quarantine: str | None = None


class AirlineHealthView:
    def __init__(self, settings: Settings, codec: AvroCodec, instance_id: str) -> None:
        self._board = HealthBoard(
            TopicNames(settings.topic_prefix).airline_health, codec, kafka_config(settings, f"{instance_id}-health")
        )

    async def start(self, catch_up_s: float = 3.0) -> None:
        await self._board.start(catch_up_s)

    async def close(self) -> None:
        await self._board.close()

    def unavailable(self, airline: str) -> bool:
        """Whether ``airline`` will not answer live now: its circuit is open, or a worker quarantined it."""
        view = self.circuit(airline)
        return view.state == "open" or view.quarantine is not None

    def circuit(self, airline: str) -> CircuitView:
        health = self._board.get(airline)
        if health is None:
            return CircuitView("closed")
        return CircuitView(
            state=health.state.value.lower(),
            since=health.since.isoformat(timespec="milliseconds") if health.since > NEVER else None,
            next_probe_at=health.until.isoformat(timespec="milliseconds")
            if health.state is CircuitState.OPEN and health.until is not None
            else None,
            reason=health.reason or None,
            quarantine=health.quarantine,
        )
