"""The replay tool without a broker: ids, times and filters; what a replay decides for each dead letter; and
the sender's bookkeeping (every delivered event gets its replay record, nothing else does)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from confluent_kafka import Producer

from jetbridge.dlq import dead_letter
from jetbridge.dlq_ops.replay import (
    HEADER_REPLAY_ID,
    HEADER_REPLAYED_FROM,
    ReplayOptions,
    ReplayReport,
    ReplaySender,
    Step,
    Verdict,
    deadline_of,
    plan_replay,
)
from jetbridge.dlq_ops.selection import DlqEntry, DlqFilter, DlqId, codes_of, parse_when
from jetbridge.dlq_ops.store import contract_of
from jetbridge.errors import AirlineBadResponse, InvalidInput, SchemaRegistryError
from jetbridge.topics import TopicNames
from schemas.codec import AvroCodec
from schemas.models import (
    AggregatorControl,
    AirlineCall,
    AirlineResponse,
    DeadLetter,
    DlqReplay,
    Event,
    SearchRequest,
    now_utc,
)
from schemas.registry import SchemaRegistryClient
from tests.support import factories as f
from tests.support.registry_double import RegistryDouble

NAMES = TopicNames("t1.")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POISON = b"\x00\x00\x00\x00\x09 poison"
FIRST = DlqId(0, 1)


# ---- ids, times, filters ----
def test_a_dead_letter_id_is_partition_colon_offset() -> None:
    assert DlqId.parse("2:41") == DlqId(2, 41)
    assert DlqId.parse(" 0 : 7 ") == DlqId(0, 7)
    assert str(DlqId(2, 41)) == "2:41"
    assert sorted([DlqId(1, 9), DlqId(0, 10), DlqId(1, 2)]) == [DlqId(0, 10), DlqId(1, 2), DlqId(1, 9)]


@pytest.mark.parametrize("text", ["2-41", "a:b", "", "2:", ":41", "-1:3", "1:2:3"])
def test_anything_else_is_refused_with_the_form_to_use(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"<partition>:<offset>"):
        DlqId.parse(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("1d", NOW - timedelta(days=1)),
        ("45s", NOW - timedelta(seconds=45)),
        ("1w", NOW - timedelta(days=7)),
        ("2026-11-25", datetime(2026, 11, 25, tzinfo=UTC)),
        ("2026-11-25T10:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25 10:00:30", datetime(2026, 11, 25, 10, 0, 30, tzinfo=UTC)),
        ("2026-11-25T10:00:00Z", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T11:00:00+01:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),
    ],
)
def test_times_are_ago_or_iso_and_utc_unless_they_say_otherwise(text: str, expected: datetime) -> None:
    assert parse_when(text, now=NOW) == expected


def test_a_time_that_is_neither_says_which_option_and_the_forms() -> None:
    with pytest.raises(InvalidInput, match=r"--until.*30m, 2h, 1d"):
        parse_when("yesterday", now=NOW, option="--until")


def entry(
    *,
    topic: str = NAMES.calls("VS"),
    stage: str = "connector.VS",
    code: str = "airline_bad_response",
    failed_at: datetime = NOW,
    request_id: str = "req-1",
    at: DlqId = FIRST,
    payload: bytes | None = b"payload",
    key: bytes | None = b"req-1",
    headers: dict[str, str] | None = None,
) -> DlqEntry:
    record = DeadLetter(
        original_topic=topic,
        original_partition=0,
        original_offset=5,
        original_key=key,
        original_headers=headers if headers is not None else {"request_id": request_id},
        payload=payload,
        stage=stage,
        error_code=code,
        error_message="m",
        retriable=False,
        attempts=1,
        request_id=request_id,
        first_failed_at=failed_at,
        failed_at=failed_at,
    )
    return DlqEntry(at, record)


def test_filters_select_by_airline_stage_code_time_and_request() -> None:
    vs_call = entry()
    router = entry(topic=NAMES.requests, stage="router", code="decode", request_id="req-2")
    late = entry(failed_at=NOW + timedelta(hours=1), code="airline_unavailable", at=DlqId(1, 3))
    assert DlqFilter().matches(router, NAMES)
    assert DlqFilter(airline="vs").matches(vs_call, NAMES)
    assert not DlqFilter(airline="BA").matches(vs_call, NAMES)
    # The airline's calls topic counts even when another stage wrote the dead letter.
    assert DlqFilter(airline="VS").matches(entry(stage="router"), NAMES)
    assert DlqFilter(stage="connector").matches(vs_call, NAMES)
    assert DlqFilter(stage="connector.VS").matches(vs_call, NAMES)
    assert not DlqFilter(stage="connector").matches(router, NAMES)
    assert not DlqFilter(stage="connector.V").matches(vs_call, NAMES)
    assert DlqFilter(codes=codes_of(["decode,airline_unavailable"])).matches(late, NAMES)
    assert not DlqFilter(codes=frozenset({"decode"})).matches(vs_call, NAMES)
    assert DlqFilter(since=NOW).matches(vs_call, NAMES)  # since is inclusive
    assert not DlqFilter(until=NOW).matches(vs_call, NAMES)  # until is exclusive
    assert DlqFilter(since=NOW + timedelta(minutes=1)).matches(late, NAMES)
    assert DlqFilter(request_id="req-2").matches(router, NAMES)
    assert not DlqFilter(request_id="req-2").matches(vs_call, NAMES)
    assert DlqFilter(ids=frozenset({DlqId(1, 3)})).matches(late, NAMES)
    assert not DlqFilter(ids=frozenset({DlqId(1, 3)})).matches(vs_call, NAMES)


def test_a_filter_describes_itself_as_the_options_that_give_it() -> None:
    assert DlqFilter().empty
    assert DlqFilter().describe() == "(no filter)"
    selection = DlqFilter(codes=frozenset({"decode"}), since=NOW, ids=frozenset({DlqId(0, 4)}))
    assert not selection.empty
    assert selection.describe() == "0:4 --code decode --since 2026-11-25T12:00:00Z"


def test_each_stage_input_has_its_contract_and_nothing_else_has_one() -> None:
    assert contract_of(NAMES.requests, NAMES) is SearchRequest
    assert contract_of(NAMES.calls("VS"), NAMES) is AirlineCall
    assert contract_of(NAMES.calls("ZZ"), NAMES) is AirlineCall  # an airline added later
    assert contract_of(NAMES.responses, NAMES) is AirlineResponse
    assert contract_of(NAMES.control, NAMES) is AggregatorControl
    assert contract_of(NAMES.replies, NAMES) is None
    assert contract_of(NAMES.dlq, NAMES) is None
    assert contract_of("jb.requests.v1", NAMES) is None  # another deployment's topic


# ---- what a replay decides ----
@dataclass
class Codec:
    codec: AvroCodec

    def letter(
        self,
        topic: str,
        event: Event | None,
        *,
        at: DlqId,
        deadline: datetime | None = None,
        raw: bytes | None = None,
        key: bytes | None = b"req-1",
        extra: dict[str, str] | None = None,
    ) -> DlqEntry:
        headers = {"request_id": "req-1", "correlation_id": "req-1", "traceparent": "00-ab-cd-01"}
        if deadline is not None:
            headers["deadline_ms"] = str(int(deadline.timestamp() * 1000))
        record, _ = dead_letter(
            topic=topic,
            partition=1,
            offset=at.offset,
            key=key,
            value=raw if event is None else self.codec.encode(topic, event),
            headers=headers | (extra or {}),
            stage="x",
            error=AirlineBadResponse("malformed"),
        )
        return DlqEntry(at, record)

    async def decode(self, record: DeadLetter) -> Event:
        model = contract_of(record.original_topic, NAMES)
        assert model is not None
        return await self.codec.decode(record.payload, model)


@pytest.fixture
async def codec() -> AsyncIterator[Codec]:
    double = RegistryDouble()
    async with double.client() as http:
        avro = AvroCodec(SchemaRegistryClient("http://registry.test", http))
        for topic, model in (
            (NAMES.requests, SearchRequest),
            (NAMES.calls("VS"), AirlineCall),
            (NAMES.responses, AirlineResponse),
            (NAMES.control, AggregatorControl),
            (NAMES.replies, AirlineResponse),
            (NAMES.dlq_replays, DlqReplay),
        ):
            await avro.register(topic, model)
        yield Codec(avro)


def earlier_replay(dlq_id: str) -> DlqReplay:
    return DlqReplay(
        dlq_id=dlq_id,
        dlq_topic=NAMES.dlq,
        replay_id="11111111-2222",
        replayed_at=NOW - timedelta(minutes=5),
        operator="alice",
        target_topic=NAMES.calls("VS"),
        target_partition=0,
        target_offset=3,
        error_code="airline_bad_response",
    )


async def plan(
    codec: Codec, entries: list[DlqEntry], ledger: dict[str, DlqReplay] | None = None, **options: bool
) -> list[Step]:
    return await plan_replay(
        entries,
        names=NAMES,
        ledger=ledger or {},
        decode=codec.decode,
        options=ReplayOptions(**options),
        replay_id="run-1",
        now=now_utc(),
    )


async def test_a_live_event_is_sent_with_its_headers_plus_where_it_came_from(codec: Codec) -> None:
    soon = now_utc() + timedelta(minutes=5)
    letter = codec.letter(
        NAMES.calls("VS"), f.airline_call(airline="VS"), at=DlqId(2, 9), deadline=soon, extra={"dlq.replay_id": "old"}
    )
    [step] = await plan(codec, [letter])
    assert step.verdict is Verdict.SEND
    assert step.target == NAMES.calls("VS")
    headers = dict(step.headers)
    assert headers[HEADER_REPLAYED_FROM] == b"2:9"
    assert headers[HEADER_REPLAY_ID] == b"run-1"  # an earlier replay's id is replaced, not repeated
    assert [n for n, _ in step.headers].count(HEADER_REPLAY_ID) == 1
    assert headers["traceparent"] == b"00-ab-cd-01"
    assert headers["deadline_ms"] == str(int(soon.timestamp() * 1000)).encode()


async def test_poison_fails_again_and_is_not_sent(codec: Codec) -> None:
    poison = codec.letter(NAMES.requests, None, raw=POISON, at=DlqId(0, 1))
    garbage = codec.letter(NAMES.calls("VS"), None, raw=b"not avro at all", at=DlqId(0, 2))
    nothing = codec.letter(NAMES.responses, None, raw=None, at=DlqId(0, 3))
    steps = await plan(codec, [poison, garbage, nothing], include_expired=True, force=True)
    assert [s.verdict for s in steps] == [Verdict.FAIL] * 3
    assert [s.reason for s in steps] == ["does not decode (poison)", "does not decode (poison)", "no payload"]


async def test_an_event_encoded_for_another_contract_fails_again(codec: Codec) -> None:
    # A valid Avro event, but a SearchRequest on a calls topic: the connector could not decode it either.
    wrong = codec.letter(NAMES.requests, f.search_request(), at=DlqId(0, 1))
    moved = wrong.record.model_copy(update={"original_topic": NAMES.calls("VS")})
    [step] = await plan(codec, [DlqEntry(wrong.id, moved)])
    assert step.verdict is Verdict.FAIL


async def test_an_aggregator_input_without_a_key_fails_again(codec: Codec) -> None:
    keyless = codec.letter(NAMES.responses, f.response("VS"), at=DlqId(0, 1), key=None)
    [step] = await plan(codec, [keyless])
    assert (step.verdict, step.reason) == (Verdict.FAIL, "no key")


async def test_events_past_their_deadline_are_skipped_saying_what_the_stage_would_do(codec: Codec) -> None:
    past = now_utc() - timedelta(minutes=20)
    letters = [
        codec.letter(NAMES.requests, f.search_request(deadline=past), at=DlqId(0, 1), deadline=past),
        codec.letter(NAMES.calls("VS"), f.airline_call(deadline=past), at=DlqId(0, 2), deadline=past),
        codec.letter(NAMES.responses, f.response("VS"), at=DlqId(0, 3), deadline=past),
        codec.letter(NAMES.control, f.plan(["VS"], deadline=past), at=DlqId(0, 4), deadline=past),
    ]
    steps = await plan(codec, letters)
    assert [s.verdict for s in steps] == [Verdict.SKIP] * 4
    assert {s.reason for s in steps} == {"deadline passed"}
    assert "20 min ago" in steps[0].detail
    assert "router would send its plan and call no airline" in steps[0].detail
    assert "answer TIMEOUT without calling the airline" in steps[1].detail
    assert "ignore it" in steps[2].detail
    assert "request_expired" in steps[3].detail
    assert all("--include-expired" in s.detail for s in steps)
    included = await plan(codec, letters, include_expired=True)
    assert [s.verdict for s in included] == [Verdict.SEND] * 4


async def test_the_deadline_comes_from_the_header_else_from_the_payload(codec: Codec) -> None:
    past = now_utc() - timedelta(seconds=30)
    soon = now_utc() + timedelta(seconds=30)
    from_payload = codec.letter(NAMES.calls("VS"), f.airline_call(deadline=past), at=DlqId(0, 1))
    assert deadline_of(from_payload.record, await codec.decode(from_payload.record)) == past
    header_wins = codec.letter(NAMES.calls("VS"), f.airline_call(deadline=past), at=DlqId(0, 2), deadline=soon)
    none = codec.letter(NAMES.responses, f.response("VS"), at=DlqId(0, 3))  # no header, no deadline field
    steps = await plan(codec, [from_payload, header_wins, none])
    assert [s.verdict for s in steps] == [Verdict.SKIP, Verdict.SEND, Verdict.SEND]


async def test_a_dead_letter_replayed_before_is_skipped_unless_forced(codec: Codec) -> None:
    soon = now_utc() + timedelta(minutes=5)
    letter = codec.letter(NAMES.calls("VS"), f.airline_call(), at=DlqId(1, 4), deadline=soon)
    ledger = {"1:4": earlier_replay("1:4")}
    [skipped] = await plan(codec, [letter], ledger)
    assert (skipped.verdict, skipped.reason) == (Verdict.SKIP, "already replayed")
    assert "by alice" in skipped.detail
    assert "--force" in skipped.detail
    [forced] = await plan(codec, [letter], ledger, force=True)
    assert (forced.verdict, forced.forced) == (Verdict.SEND, True)
    # Already replayed wins over everything else: a second run changes nothing, whatever the record holds.
    poison = codec.letter(NAMES.requests, None, raw=POISON, at=DlqId(1, 4))
    assert (await plan(codec, [poison], ledger))[0].reason == "already replayed"


async def test_a_topic_no_stage_reads_is_skipped(codec: Codec) -> None:
    letter = codec.letter(NAMES.replies, f.response("VS"), at=DlqId(0, 1))
    [step] = await plan(codec, [letter])
    assert (step.verdict, step.reason) == (Verdict.SKIP, "not a stage input")


# ---- the sender's bookkeeping ----
class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._where = (topic, partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]


class FakeProducer:
    """librdkafka's Producer as the sender uses it: produce() queues, poll() runs delivery callbacks."""

    def __init__(self, *, failing: frozenset[str] = frozenset(), queue_limit: int = 10_000) -> None:
        self.failing = failing
        self.queue_limit = queue_limit
        self.produced: list[dict[str, Any]] = []
        self.at: list[float] = []
        self._queued: list[tuple[str, Callable[[Any, Any], None]]] = []
        self._ends: Counter[str] = Counter()
        self.buffer_errors = 0

    def produce(self, topic: str, **kwargs: Any) -> None:
        if len(self._queued) >= self.queue_limit:
            self.buffer_errors += 1
            raise BufferError("Local: Queue full")
        self.produced.append({"topic": topic} | kwargs)
        self.at.append(time.monotonic())
        self._queued.append((topic, kwargs["on_delivery"]))

    def poll(self, _timeout: float = 0) -> int:
        queued, self._queued = self._queued, []
        for topic, callback in queued:
            if topic in self.failing:
                callback("Broker: Not enough in-sync replicas", FakeMessage(topic, 0, -1))
            else:
                callback(None, FakeMessage(topic, 2, self._ends[topic]))
                self._ends[topic] += 1
        return len(queued)

    def flush(self, _timeout: float = 0) -> int:
        self.poll()
        return 0

    def to(self, topic: str) -> list[dict[str, Any]]:
        return [p for p in self.produced if p["topic"] == topic]


async def send(
    codec: Codec, steps: list[Step], producer: FakeProducer, *, rate: float = 0.0
) -> tuple[ReplayReport, int]:
    report = ReplayReport(replay_id="run-1", operator="bob", dry_run=False, steps=steps)
    sender = ReplaySender(
        {},
        codec=codec.codec,
        dlq_topic=NAMES.dlq,
        replays_topic=NAMES.dlq_replays,
        replay_id="run-1",
        operator="bob",
        producer=cast(Producer, producer),
    )
    advanced = 0

    def progress() -> None:
        nonlocal advanced
        advanced += 1

    await sender.send(steps, report, rate=rate, progress=progress)
    return report, advanced


async def live_steps(codec: Codec, n: int, topic: str | None = None) -> list[Step]:
    soon = now_utc() + timedelta(minutes=5)
    letters = [
        codec.letter(topic or NAMES.calls("VS"), f.airline_call(request_id=f"req-{i}"), at=DlqId(0, i), deadline=soon)
        for i in range(n)
    ]
    return await plan(codec, letters)


async def test_every_delivered_event_gets_a_replay_record_keyed_by_its_dead_letter(codec: Codec) -> None:
    steps = await live_steps(codec, 5)
    producer = FakeProducer()
    report, advanced = await send(codec, steps, producer)
    sent = producer.to(NAMES.calls("VS"))
    assert [p["value"] for p in sent] == [s.entry.record.payload for s in steps]  # byte-for-byte, in order
    assert [p["key"] for p in sent] == [b"req-1"] * 5
    assert [p["headers"] for p in sent] == [list(s.headers) for s in steps]
    assert len(report.replayed) == 5
    assert advanced == 5
    records = producer.to(NAMES.dlq_replays)
    assert [r["key"] for r in records] == ["0:0", "0:1", "0:2", "0:3", "0:4"]
    first = await codec.codec.decode(records[0]["value"], DlqReplay)
    assert (first.dlq_id, first.replay_id, first.operator) == ("0:0", "run-1", "bob")
    assert (first.target_topic, first.target_partition, first.target_offset) == (NAMES.calls("VS"), 2, 0)
    assert first.error_code == "airline_bad_response"
    assert not first.forced
    assert report.not_delivered == []
    assert report.unrecorded == []


async def test_an_event_the_broker_refuses_is_failed_again_and_not_recorded(codec: Codec) -> None:
    steps = await live_steps(codec, 3)
    producer = FakeProducer(failing=frozenset({NAMES.calls("VS")}))
    report, _ = await send(codec, steps, producer)
    assert report.replayed == []
    assert [s.entry.id for s, _ in report.not_delivered] == [DlqId(0, 0), DlqId(0, 1), DlqId(0, 2)]
    assert "Not enough in-sync replicas" in report.not_delivered[0][1]
    assert report.failed == [s for s, _ in report.not_delivered]
    assert producer.to(NAMES.dlq_replays) == []


async def test_a_replay_record_that_cannot_be_written_is_reported(codec: Codec) -> None:
    steps = await live_steps(codec, 2)
    producer = FakeProducer(failing=frozenset({NAMES.dlq_replays}))
    report, _ = await send(codec, steps, producer)
    assert len(report.replayed) == 2
    assert [s.entry.id for s, _ in report.unrecorded] == [DlqId(0, 0), DlqId(0, 1)]


async def test_a_full_local_queue_holds_the_sender_back_and_loses_nothing(codec: Codec) -> None:
    steps = await live_steps(codec, 40)
    producer = FakeProducer(queue_limit=3)
    report, _ = await send(codec, steps, producer)
    assert producer.buffer_errors > 0
    assert len(report.replayed) == 40
    assert len(producer.to(NAMES.dlq_replays)) == 40


async def test_the_rate_cap_spaces_the_records_evenly(codec: Codec) -> None:
    steps = await live_steps(codec, 21)
    producer = FakeProducer()
    report, _ = await send(codec, steps, producer, rate=200.0)
    sent = [t for p, t in zip(producer.produced, producer.at, strict=True) if p["topic"] == NAMES.calls("VS")]
    span = sent[-1] - sent[0]
    assert 0.095 <= span < 0.3  # 20 gaps of 5 ms
    assert report.send_s >= span
    assert 60 < report.send_rate <= 220


async def test_an_interrupted_replay_still_records_what_it_sent(codec: Codec) -> None:
    steps = await live_steps(codec, 10)
    producer = FakeProducer()
    report = ReplayReport(replay_id="run-1", operator="bob", dry_run=False, steps=steps)
    sender = ReplaySender(
        {},
        codec=codec.codec,
        dlq_topic=NAMES.dlq,
        replays_topic=NAMES.dlq_replays,
        replay_id="run-1",
        operator="bob",
        producer=cast(Producer, producer),
    )
    sending = asyncio.create_task(sender.send(steps, report, rate=50.0))
    await asyncio.sleep(0.05)  # the first records are out, the rest wait for their turn
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    await sender.close(report)  # what Ctrl-C runs on its way out
    sent = producer.to(NAMES.calls("VS"))
    assert 0 < len(sent) < 10
    assert len(report.replayed) == len(sent)
    assert [r["key"] for r in producer.to(NAMES.dlq_replays)] == [str(s.step.entry.id) for s in report.replayed]


def test_a_report_counts_outcomes_and_reasons() -> None:
    one, two, three = entry(at=DlqId(0, 1)), entry(at=DlqId(0, 2)), entry(at=DlqId(0, 3))
    report = ReplayReport(
        replay_id="r",
        operator="o",
        dry_run=True,
        steps=[
            Step(one, Verdict.SEND, "replay"),
            Step(two, Verdict.SKIP, "already replayed"),
            Step(three, Verdict.FAIL, "does not decode (poison)"),
        ],
    )
    assert [s.entry.id for s in report.to_send] == [DlqId(0, 1)]
    assert report.reasons(report.skipped) == Counter({"already replayed": 1})
    assert report.reasons(report.failed) == Counter({"does not decode (poison)": 1})
    assert report.rate == 0.0


async def test_a_registry_outage_stops_the_plan_instead_of_failing_every_event(codec: Codec) -> None:
    async def registry_down(_: DeadLetter) -> Event:
        raise SchemaRegistryError("registry at http://registry.test unreachable")

    letter = codec.letter(NAMES.calls("VS"), f.airline_call(), at=DlqId(0, 1))
    with pytest.raises(SchemaRegistryError):
        await plan_replay(
            [letter],
            names=NAMES,
            ledger={},
            decode=registry_down,
            options=ReplayOptions(),
            replay_id="r",
            now=now_utc(),
        )
