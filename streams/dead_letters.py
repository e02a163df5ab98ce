"""The stream stages' Dead Letter Channel: an event a stage cannot handle goes to ``jb.dlq.v1`` with its
original bytes and where it came from, and the stage moves on (the rule itself is ``jetbridge/dlq.py``).

One channel per stage, so a DLQ that cannot be written stops only that stage's partitions: its agent
waits in ``publish`` rather than acknowledge an event that was neither handled nor dead-lettered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jetbridge.dlq import DeadLetterChannel, DlqHeaders, dead_letter
from jetbridge.kafka import decode_headers
from jetbridge.log import get_logger
from jetbridge.metrics import ERRORS
from schemas.models import DeadLetter
from streams.context import Send, StreamContext

__all__ = ["DeadLetters"]

log = get_logger(__name__)


class DeadLetters:
    """The Dead Letter Channel of each stream stage, fed with faust events."""

    def __init__(self, ctx: StreamContext, send: Send, stages: Iterable[str]) -> None:
        self._ctx = ctx
        self._send = send
        self.channels = {stage: DeadLetterChannel(self._write, stage=stage) for stage in stages}

    async def _write(self, key: bytes | str | None, record: DeadLetter, headers: DlqHeaders) -> None:
        codec = await self._ctx.codec()
        dlq = self._ctx.names.dlq
        await self._send(dlq, key, codec.encode(dlq, record), headers)

    async def publish(self, event: Any, stage: str, exc: BaseException) -> None:
        """Dead-letter ``event`` (a faust event) for ``exc``; returns once it is written."""
        message = event.message
        record, dlq_headers = dead_letter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=decode_headers(message.headers),
            stage=stage,
            error=exc,
        )
        ERRORS.labels(stage, record.error_code).inc()
        await self.channels[stage].publish(record, dlq_headers, message.key)
        log.warning(
            "event dead-lettered",
            stage=stage,
            error_code=record.error_code,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
        )

    def stalled(self) -> dict[str, dict[str, Any]]:
        """The stages whose channel cannot write, with its state (for the health answer)."""
        return {stage: c.state() for stage, c in self.channels.items() if c.stalled}
