"""Order events in the connectors process: what goes onto ``jb.orders.v1``, and the airlines' own changes.

``OrderEvents`` publishes an `OrderEvent` (key: Jetbridge's order id ``<IATA>:<airline order id>``) and returns
once the broker acknowledged it, then notes it in the process's view of the topic (`OrderView`, in production
`jetbridge.order_book.OrderBook`: the topic read whole from the beginning and followed), so the view knows at once
whose each order is and how it last stood.

Airline-initiated changes (a schedule change, a cancellation) arrive two ways and are published the same way,
``changed_by`` AIRLINE, with the client id the view knows for the order:

- webhooks: ``POST /webhooks/<IATA>`` on the process's health port (`AirlineChanges.webhook`, served by
  `jetbridge.health.HealthServer.post_route`) hands the body and headers to the airline's connector when it is an
  `connectors.orders.OrderChangeParser` (which checks the signature). Answers: 202 once the event is acknowledged
  (or the order is not one of ours: nothing to publish, retrying would not change that), 401 bad signature,
  404 unknown airline (or one that takes no webhooks), 400 a body that does not parse, 503 the broker did not take
  it or the view is not read yet (the airline sends it again);
- watchers: for each connector that is an `connectors.orders.OrderWatcher`, ``watch_orders`` runs in a task,
  restarted with backoff when it fails or ends. A change the broker does not take is raised back into the watch,
  which fails and takes it again from its last change handed on (the MCP kind's feed cursor).

An order the view does not know is not published: an event is the only way the bridge learns whose an order is,
and one with an empty client id would make it nobody's (compaction keeps only the latest record, so it would hide
the order from its own client for good). The view is given ``UNKNOWN_GRACE_S`` to read an order made moments ago
through another instance; after that the change is logged as a warning and dropped (an order not made through
Jetbridge: nobody here may see it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Protocol

from connectors.orders import OrderChange, OrderChangeParser, OrderWatcher, order_id_of
from jetbridge.errors import AirlineRejected, JetbridgeError, KafkaError
from jetbridge.kafka import HEADER_CLIENT_ID, HEADER_TRACEPARENT, AsyncProducer, new_traceparent
from jetbridge.log import get_logger
from schemas.codec import AvroCodec
from schemas.models import ChangeSource, OrderEvent

__all__ = [
    "UNKNOWN_GRACE_S",
    "WEBHOOK_PREFIX",
    "AirlineChanges",
    "OrderEvents",
    "OrderView",
    "webhook_url",
]

log = get_logger(__name__)

WEBHOOK_PREFIX = "/webhooks/"
# How long a change for an order the view does not know waits for it to be read (made through another instance
# moments ago) before it is dropped; well inside the one second an airline's change takes to reach the topic.
UNKNOWN_GRACE_S = 0.5
# Backoff of a watcher that failed or ended, doubling up to the cap; reset once a watch lasted WATCH_STEADY_S.
WATCH_BACKOFF_S = 0.5
WATCH_BACKOFF_MAX_S = 30.0
WATCH_STEADY_S = 60.0

Headers = Sequence[tuple[str, str | bytes | None]]
Answer = tuple[int, str, bytes]


class OrderView(Protocol):
    """What the connectors need of the view of ``jb.orders.v1`` (`jetbridge.order_book.OrderBook`)."""

    caught_up: asyncio.Event

    def get(self, order_id: str) -> OrderEvent | None: ...

    def note(self, event: OrderEvent) -> None: ...

    async def wait_for(self, order_id: str, timeout_s: float) -> OrderEvent | None: ...


def webhook_url(host: str, port: int, airline: str) -> str:
    """Where ``airline`` posts its order changes (the README's form)."""
    return f"http://{host}:{port}{WEBHOOK_PREFIX}{airline}"


class OrderEvents:
    """The Publisher of ``jb.orders.v1`` for this process; keeps the view current with what it published."""

    def __init__(self, topic: str, codec: AvroCodec, producer: AsyncProducer, view: OrderView) -> None:
        self.topic = topic
        self.view = view
        self._codec = codec
        self._producer = producer

    async def publish(self, event: OrderEvent, headers: Headers | None = None) -> None:
        """Write ``event`` and return once the broker acknowledged it (a ``KafkaError`` when it did not)."""
        sent = list(headers) if headers is not None else _own_headers(event.client_id)
        await self._producer.send(
            self.topic, key=event.order_id, value=self._codec.encode(self.topic, event), headers=sent
        )
        self.view.note(event)

    async def airline_changed(self, airline: str, change: OrderChange) -> OrderEvent | None:
        """Publish a change the airline made; None (nothing published) when the order is not one the view knows."""
        order_id = order_id_of(airline, change.order.order_id)
        known = self.view.get(order_id) or await self.view.wait_for(order_id, UNKNOWN_GRACE_S)
        if known is None:
            log.warning(
                "airline changed an order Jetbridge does not know; not published",
                airline=airline,
                order_id=order_id,
                change=change.change,
            )
            return None
        event = OrderEvent(
            order_id=order_id,
            client_id=known.client_id,
            order=change.order,
            change=change.change,
            changed_by=ChangeSource.AIRLINE,
            reason=change.reason,
            request_id=None,
            at=change.at,
        )
        await self.publish(event)
        log.info("airline order change published", airline=airline, order_id=order_id, change=change.change)
        return event


def _own_headers(client_id: str) -> list[tuple[str, str | bytes | None]]:
    # A change the airline made belongs to no request: it carries only whose order it is and a trace of its own.
    return [(HEADER_CLIENT_ID, client_id.encode()), (HEADER_TRACEPARENT, new_traceparent().encode())]


class AirlineChanges:
    """The airlines' own order changes onto ``jb.orders.v1``: the webhook route and the watchers."""

    def __init__(self, connectors: Mapping[str, object], events: OrderEvents) -> None:
        self.events = events
        self.parsers = {code: c for code, c in connectors.items() if isinstance(c, OrderChangeParser)}
        self.watchers = {code: c for code, c in connectors.items() if isinstance(c, OrderWatcher)}
        self._tasks: list[asyncio.Task[None]] = []
        self.received = 0
        self.published = 0

    def webhook_urls(self, host: str, port: int) -> dict[str, str]:
        return {code: webhook_url(host, port, code) for code in sorted(self.parsers)}

    async def webhook(self, path: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """``POST /webhooks/<IATA>``: one change, published before the answer."""
        code = path.removeprefix(WEBHOOK_PREFIX).strip("/").upper()
        parser = self.parsers.get(code)
        if parser is None:
            return 404, "text/plain", b"no webhook for this airline\n"
        self.received += 1
        try:
            change = parser.parse_order_change(body, headers)
        except AirlineRejected as exc:
            log.warning("webhook refused", airline=code, error=exc.message)
            return 401, "text/plain", b"signature missing or wrong\n"
        except (JetbridgeError, ValueError) as exc:
            # The error's class only: a body that does not parse is quoted by some parsers' messages.
            log.warning("webhook body does not parse", airline=code, error=type(exc).__name__)
            return 400, "text/plain", b"body does not parse as an order change\n"
        if not self.events.view.caught_up.is_set():
            return 503, "text/plain", b"orders not read yet; send it again\n"
        try:
            event = await self.events.airline_changed(code, change)
        except KafkaError as exc:
            log.warning(
                "airline order change not published; the airline sends it again", airline=code, error=exc.message
            )
            return 503, "text/plain", b"not accepted now; send it again\n"
        if event is None:
            return 202, "text/plain", b"accepted: not an order made through Jetbridge\n"
        self.published += 1
        return 202, "text/plain", b"accepted\n"

    def start_watchers(self) -> None:
        for code, watcher in sorted(self.watchers.items()):
            self._tasks.append(asyncio.create_task(self._watch(code, watcher), name=f"order-watch-{code}"))

    async def _watch(self, code: str, watcher: OrderWatcher) -> None:
        """Run the airline's watch for ever: restarted with backoff when it fails or ends."""
        loop = asyncio.get_running_loop()
        backoff = WATCH_BACKOFF_S

        async def on_change(change: OrderChange) -> None:
            self.received += 1
            try:
                event = await self.events.airline_changed(code, change)
            except KafkaError as exc:
                # Raised on: the watch fails and starts again from the last change it handed on, this one.
                log.warning(
                    "airline order change not published; the watch takes it again", airline=code, error=exc.message
                )
                raise
            if event is not None:
                self.published += 1

        while True:
            began = loop.time()
            try:
                await watcher.watch_orders(on_change)
                log.warning("order watch ended; restarting", airline=code)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a watch that fails is restarted, never the process
                log.warning(
                    "order watch failed; restarting",
                    airline=code,
                    error=type(exc).__name__,
                    detail=exc.message if isinstance(exc, JetbridgeError) else None,
                )
            if loop.time() - began >= WATCH_STEADY_S:
                backoff = WATCH_BACKOFF_S
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, WATCH_BACKOFF_MAX_S)

    def health(self) -> dict[str, object]:
        return {
            "webhooks": sorted(self.parsers),
            "watching": {code: not t.done() for code, t in zip(sorted(self.watchers), self._tasks, strict=False)},
            "received": self.received,
            "published": self.published,
        }

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
