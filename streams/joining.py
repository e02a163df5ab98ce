"""The aggregator on faust: how the join (``aggregator.py``, faust-free) meets the stream.

It reads the aggregator's inputs without acknowledging them (each event is held as a ticket until its
join's reply is durable, see ``acks.py``), sends replies to the Return Address the plan names, drives
the completion timeout from the app's timer, and on every partition assignment reads the reply topic back
before any event is handled, so a join answered by a predecessor is never answered again (``replies.py``).
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
    decode_headers,
    event_headers,
    new_traceparent,
)
from jetbridge.log import get_logger
from schemas.models import AggregatorControl, AirlineResponse, ControlKind, SearchReply
from streams.acks import InOrderAcks, Ticket
from streams.aggregator import Aggregator
from streams.context import Send, StreamContext
from streams.dead_letters import DeadLetters
from streams.replies import scan_replies

__all__ = ["STAGE", "Joining"]

log = get_logger(__name__)

STAGE = "aggregator"


class Joining:
    """The aggregator's faust side: its agent's body, its reply producer, its timer and rebalance hooks."""

    def __init__(self, ctx: StreamContext, send: Send, dead_letters: DeadLetters) -> None:
        self._ctx = ctx
        self._send = send
        self._dead_letters = dead_letters
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
        self.ready = False

    async def consume(self, stream: faust.StreamT[Any]) -> None:
        """The agent's body: every event held until its join's reply is durable (manual acknowledgement)."""
        async for event in stream.noack().events():  # type: ignore[attr-defined]  # StreamT lacks noack in its stub
            await self._replies_known.wait()
            message = event.message
            ticket = self.acks.hold(message.topic, message.partition, message.offset, event)
            try:
                await self._handle(event, ticket)
            except Exception as exc:  # noqa: BLE001 - per-event isolation: an escaping error stops the agent
                await self._dead_letters.publish(event, STAGE, exc)
                self.acks.release(ticket)

    async def _handle(self, event: Any, ticket: Ticket) -> None:
        if not event.key:
            raise DecodeError("aggregator input without a key (request id)")
        codec = await self._ctx.codec()
        message = event.message
        if message.topic == self._ctx.names.responses:
            response = await codec.decode(event.value, AirlineResponse)
            with structlog.contextvars.bound_contextvars(request_id=response.request_id):
                await self.core.on_response(ticket, message.partition, response)
            return
        control = await codec.decode(event.value, AggregatorControl)
        if control.kind is not ControlKind.PLAN:
            self.acks.release(ticket)  # DEADLINE ticks of earlier versions: the timer is in memory now
            return
        with structlog.contextvars.bound_contextvars(request_id=control.request_id):
            await self.core.on_plan(ticket, message.partition, control, decode_headers(message.headers))

    async def send_reply(self, reply: SearchReply, plan_headers: dict[str, str]) -> None:
        """Produce the reply with the plan's client and trace, addressed to the bridge that asked."""
        codec = await self._ctx.codec()
        replies = self._ctx.names.replies
        headers = event_headers(
            request_id=reply.request_id,
            correlation_id=reply.correlation_id,
            client_id=plan_headers.get(HEADER_CLIENT_ID, ""),
            deadline_ms=int(reply.deadline.timestamp() * 1000),
            traceparent=plan_headers.get(HEADER_TRACEPARENT) or new_traceparent(),
            extra={HEADER_REPLY_TO: reply.reply_to},
        )
        await self._send(replies, reply.request_id.encode(), codec.encode(replies, reply), headers)

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
        partitions = sorted({tp.partition for tp in assigned if tp.topic in (names.responses, names.control)})
        new = [p for p in partitions if p not in self._known_partitions]
        if new:
            since_ms = int((time.time() - settings.aggregator_reply_window_s) * 1000)
            config = {"bootstrap.servers": settings.kafka_bootstrap_servers}
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
