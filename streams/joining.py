"""The search agent on faust: where the router and the aggregator meet the stream.

One agent reads the requests and the airlines' responses (co-partitioned: same key, same partition
count). A request is routed (``router.py``) and its join opened with the router's decision as the plan; a
response joins its request's aggregation (``aggregator.py``). Nothing is acknowledged as it is read: each
event is held as a ticket (``acks.py``) until what depends on it is durable. A request is held by its calls
until the broker acknowledged them and by its join until its reply is acknowledged, so a worker that
dies is replaced by one that routes and joins again exactly the requests that were open. On every
partition assignment the reply topic is read back before any event is handled, so a request answered by
a predecessor is never answered again (``replies.py``). The app's timer drives the completion timeout.

Plans on the control topic come from stream workers of earlier versions (which sent the plan as an event)
during a rolling upgrade, or from an operator replaying an old dead letter: they are joined like the plan
the router hands over, whichever comes first.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import faust
import structlog

from jetbridge.errors import DecodeError
from jetbridge.kafka import (
    HEADER_CLIENT_ID,
    HEADER_REPLY_TO,
    HEADER_TRACEPARENT,
    client_config,
    decode_headers,
    event_headers,
    new_traceparent,
)
from jetbridge.log import get_logger
from schemas.models import AggregatorControl, AirlineResponse, ControlKind, SearchReply, SearchRequest
from streams.acks import InOrderAcks, Ticket
from streams.aggregator import Aggregator
from streams.context import Produce, StreamContext
from streams.dead_letters import DeadLetters
from streams.replies import scan_replies
from streams.router import Router

__all__ = ["AGGREGATOR", "ROUTER", "Joining"]

log = get_logger(__name__)

# The stages named in dead letters and errors: a request that cannot be routed, a response that cannot join.
ROUTER = "router"
AGGREGATOR = "aggregator"


class Joining:
    """The search agent's body, its reply producer, its timer and rebalance hooks."""

    def __init__(self, ctx: StreamContext, produce: Produce, dead_letters: DeadLetters) -> None:
        self._ctx = ctx
        self._produce = produce
        self._dead_letters = dead_letters
        self.router = Router(ctx, produce)
        self.acks = InOrderAcks(ack=lambda event: event.ack())
        self.core = Aggregator(
            send_reply=self.send_reply,
            acks=self.acks,
            reply_window=timedelta(seconds=ctx.settings.aggregator_reply_window_s),
        )
        self._known_partitions: set[int] = set()
        # Set once the reply topic has been read back for the partitions this worker owns; faust resumes the
        # streams before its assignment signal's receivers finish, so the agent waits for this itself.
        self._replies_known = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self.ready = False

    async def consume(self, stream: faust.StreamT[Any]) -> None:
        """The agent's body: every event held until what depends on it is durable (manual acknowledgement)."""
        names = self._ctx.names
        async for event in stream.noack().events():  # type: ignore[attr-defined]  # StreamT lacks noack in its stub
            await self._replies_known.wait()
            message = event.message
            ticket = self.acks.hold(message.topic, message.partition, message.offset, event)
            stage = ROUTER if message.topic == names.requests else AGGREGATOR
            try:
                if not event.key:
                    raise DecodeError(f"{stage} input without a key (request id)")
                if stage == ROUTER:
                    await self._on_request(event, ticket)
                elif message.topic == names.responses:
                    await self._on_response(event, ticket)
                else:
                    await self._on_control(event, ticket)
            except Exception as exc:  # noqa: BLE001 - per-event isolation: an escaping error stops the agent
                await self._dead_letters.publish(event, stage, exc)
                self.acks.release(ticket)

    async def _on_request(self, event: Any, ticket: Ticket) -> None:
        codec = await self._ctx.codec()
        request = await codec.decode(event.value, SearchRequest)
        request_id = request.request_id
        with structlog.contextvars.bound_contextvars(request_id=request_id, correlation_id=request.correlation_id):
            if not self.core.admit(request_id, request.deadline):
                self.acks.release(ticket)  # answered before: a replay
                return
            headers = decode_headers(event.message.headers)
            routed = await self.router.route(codec, request, headers, self.core.answered_airlines(request_id))
            if routed.deliveries:
                self.acks.retain(ticket)  # until the broker acknowledged every call
                self._watch_calls(event, ticket, routed.deliveries)
            await self.core.on_plan(ticket, event.message.partition, routed.plan, routed.headers)

    def _watch_calls(self, event: Any, ticket: Ticket, deliveries: list[asyncio.Future[Any]]) -> None:
        """Let go of the request once the broker answered for every call; a task only when one failed."""
        waiting = len(deliveries)
        failures: list[BaseException] = []

        def answered(delivery: asyncio.Future[Any]) -> None:
            nonlocal waiting
            waiting -= 1
            if delivery.cancelled():
                failures.append(asyncio.CancelledError())
            elif (error := delivery.exception()) is not None:
                failures.append(error)
            if waiting:
                return
            if not failures:
                self.acks.release(ticket)
                return
            task = asyncio.ensure_future(self._calls_refused(event, ticket, failures[0]))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        for delivery in deliveries:
            delivery.add_done_callback(answered)

    async def _calls_refused(self, event: Any, ticket: Ticket, error: BaseException) -> None:
        # Calls the broker refused after its own retries: the request goes to the dead-letter channel
        # (replayable); its join answers at the deadline with what did go out.
        await self._dead_letters.publish(event, ROUTER, error)
        self.acks.release(ticket)

    async def _on_response(self, event: Any, ticket: Ticket) -> None:
        codec = await self._ctx.codec()
        response = await codec.decode(event.value, AirlineResponse)
        with structlog.contextvars.bound_contextvars(request_id=response.request_id):
            await self.core.on_response(ticket, event.message.partition, response)

    async def _on_control(self, event: Any, ticket: Ticket) -> None:
        codec = await self._ctx.codec()
        control = await codec.decode(event.value, AggregatorControl)
        if control.kind is not ControlKind.PLAN:
            self.acks.release(ticket)  # DEADLINE ticks of earlier versions: the timer is in memory now
            return
        with structlog.contextvars.bound_contextvars(request_id=control.request_id):
            if not self.core.admit(control.request_id, control.deadline):
                self.acks.release(ticket)
                return
            await self.core.on_plan(ticket, event.message.partition, control, decode_headers(event.message.headers))

    async def send_reply(self, reply: SearchReply, request_headers: dict[str, str]) -> asyncio.Future[Any]:
        """Queue the reply with the request's client and trace, addressed to the bridge that asked."""
        codec = await self._ctx.codec()
        replies = self._ctx.names.replies
        headers = event_headers(
            request_id=reply.request_id,
            correlation_id=reply.correlation_id,
            client_id=request_headers.get(HEADER_CLIENT_ID, ""),
            deadline_ms=int(reply.deadline.timestamp() * 1000),
            traceparent=request_headers.get(HEADER_TRACEPARENT) or new_traceparent(),
            extra={HEADER_REPLY_TO: reply.reply_to},
        )
        return await self._produce(replies, reply.request_id.encode(), codec.encode(replies, reply), headers)

    async def tick(self) -> None:
        """Completion timeout: answer every join whose deadline has passed, with what it has."""
        await self.core.tick()

    async def on_revoked(self, sender: Any, revoked: set[Any], **_: Any) -> None:
        self.ready = False
        self._replies_known.clear()
        await self.core.on_revoked()

    async def on_assigned(self, sender: Any, assigned: set[Any], **_: Any) -> None:
        # Learn which requests of the partitions taken over were already answered, before any of their
        # events is handled.
        names, settings = self._ctx.names, self._ctx.settings
        inputs = (names.requests, names.responses, names.control)
        partitions = sorted({tp.partition for tp in assigned if tp.topic in inputs})
        new = [p for p in partitions if p not in self._known_partitions]
        if new:
            since_ms = int((time.time() - settings.aggregator_reply_window_s) * 1000)
            config = client_config(settings)
            found = await asyncio.to_thread(scan_replies, config, names.replies, new, since_ms)
            self.core.learn_replies(found)
            log.info("replies read back for partitions taken over", partitions=new, answered=len(found))
        self._known_partitions.clear()
        self._known_partitions.update(partitions)
        self._replies_known.set()
        self.ready = True
        log.info("streams ready (partitions assigned, replies read back)", partitions=partitions)

    def health(self) -> dict[str, Any]:
        """The joins' part of the health answer."""
        return {
            "open_joins": len(self.core.open),
            "held_events": self.acks.held,
            "replies_sent": self.core.replies_sent,
        }
