"""The orders as they stand: ``jb.orders.v1`` read whole and followed, in any process that needs it.

The topic is compacted and keyed by Jetbridge's order id (``<IATA>:<the airline's order id>``); its latest record
is the order as it stands (`OrderEvent`, no passenger personal data). The bridge reads it to show an agent only
its own client's orders, to find an order already made with an idempotency key, and to tell subscribed agents
that an order changed; analytics read the same topic with any Avro consumer.

Like the airline health board, every reader assigns itself every partition from the beginning (no group,
nothing committed), and ``start`` returns once it has read to the end (or ``catch_up_s`` passed: then it goes
on reading in the background, and an order not yet read is "not found" until it is). A process that just made
an order ``note``s it at once, so its own agent never waits for the topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from jetbridge.errors import JetbridgeError
from jetbridge.kafka import AsyncConsumer, read_whole_and_follow
from jetbridge.log import get_logger
from schemas.codec import AvroCodec
from schemas.models import OrderEvent

__all__ = ["OrderBook", "OrderListener"]

log = get_logger(__name__)

OrderListener = Callable[[OrderEvent], None]


class OrderBook:
    def __init__(self, topic: str, codec: AvroCodec, consumer_config: dict[str, Any]) -> None:
        self.topic = topic
        self._codec = codec
        self._consumer = AsyncConsumer(
            consumer_config
            | {
                "group.id": f"jb.orders.{uuid.uuid4().hex[:12]}",  # required by librdkafka; never joined
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 200,
            }
        )
        self._orders: dict[str, OrderEvent] = {}
        self._by_reference: dict[str, str] = {}
        self._listeners: list[OrderListener] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.caught_up = asyncio.Event()
        self.records = 0

    async def start(self, catch_up_s: float = 5.0) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"order-book-{self.topic}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.caught_up.wait(), catch_up_s)
        if not self.caught_up.is_set():
            log.warning("orders not read to their end yet; going on", topic=self.topic, waited_s=catch_up_s)

    def get(self, order_id: str) -> OrderEvent | None:
        return self._orders.get(order_id)

    def by_reference(self, client_reference: str) -> OrderEvent | None:
        """The order made with this idempotency key (its client reference at the airline), if any is known."""
        order_id = self._by_reference.get(client_reference)
        return self._orders.get(order_id) if order_id is not None else None

    def __len__(self) -> int:
        return len(self._orders)

    def subscribe(self, listener: OrderListener) -> Callable[[], None]:
        """Call ``listener`` with every change read or noted from now on; returns the unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def note(self, event: OrderEvent) -> None:
        """What this process itself published (or was told by a reply) ahead of reading it back."""
        self._apply(event)

    async def wait_for(self, order_id: str, timeout_s: float) -> OrderEvent | None:
        """The order, waiting up to ``timeout_s`` for it to be read (made moments ago through another process)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout_s
        async with self._changed:
            while order_id not in self._orders:
                left = give_up - loop.time()
                if left <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), left)
        return self._orders[order_id]

    def _apply(self, event: OrderEvent) -> bool:
        known = self._orders.get(event.order_id)
        if known is not None and known.at > event.at:
            return False  # an older state read after a newer one was noted
        if known == event:
            return False
        self._orders[event.order_id] = event
        if event.order.client_reference:
            self._by_reference[event.order.client_reference] = event.order_id
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:  # noqa: BLE001 - one listener's bug must not stop the others
                log.error("order listener failed", order_id=event.order_id, error=repr(exc))
        asyncio.get_running_loop().create_task(self._notify_waiters())
        return True

    async def _notify_waiters(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _run(self) -> None:
        def done() -> None:
            log.info("orders read", topic=self.topic, orders=len(self._orders))

        await read_whole_and_follow(
            self._consumer, self.topic, self._read, self.caught_up, what="orders", on_caught_up=done
        )

    async def _read(self, value: bytes | None) -> None:
        if value is None:
            return  # a tombstone: an order deleted on purpose; keep what we know
        try:
            event = await self._codec.decode(value, OrderEvent)
        except JetbridgeError as exc:
            log.warning("undecodable order record skipped", error=exc.message)
            return
        self.records += 1
        self._apply(event)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.close()
