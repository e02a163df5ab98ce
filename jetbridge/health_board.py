"""The airlines' shared health: ``jb.airline-health.v1``, compacted, one record per airline (its key).

Connector workers publish their circuit breakers' transitions, the airlines' ``Retry-After`` holds and their
quarantines (an airline not called at all: its MCP tools differ from the approved pin, or its host resolves to
an address the registry does not allow) to it; every connector process, the router and the bridge read it
whole from the beginning and then follow it, so they all go by the same state. ``HealthBoard`` is that reader
(and, given a producer, the writer): no consumer group and nothing committed, like the bridge's reply
correlator, because every reader needs every airline.

Records can arrive out of order between writers (two instances reporting at once): for each airline the
board keeps the state that began last (``since``), the latest throttle and the quarantine reported last
(``quarantine_changed_at``), each on its own, whatever order they came in. Compaction keeps only an airline's
last record, so every record a board publishes carries the latest quarantine it knows, and a quarantine report
carries the latest circuit state: the last record alone is the whole state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from jetbridge.errors import JetbridgeError
from jetbridge.kafka import AsyncConsumer, AsyncProducer, read_whole_and_follow
from jetbridge.log import get_logger
from schemas.codec import AvroCodec
from schemas.models import AirlineHealth, CircuitState, now_utc

__all__ = ["NEVER", "HealthBoard", "merge", "shared_board"]

log = get_logger(__name__)

Listener = Callable[[AirlineHealth], None]
_RETRY_S = 2.0
# The start of a circuit state nobody reported (in a quarantine report made before any): no breaker adopts it.
NEVER = datetime.fromtimestamp(0, UTC)


def merge(old: AirlineHealth | None, new: AirlineHealth) -> AirlineHealth:
    """The state that began last, with the later of the two throttles and the quarantine reported last."""
    if old is None:
        return new
    newer = new if (new.since, new.reported_at) >= (old.since, old.reported_at) else old
    throttles = [t for t in (old.throttled_until, new.throttled_until) if t is not None]
    throttled = max(throttles) if throttles else None
    quarantined = max(old, new, key=_quarantine_order)
    update: dict[str, Any] = {}
    if newer.throttled_until != throttled:
        update["throttled_until"] = throttled
    if _quarantine_order(newer) != _quarantine_order(quarantined):
        update |= {"quarantine": quarantined.quarantine, "quarantine_changed_at": quarantined.quarantine_changed_at}
    return newer.model_copy(update=update) if update else newer


def _quarantine_order(health: AirlineHealth) -> tuple[datetime, str]:
    # The later report wins; the reason only breaks a tie, so that the order records arrive in never matters.
    return health.quarantine_changed_at or NEVER, health.quarantine or ""


class HealthBoard:
    """The latest ``AirlineHealth`` of every airline, kept current from the topic; publishes when given a
    producer. ``start`` returns once the topic was read to its end (or ``catch_up_s`` passed); a topic that
    does not exist yet is looked for again in the background."""

    def __init__(
        self,
        topic: str,
        codec: AvroCodec,
        consumer_config: dict[str, Any],
        *,
        producer: AsyncProducer | None = None,
    ) -> None:
        self.topic = topic
        self._codec = codec
        self._producer = producer
        self._consumer = AsyncConsumer(
            consumer_config
            | {
                "group.id": f"jb.airline-health.{uuid.uuid4().hex[:12]}",  # required by librdkafka; never joined
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 500,
            }
        )
        self._latest: dict[str, AirlineHealth] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.caught_up = asyncio.Event()
        self.records = 0

    # ---- reading ----
    async def start(self, catch_up_s: float = 5.0) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"health-board-{self.topic}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.caught_up.wait(), catch_up_s)
        if not self.caught_up.is_set():
            log.warning("airline health not read to its end yet; going on", topic=self.topic, waited_s=catch_up_s)

    def start_soon(self) -> None:
        """Start reading in the background without waiting."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"health-board-{self.topic}")

    def get(self, airline: str) -> AirlineHealth | None:
        return self._latest.get(airline)

    def all(self) -> dict[str, AirlineHealth]:
        return dict(self._latest)

    def subscribe(self, airline: str, listener: Listener) -> None:
        """Call ``listener`` with every record of ``airline`` read from now on (and the latest one at once)."""
        self._listeners.setdefault(airline, []).append(listener)
        if airline in self._latest:
            listener(self._latest[airline])

    def skip_reason(self, airline: str, deadline: datetime) -> str | None:
        """Why a call to ``airline`` should not be sent at all, or None: its circuit is open, or it asked not to
        be called before ``deadline`` (the router's question)."""
        health = self._latest.get(airline)
        if health is None:
            return None
        if health.state is CircuitState.OPEN and health.until is not None and time.time() < health.until.timestamp():
            return "circuit_open"
        if health.throttled_until is not None and health.throttled_until >= deadline:
            return "airline_throttled"
        return None

    async def _run(self) -> None:
        def done() -> None:
            log.info("airline health read", topic=self.topic, airlines=sorted(self._latest))

        await read_whole_and_follow(
            self._consumer,
            self.topic,
            self._apply,
            self.caught_up,
            what="airline health",
            batch=100,
            poll_s=1.0,
            retry_s=_RETRY_S,
            on_caught_up=done,
        )

    async def _apply(self, value: bytes | None) -> None:
        if value is None:
            return  # a tombstone: the airline's record was deleted on purpose; keep what we know
        try:
            record = await self._codec.decode(value, AirlineHealth)
        except JetbridgeError as exc:
            log.warning("undecodable airline health record skipped", error=exc.message)
            return
        self.records += 1
        self._latest[record.airline] = merge(self._latest.get(record.airline), record)
        for listener in self._listeners.get(record.airline, []):
            try:
                listener(record)
            except Exception as exc:  # noqa: BLE001 - one listener's bug must not stop the others
                log.error("airline health listener failed", airline=record.airline, error=repr(exc))

    # ---- writing ----
    def publish(self, record: AirlineHealth) -> None:
        """Write ``record`` in the background (a breaker's transition must never wait for the broker), with the
        latest quarantine this board knows when the record says none newer."""
        if self._producer is None:
            return
        producer = self._producer
        known = self._latest.get(record.airline)
        if known is not None and (known.quarantine_changed_at or NEVER) > (record.quarantine_changed_at or NEVER):
            record = record.model_copy(
                update={"quarantine": known.quarantine, "quarantine_changed_at": known.quarantine_changed_at}
            )
        # Known here at once, not a broker round trip later: a record published meanwhile carries it too.
        self._latest[record.airline] = merge(known, record)

        async def send() -> None:
            try:
                await producer.send(
                    self.topic, key=record.airline, value=self._codec.encode(self.topic, record), headers=[]
                )
            except JetbridgeError as exc:
                log.warning("airline health not published", airline=record.airline, error=exc.message)

        task = asyncio.get_running_loop().create_task(send())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def report_quarantine(self, airline: str, reason: str | None, *, reporter: str) -> AirlineHealth:
        """Publish that ``reporter`` quarantined ``airline`` for ``reason`` (None: lifted it): the latest record
        known of the airline (a closed circuit when none) with the quarantine set or cleared."""
        now = now_utc()
        known = self._latest.get(airline) or AirlineHealth(
            airline=airline, state=CircuitState.CLOSED, since=NEVER, reporter=reporter, reported_at=now
        )
        # Later than the report it follows even within one millisecond (Avro keeps no finer), so it wins the merge.
        changed = max(now, (known.quarantine_changed_at or NEVER) + timedelta(milliseconds=1))
        record = known.model_copy(
            update={"quarantine": reason, "quarantine_changed_at": changed, "reporter": reporter, "reported_at": now}
        )
        self.publish(record)
        return record

    async def close(self) -> None:
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=5.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.close()


_SHARED: dict[str, HealthBoard] = {}


def shared_board(topic: str, codec: AvroCodec, consumer_config: dict[str, Any]) -> HealthBoard:
    """One read-only board per topic in this process, started in the background on first use: for processes,
    like the faust router, that have no start-up hook of ours."""
    board = _SHARED.get(topic)
    if board is None:
        board = HealthBoard(topic, codec, consumer_config)
        board.start_soon()
        _SHARED[topic] = board
    return board
