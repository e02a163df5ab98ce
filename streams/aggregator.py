"""The aggregator's runtime: open joins in memory, their events held until the reply is durable.

Integration patterns: Aggregator with completion timeout (a join completes when every airline asked
has answered, or at the request's deadline, by the timer), Idempotent Consumer (one answer per airline,
and a request id already answered is never answered again: see ``replies.py``), Dead Letter Channel (the
caller's, for events that cannot be handled).

Durability without a table: an event of an open join stays unacknowledged (``acks.py``), so the worker's
committed offsets stay below the oldest open join. A worker that dies is replaced by one that reads those
events again and rebuilds exactly the joins that were open; joins that had been answered are recognised
by the reply ledger and only acknowledged. Nothing here knows faust or Kafka: the app wires them in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from jetbridge import tracing
from jetbridge.errors import RequestExpired
from jetbridge.kafka import HEADER_TRACEPARENT
from jetbridge.log import get_logger
from jetbridge.metrics import OPEN_JOINS, REPLIES
from schemas.models import AggregatorControl, AirlineResponse, SearchReply, now_utc
from streams.acks import InOrderAcks, Ticket
from streams.aggregation import Aggregation, TimerIndex
from streams.replies import ReplyLedger

__all__ = ["Aggregator", "OpenJoin", "SendReply"]

log = get_logger(__name__)

# A reply that could not be produced (broker away) is tried again this soon, by the timer.
RETRY_REPLY = timedelta(milliseconds=500)

# Queues the reply with the request's envelope; returns the broker's acknowledgement still to come.
SendReply = Callable[[SearchReply, dict[str, str]], Awaitable["asyncio.Future[Any]"]]


@dataclass(eq=False)
class OpenJoin:
    state: Aggregation
    partition: int
    tickets: list[Ticket] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # the request's envelope: client, trace, deadline
    completing: bool = False


class Aggregator:
    def __init__(
        self,
        *,
        send_reply: SendReply,
        acks: InOrderAcks,
        reply_window: timedelta,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self._send_reply = send_reply
        self._acks = acks
        self._clock = clock
        self.ledger = ReplyLedger(reply_window)
        self.open: dict[str, OpenJoin] = {}
        self.timers = TimerIndex()
        self._completing = 0
        self.replies_sent = 0

    # ---- events ----
    def admit(self, request_id: str, deadline: datetime) -> bool:
        """Whether a request should be routed and joined: False if it was answered already (a replay);
        raises RequestExpired when it is met again beyond what the reply ledger remembers."""
        if request_id in self.ledger:
            return False
        now = self._clock()
        if request_id not in self.open and deadline < now - self.ledger.window:
            # Whether this request was answered is beyond what the ledger remembers: never risk a second
            # reply. The caller dead-letters it; its responses are then released as they come.
            self.ledger.add(request_id, now)
            raise RequestExpired(
                f"request {request_id} met again {int((now - deadline).total_seconds())} s after its "
                f"deadline, beyond the reply window of {int(self.ledger.window.total_seconds())} s"
            )
        return True

    def answered_airlines(self, request_id: str) -> frozenset[str]:
        """Airlines whose answer for an open join is already in (met before its request, on a replay)."""
        join = self.open.get(request_id)
        return frozenset(join.state.responses) if join is not None else frozenset()

    async def on_plan(
        self, ticket: Ticket, partition: int, control: AggregatorControl, headers: dict[str, str]
    ) -> None:
        """The router's decision for a request ``admit`` let through; ``ticket`` holds the request."""
        request_id = control.request_id
        now = self._clock()
        join = self._join(request_id, partition, now)
        if not join.state.add_plan(control):
            self._acks.release(ticket)
            return
        join.tickets.append(ticket)
        join.headers = headers
        self.timers.track(join.state)
        await self._maybe_complete(join, now)

    async def on_response(self, ticket: Ticket, partition: int, response: AirlineResponse) -> None:
        request_id = response.request_id
        if request_id in self.ledger:
            self._acks.release(ticket)  # late or duplicate: the request has its reply
            return
        now = self._clock()
        join = self._join(request_id, partition, now)
        if not join.state.add_response(response):
            log.info("response ignored (duplicate)", request_id=request_id, airline=response.airline)
            self._acks.release(ticket)
            return
        join.tickets.append(ticket)
        await self._maybe_complete(join, now)

    def _join(self, request_id: str, partition: int, now: datetime) -> OpenJoin:
        join = self.open.get(request_id)
        if join is None:
            join = OpenJoin(Aggregation(request_id=request_id, first_seen=now), partition)
            self.open[request_id] = join
            self.timers.track(join.state)
        return join

    # ---- completion ----
    async def tick(self) -> None:
        """The completion timeout: answer every join whose deadline passed; drop orphans."""
        now = self._clock()
        for request_id, due in self.timers.pop_due(now):
            join = self.open.get(request_id)
            if join is None:
                continue
            if join.state.plan is None:
                # Responses whose plan never came (it was dead-lettered): nothing to answer.
                log.warning("responses without a plan dropped", request_id=request_id, responses=len(join.tickets))
                self._close(join)
                continue
            if not await self._maybe_complete(join, now):
                self.timers.retry(request_id, due, now + RETRY_REPLY)
        self.ledger.prune(now)
        OPEN_JOINS.set(len(self.open))

    async def _maybe_complete(self, join: OpenJoin, now: datetime) -> bool:
        """Queue the join's reply if it is due; False if it could not even be queued (the timer retries).
        The join closes when the broker acknowledged the reply (``_replied``), not before."""
        if join.completing or not join.state.is_due(now):
            return True
        request_id = join.state.request_id
        reply = join.state.reply(now)
        join.completing = True
        # The join's span: from its first event to the reply's acknowledgement; the reply carries its traceparent.
        span = tracing.start_span(
            "aggregate",
            parent=join.headers.get(HEADER_TRACEPARENT),
            start_ns=int(join.state.first_seen.timestamp() * 1e9),
            attributes={
                tracing.REQUEST_ID: request_id,
                "jetbridge.stage": "aggregator",
                "jetbridge.reply.status": reply.status.value,
                "jetbridge.offers": len(reply.offers),
                "jetbridge.airlines.answered": sorted(join.state.responses),
            },
        )
        headers = join.headers | {
            HEADER_TRACEPARENT: tracing.traceparent_of(span, join.headers.get(HEADER_TRACEPARENT))
        }
        try:
            delivery = await self._send_reply(reply, headers)
        except Exception as exc:  # noqa: BLE001 - the join stays open; the timer tries again
            log.warning("reply not sent; will retry", request_id=request_id, error=repr(exc))
            tracing.end_span(span, exc)
            join.completing = False
            return False
        self._completing += 1
        delivery.add_done_callback(lambda done: self._replied(join, reply, now, done, span))
        return True

    def _replied(
        self,
        join: OpenJoin,
        reply: SearchReply,
        now: datetime,
        delivery: asyncio.Future[Any],
        span: tracing.Span,
    ) -> None:
        """The broker answered for a reply: on success the join is done, else the timer sends it again."""
        self._completing -= 1
        request_id = join.state.request_id
        error = delivery.exception() if not delivery.cancelled() else asyncio.CancelledError()
        tracing.end_span(span, error)
        with structlog.contextvars.bound_contextvars(request_id=request_id, correlation_id=reply.correlation_id):
            if error is not None:
                log.warning("reply not acknowledged; will retry", error=repr(error))
                join.completing = False
                if self.open.get(request_id) is join:
                    self.timers.schedule(request_id, self._clock() + RETRY_REPLY)
                return
            join.state.mark_done(now)
            self.ledger.add(request_id, now)
            self.replies_sent += 1
            REPLIES.labels(reply.status.value.lower()).inc()
            if self.open.get(request_id) is join:  # not dropped by a rebalance meanwhile
                self._close(join)
            log.info(
                "reply sent",
                status=reply.status.value,
                offers=len(reply.offers),
                late_by_ms=max(0, int((now - reply.deadline).total_seconds() * 1000)),
            )

    def _close(self, join: OpenJoin) -> None:
        self.open.pop(join.state.request_id, None)
        self.timers.forget(join.state.request_id)
        self._acks.release_all(join.tickets)

    # ---- rebalancing ----
    async def on_revoked(self, wait_s: float = 5.0) -> None:
        """Partitions are moving: let replies being sent land, then forget every open join and held event
        (faust seeks back to the committed offsets and delivers them again to whoever owns them next)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait_s
        while self._completing and loop.time() < give_up:  # noqa: ASYNC110 - a counter, not an event
            await asyncio.sleep(0.01)  # replies queued: let their acknowledgements land
        dropped = len(self.open)
        self.open.clear()
        self.timers.clear()
        self._acks.reset()
        if dropped:
            log.info("open joins handed back for replay", joins=dropped)

    def learn_replies(self, replied: dict[str, int]) -> None:
        """Request ids found on the reply topic (taken-over partitions): they are never answered again."""
        for request_id, at_ms in replied.items():
            self.ledger.add(request_id, datetime.fromtimestamp(at_ms / 1000, tz=self._clock().tzinfo))
