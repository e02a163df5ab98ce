"""The Dead Letter Channel never drops a record: it retries until written, says it is stalled meanwhile, and a
shutdown ends the retry with an error so the source event is not committed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from itertools import islice

import pytest
from structlog.testing import capture_logs

from jetbridge.dlq import Backoff, DeadLetterChannel, dead_letter
from jetbridge.errors import AirlineRejected, KafkaError
from schemas.models import DeadLetter

FAST = Backoff(initial_s=0.01, multiplier=2.0, max_s=0.02)
PAYLOAD = b"\x00secret-passenger-bytes"


class FlakyDlq:
    """A DLQ send that fails ``failures`` times, then writes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.written: list[tuple[bytes | str | None, DeadLetter, list[tuple[str, bytes]]]] = []

    async def __call__(self, key: bytes | str | None, record: DeadLetter, headers: Sequence[tuple[str, bytes]]) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise KafkaError("produce to jb.dlq.v1 failed: Broker: Unknown topic or partition")
        self.written.append((key, record, list(headers)))


def record() -> tuple[DeadLetter, list[tuple[str, bytes]]]:
    return dead_letter(
        topic="jb.airline.BA.calls.v1",
        partition=2,
        offset=41,
        key=b"req-1",
        value=PAYLOAD,
        headers={"request_id": "req-1", "correlation_id": "req-1"},
        stage="connector.BA",
        error=AirlineRejected("fare not found"),
    )


async def wait_until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.005)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert list(islice(Backoff().delays(), 8)) == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


async def test_publish_retries_until_the_write_succeeds_and_writes_once() -> None:
    send = FlakyDlq(failures=3)
    channel = DeadLetterChannel(send, stage="connector.BA", backoff=FAST)
    rec, headers = record()
    await channel.publish(rec, headers, b"req-1")
    assert send.attempts == 4
    assert len(send.written) == 1
    key, written, sent_headers = send.written[0]
    assert key == b"req-1"
    assert written.payload == PAYLOAD
    assert ("dlq.error_code", b"airline_rejected") in sent_headers
    assert not channel.stalled
    assert channel.state() == {"stalled": False, "stalled_since": None, "pending": 0, "last_error": None}


async def test_channel_reports_stalled_while_the_write_keeps_failing() -> None:
    send = FlakyDlq(failures=10**9)
    channel = DeadLetterChannel(send, stage="connector.BA", backoff=FAST)
    rec, headers = record()
    publishing = asyncio.create_task(channel.publish(rec, headers, b"req-1"))
    await wait_until(lambda: send.attempts >= 3)
    assert not publishing.done(), "publish must not return while the record is unwritten"
    state = channel.state()
    assert state["stalled"] is True
    assert state["pending"] == 1
    assert state["stalled_since"] is not None
    assert "Unknown topic" in state["last_error"]
    send.failures = send.attempts  # the DLQ accepts writes again
    await asyncio.wait_for(publishing, 2.0)
    assert len(send.written) == 1
    assert channel.state()["stalled"] is False


async def test_cancelling_a_stalled_publish_raises_and_clears_the_stall() -> None:
    send = FlakyDlq(failures=10**9)
    channel = DeadLetterChannel(send, stage="connector.BA", backoff=FAST)
    rec, headers = record()
    publishing = asyncio.create_task(channel.publish(rec, headers, None))
    await wait_until(lambda: channel.stalled)
    publishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await publishing
    assert send.written == []
    assert channel.pending == 0


async def test_closing_ends_the_retry_with_an_error_but_a_later_publish_still_gets_one_attempt() -> None:
    send = FlakyDlq(failures=10**9)
    channel = DeadLetterChannel(send, stage="connector.BA", backoff=Backoff(initial_s=30.0, max_s=30.0))
    rec, headers = record()
    publishing = asyncio.create_task(channel.publish(rec, headers, None))
    await wait_until(lambda: channel.stalled)
    channel.close()
    with pytest.raises(KafkaError, match="unwritten"):
        await asyncio.wait_for(publishing, 1.0)  # the 30 s backoff is cut short
    assert not channel.stalled

    send.failures = 0
    await channel.publish(rec, headers, None)
    assert len(send.written) == 1, "closing stops retries, not healthy writes"


async def test_every_failure_is_logged_with_its_code_and_no_payload() -> None:
    send = FlakyDlq(failures=2)
    channel = DeadLetterChannel(send, stage="connector.BA", backoff=FAST)
    rec, headers = record()
    with capture_logs() as logs:
        await channel.publish(rec, headers, b"req-1")
    failures = [e for e in logs if e["log_level"] == "error"]
    assert len(failures) == 2
    assert all(e["error_code"] == "kafka" and e["original_offset"] == 41 for e in failures)
    assert [e["attempt"] for e in failures] == [1, 2]
    assert "secret-passenger" not in repr(logs)
