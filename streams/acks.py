"""Acknowledging held events to faust in offset order, partition by partition.

The aggregator holds the events of an open join unacknowledged until its reply is durable, so faust
commits offsets only below the oldest open join and a restarted worker rebuilds every open join by
reading its events again. Joins complete out of order, but faust's commit logic expects acks to form a
run from the committed offset (it tolerates a one-offset gap), so events are released to faust strictly
in order: an event is acknowledged once it and every earlier event of its partition are released.

A ticket can have several holders (a request is held by its join until the reply is durable, and by the
calls it caused until the broker acknowledged them): it is released when the last one lets go.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["InOrderAcks", "Ticket"]


@dataclass(eq=False, slots=True)
class Ticket:
    """One held event; ``release`` it when nothing depends on it any more."""

    tp: tuple[str, int]
    offset: int
    event: Any
    generation: int
    holders: int = 1
    released: bool = False


@dataclass
class InOrderAcks:
    ack: Callable[[Any], None]
    _queues: dict[tuple[str, int], deque[Ticket]] = field(default_factory=dict)
    _generation: int = 0

    def hold(self, topic: str, partition: int, offset: int, event: Any) -> Ticket:
        ticket = Ticket((topic, partition), offset, event, self._generation)
        self._queues.setdefault(ticket.tp, deque()).append(ticket)
        return ticket

    def retain(self, ticket: Ticket) -> None:
        """One more holder: ``release`` must be called once more before the event is acknowledged."""
        ticket.holders += 1

    def release(self, ticket: Ticket) -> None:
        if ticket.generation != self._generation or ticket.released:
            return  # held before a rebalance: its event is delivered again and acknowledged then
        ticket.holders -= 1
        if ticket.holders > 0:
            return
        ticket.released = True
        queue = self._queues.get(ticket.tp)
        while queue and queue[0].released:
            self.ack(queue.popleft().event)

    def release_all(self, tickets: Iterable[Ticket]) -> None:
        for ticket in tickets:
            self.release(ticket)

    def reset(self) -> None:
        """Forget everything held (a rebalance: faust seeks every partition back to its committed offset
        and delivers the unacknowledged events again)."""
        self._queues.clear()
        self._generation += 1

    @property
    def held(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def oldest_held(self) -> dict[tuple[str, int], int]:
        """Per partition, the offset below which everything is acknowledged."""
        return {tp: q[0].offset for tp, q in self._queues.items() if q}
