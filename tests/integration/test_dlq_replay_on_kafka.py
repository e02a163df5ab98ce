"""``jetbridge dlq`` on a real broker and registry, on topics of its own (a unique prefix): a dry run sends
nothing, a replay re-drives exactly the selected dead letters byte-for-byte, a second one changes nothing,
``--force`` sends them again; the rate cap holds and the uncapped rate is printed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from confluent_kafka import Message, Producer

from jetbridge.dlq import dead_letter
from jetbridge.dlq_ops import DlqFilter, DlqStore, ReplayOptions, replay
from jetbridge.errors import AirlineBadResponse, AirlineUnavailable, DecodeError, JetbridgeError
from jetbridge.kafka import PARTITIONER, decode_headers
from jetbridge.settings import REPO_ROOT
from schemas.models import DlqReplay, now_utc
from tests.support import factories as f
from tests.support.streams_worker import TopicSpace

pytestmark = pytest.mark.kafka

POISON = b"\x00\x00\x00\x00\x09 poison"


@pytest.fixture
async def store(space: TopicSpace) -> AsyncIterator[DlqStore]:
    async with DlqStore(space.settings) as opened:
        yield opened


class Letters:
    """Dead letters written straight to the space's DLQ topic, as the stages write them."""

    def __init__(self, space: TopicSpace) -> None:
        self.space = space
        self._pending: list[tuple[str, bytes, list[tuple[str, str | bytes | None]]]] = []

    def call(self, airline: str, error: JetbridgeError, *, expired: bool = False) -> tuple[str, bytes, dict[str, str]]:
        assert self.space.codec is not None
        request_id = str(uuid.uuid4())
        deadline = now_utc() + (timedelta(hours=-1) if expired else timedelta(hours=1))
        topic = self.space.names.calls(airline)
        payload = self.space.codec.encode(
            topic, f.airline_call(request_id=request_id, correlation_id=request_id, airline=airline, deadline=deadline)
        )
        headers = {
            "request_id": request_id,
            "correlation_id": request_id,
            "client_id": "it",
            "deadline_ms": str(int(deadline.timestamp() * 1000)),
            "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
        }
        return self._letter(topic, request_id, payload, headers, f"connector.{airline}", error)

    def poison(self) -> tuple[str, bytes, dict[str, str]]:
        request_id = str(uuid.uuid4())
        headers = {"request_id": request_id}
        return self._letter(self.space.names.requests, request_id, POISON, headers, "router", DecodeError("poison"))

    def _letter(
        self, topic: str, request_id: str, payload: bytes, headers: dict[str, str], stage: str, error: JetbridgeError
    ) -> tuple[str, bytes, dict[str, str]]:
        record, dlq_headers = dead_letter(
            topic=topic,
            partition=0,
            offset=0,
            key=request_id.encode(),
            value=payload,
            headers=headers,
            stage=stage,
            error=error,
        )
        assert self.space.codec is not None
        value = self.space.codec.encode(self.space.names.dlq, record)
        self._pending.append((request_id, value, list(dlq_headers)))
        return request_id, payload, headers

    async def write(self) -> None:
        pending, self._pending = self._pending, []

        def produce() -> None:
            producer = Producer(
                {
                    "bootstrap.servers": self.space.settings.kafka_bootstrap_servers,
                    "partitioner": PARTITIONER,
                    "linger.ms": 20,
                }
            )
            for key, value, headers in pending:
                while True:
                    try:
                        producer.produce(self.space.names.dlq, key=key, value=value, headers=headers)
                        break
                    except BufferError:
                        producer.poll(0.1)
            assert producer.flush(30) == 0

        await asyncio.to_thread(produce)


def jetbridge(space: TopicSpace, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=space.settings.kafka_bootstrap_servers,
        SCHEMA_REGISTRY_URL=space.settings.schema_registry_url,
        JB_TOPIC_PREFIX=space.prefix,
        USER="it-operator",
    )
    return subprocess.run(
        [sys.executable, "-m", "jetbridge.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def messages(space: TopicSpace, topic: str, at_least: int, settle_s: float = 1.5) -> list[Message]:
    """Every message on ``topic`` once there are ``at_least``, then a moment more so extras would show."""
    await asyncio.to_thread(space.read_all, topic, until=lambda found: len(found) >= at_least, timeout_s=20)
    return await asyncio.to_thread(space.read_all, topic, until=lambda _: False, timeout_s=settle_s)


async def test_dry_run_then_replay_re_drives_exactly_the_filtered_dead_letters_once(
    space: TopicSpace, store: DlqStore
) -> None:
    names = space.names
    letters = Letters(space)
    vs = [letters.call("VS", AirlineBadResponse("VS answered malformed JSON")) for _ in range(4)]
    expired = letters.call("VS", AirlineBadResponse("VS answered malformed JSON"), expired=True)
    for _ in range(2):
        letters.call("BA", AirlineUnavailable("BA answered 503 after 3 tries"))
        letters.poison()
    await letters.write()

    # list: every record, counts by code
    listing = jetbridge(space, "dlq", "list")
    assert listing.returncode == 0, listing.stderr
    assert f"9 dead letters on {names.dlq}" in listing.stdout
    assert "airline_bad_response" in listing.stdout
    assert "decode" in listing.stdout

    # dry run: says what would happen, sends and records nothing
    dry = jetbridge(space, "dlq", "replay", "--code", "airline_bad_response", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Would send (4)" in dry.stdout
    assert "Would skip (1)" in dry.stdout
    assert "deadline passed" in dry.stdout
    assert "nothing was sent" in dry.stdout
    for request_id, _, _ in vs:
        assert request_id in dry.stdout  # the key column
    await asyncio.sleep(1.0)
    assert space.read_all(names.calls("VS"), until=lambda _: False, timeout_s=1.0) == []
    assert space.read_all(names.dlq_replays, until=lambda _: False, timeout_s=0.5) == []

    # replay: exactly the four live VS calls, byte-for-byte, with their key and headers
    first = jetbridge(space, "dlq", "replay", "--code", "airline_bad_response")
    assert first.returncode == 0, first.stderr + first.stdout
    sent = await messages(space, names.calls("VS"), 4)
    assert sorted(m.value() or b"" for m in sent) == sorted(p for _, p, _ in vs)
    by_key = {(m.key() or b"").decode(): m for m in sent}
    assert set(by_key) == {r for r, _, _ in vs}
    replayed_from: set[str] = set()
    for request_id, payload, headers in vs:
        message = by_key[request_id]
        assert message.value() == payload
        got = decode_headers(message.headers())
        assert {k: got[k] for k in headers} == headers  # original headers, unchanged
        assert got["dlq.replay_id"]
        replayed_from.add(got["dlq.replayed_from"])
    assert expired[0] not in by_key
    assert space.read_all(names.calls("BA"), until=lambda _: False, timeout_s=0.5) == []
    assert space.read_all(names.requests, until=lambda _: False, timeout_s=0.5) == []

    # the replay records: one per replayed dead letter, keyed by its id, pointing at what was written
    ledger = await store.replays()
    assert set(ledger) == replayed_from
    targets = {(m.partition(), m.offset()) for m in sent}
    assert {(r.target_partition, r.target_offset) for r in ledger.values()} == targets
    assert {r.operator for r in ledger.values()} == {"it-operator"}
    assert all(isinstance(r, DlqReplay) and r.target_topic == names.calls("VS") for r in ledger.values())

    # again: nothing happens
    read = await store.dead_letters(DlqFilter(codes=frozenset({"airline_bad_response"})))
    again = await replay(store, read.entries, ReplayOptions())
    assert len(again.replayed) == 0
    assert again.reasons(again.skipped) == {"already replayed": 4, "deadline passed": 1}
    await asyncio.sleep(1.0)
    assert len(space.read_all(names.calls("VS"), until=lambda _: False, timeout_s=1.0)) == 4

    # list shows them replayed; show decodes the original event, or says it is poison
    listing = jetbridge(space, "dlq", "list", "--code", "airline_bad_response")
    assert "by it-operator" in listing.stdout
    some_id = sorted(ledger)[0]
    shown = jetbridge(space, "dlq", "show", some_id)
    assert shown.returncode == 0, shown.stderr
    assert "AirlineCall, decoded with the current schema" in shown.stdout
    assert "by it-operator" in shown.stdout
    poison_ids = [str(e.id) for e in (await store.dead_letters(DlqFilter(codes=frozenset({"decode"})))).entries]
    assert len(poison_ids) == 2
    shown = jetbridge(space, "dlq", "show", poison_ids[0])
    assert "It is poison: a replay would fail again" in shown.stdout

    # poison fails again and is never sent
    bad = jetbridge(space, "dlq", "replay", "--code", "decode")
    assert bad.returncode == 0, bad.stderr
    assert "does not decode (poison) 2" in bad.stdout

    # --force: the same four again, recorded as forced
    forced = jetbridge(space, "dlq", "replay", "--code", "airline_bad_response", "--force")
    assert forced.returncode == 0, forced.stderr
    sent = await messages(space, names.calls("VS"), 8)
    assert len(sent) == 8
    assert sorted(m.value() or b"" for m in sent) == sorted([p for _, p, _ in vs] * 2)
    assert all(r.forced for r in (await store.replays()).values())
    assert space.read_all(names.requests, until=lambda _: False, timeout_s=0.5) == []


async def test_no_matching_dead_letters_are_said_in_words(space: TopicSpace) -> None:
    empty = jetbridge(space, "dlq", "list")
    assert empty.returncode == 0
    assert f"The dead-letter topic {space.names.dlq} is empty" in empty.stdout
    letters = Letters(space)
    letters.poison()
    await letters.write()
    none = jetbridge(space, "dlq", "replay", "--code", "airline_timeout")
    assert none.returncode == 0
    assert f"No dead letters on {space.names.dlq} match --code airline_timeout (1 read)" in none.stdout
    missing = jetbridge(space, "dlq", "show", "2:999")
    assert missing.returncode == 1
    assert "no dead letter 2:999" in missing.stderr


async def test_the_rate_cap_holds_and_the_uncapped_rate_is_printed(
    space: TopicSpace, store: DlqStore, capsys: pytest.CaptureFixture[str]
) -> None:
    capped, uncapped = 250, 5000
    letters = Letters(space)
    for _ in range(capped):
        letters.call("VS", AirlineBadResponse("capped"))
    for _ in range(uncapped):
        letters.call("BA", AirlineUnavailable("uncapped"))
    await letters.write()

    read = await store.dead_letters(DlqFilter(airline="VS"))
    assert len(read.entries) == capped
    slow = await replay(store, read.entries, ReplayOptions(rate=50))
    assert len(slow.replayed) == capped
    sent = await messages(space, space.names.calls("VS"), capped, settle_s=0.5)
    stamps = sorted(m.timestamp()[1] for m in sent)
    span_s = (stamps[-1] - stamps[0]) / 1000
    measured = (len(stamps) - 1) / span_s
    assert span_s >= 4.0
    assert 45 <= measured <= 55, f"{measured:.1f}/s by the records' timestamps"
    assert 45 <= slow.send_rate <= 55

    read = await store.dead_letters(DlqFilter(airline="BA"))
    assert len(read.entries) == uncapped
    fast = await replay(store, read.entries, ReplayOptions())
    assert len(fast.replayed) == uncapped
    assert len(await messages(space, space.names.calls("BA"), uncapped, settle_s=0.5)) == uncapped
    with capsys.disabled():
        print(
            f"\n[dlq replay] --rate 50: {measured:.1f} records/s over {span_s:.1f} s by the records' timestamps "
            f"({slow.send_rate:.1f}/s by the tool); uncapped: {len(fast.replayed)} replayed at {fast.rate:,.0f} "
            f"records/s checked and sent ({fast.send_rate:,.0f}/s sending alone); {read.read} dead letters read "
            f"in {read.seconds:.2f} s"
        )
    assert fast.rate > 300  # a sanity floor only: the machine is shared
