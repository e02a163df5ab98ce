"""Request-reply correlation for one bridge instance (the Return Address pattern).

Each bridge instance has its own id, written into every request as ``reply_to``; the aggregator copies
it into the reply and its header. Every instance reads all partitions of the reply topic from the end
(no consumer group, nothing committed: a reply is only useful to the instance still waiting for it),
skips replies addressed to other instances by header alone, and resolves its own waiting calls. A second
reply for the same request finds no waiter and is dropped, so a caller never sees two.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Generic

from typing_extensions import TypeVar

from jetbridge.errors import DecodeError, SchemaRegistryError
from jetbridge.kafka import HEADER_REPLY_TO, AsyncConsumer, assign_at_end, decode_headers
from jetbridge.log import get_logger
from schemas.codec import AvroCodec
from schemas.models import Event, SearchReply

__all__ = ["ReplyCorrelator"]

log = get_logger(__name__)


R = TypeVar("R", bound=Event, default=SearchReply)


class ReplyCorrelator(Generic[R]):
    """Waits for the replies of one reply topic: search replies (`SearchReply`, the default) or order replies
    (`OrderReply`, ``jb.order-replies.v1``); a model with a ``reply_to`` field."""

    def __init__(
        self,
        *,
        instance_id: str,
        topic: str,
        codec: AvroCodec,
        consumer_config: dict[str, Any],
        model: type[R] = SearchReply,  # type: ignore[assignment]  # the default R is SearchReply
    ) -> None:
        self.instance_id = instance_id
        self._topic = topic
        self._codec = codec
        self._model = model
        self._consumer = AsyncConsumer(
            consumer_config
            | {
                "group.id": f"jb.bridge.{instance_id}",  # required by librdkafka; never joined or committed
                "enable.auto.commit": False,
                # Answered as soon as a reply arrives; see connectors/worker.py on why not shorter.
                "fetch.wait.max.ms": 500,
                "fetch.min.bytes": 1,
            }
        )
        self._waiting: dict[str, asyncio.Future[R]] = {}
        self._task: asyncio.Task[None] | None = None
        self.replies_seen = 0

    async def start(self, wait_s: float = 30.0) -> None:
        """Start reading at the current end of every partition; returns once positions are fixed.

        Waits (up to ``wait_s``) for a broker that is still starting or a topic whose partitions have no
        leader yet, as right after the stack created it.
        """
        await assign_at_end(self._consumer, self._topic, what="reply", wait_s=wait_s)
        self._task = asyncio.create_task(self._run(), name="reply-correlator")

    def expect(self, request_id: str) -> asyncio.Future[R]:
        """Register interest before the request is produced, so a fast reply cannot be missed."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def _run(self) -> None:
        while True:
            try:
                messages = await self._consumer.consume(500, 0.25)  # returns as soon as a reply is there
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must survive broker hiccups
                log.warning("reply consumer error", error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            for message in messages:
                if message.error() is not None:
                    log.warning("reply topic error", error=str(message.error()))
                    continue
                await self._dispatch(message)

    async def _dispatch(self, message: Any) -> None:
        headers = decode_headers(message.headers())
        if headers.get(HEADER_REPLY_TO) not in (None, self.instance_id):
            return
        request_id = headers.get("request_id") or (message.key() or b"").decode("utf-8", "replace")
        future = self._waiting.get(request_id)
        if future is None or future.done():
            return
        try:
            reply = await self._codec.decode(message.value(), self._model)
        except (DecodeError, SchemaRegistryError) as exc:
            log.error("undecodable reply", request_id=request_id, error=str(exc))
            return
        if getattr(reply, "reply_to", None) != self.instance_id:
            return
        self.replies_seen += 1
        self._waiting.pop(request_id, None)
        future.set_result(reply)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        await self._consumer.close()
