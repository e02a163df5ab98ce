"""Dead letters made for real on the chaos stack, then replayed the way an operator would.

An airline answers malformed bodies (its calls are dead-lettered by the connector) and poison lands on the
request topic (dead-lettered by the router). Replaying that range: by default every call is skipped, its
deadline long gone; with ``--include-expired`` each call is sent once (the connector answers TIMEOUT without
calling the airline, the aggregator ignores it: the request has its reply), a second replay of the same range
sends nothing, and the poison fails again without being sent. Every request still has exactly one reply.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Message

from jetbridge.dlq_ops import DlqFilter, DlqId, DlqStore, ReplayOptions, replay
from jetbridge.kafka import AsyncProducer
from schemas.models import AirlineResponse, ResponseStatus
from tests.chaos.conftest import ChaosStack, report
from tests.support.kafka_tools import KafkaProbe

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.kafka]

POISON = b"\x00\x00\x00\x00\x09 poison"
POISONS = 3


def _ids(letters: list[Message], stage: str) -> list[DlqId]:
    return [
        DlqId(int(m.partition() or 0), int(m.offset() or 0))
        for m in letters
        if KafkaProbe.headers(m).get("dlq.stage") == stage
    ]


async def test_dead_letters_of_a_malformed_airline_and_poison_are_replayed_once(chaos: ChaosStack) -> None:
    chaos.up("streams=1,connectors=1")
    names = chaos.names
    dlq_before = await chaos.probe.end_offsets(names.dlq)

    # ---- make dead letters happen: poison first, so the searches' marks count only real requests ----
    producer = AsyncProducer({"bootstrap.servers": chaos.settings.kafka_bootstrap_servers})
    try:
        for i in range(POISONS):
            await producer.send(
                names.requests, key=f"poison-{i}", value=POISON, headers=[("request_id", f"poison-{i}".encode())]
            )
    finally:
        await producer.close()
    marks = await chaos.marks()
    await chaos.airlines(VS={"fault": "malformed"})
    outcomes = await chaos.searches(6, rate_per_s=3, deadline_ms=2000)

    def made(messages: list[Message]) -> bool:
        return bool(_ids(messages, "connector.VS")) and len(_ids(messages, "router")) >= POISONS

    await chaos.probe.read_since(names.dlq, dlq_before, until_s=30, want=made)
    letters = await chaos.probe.read_since(names.dlq, dlq_before, until_s=2)  # and any straggler
    vs_ids, poison_ids = _ids(letters, "connector.VS"), _ids(letters, "router")
    assert vs_ids, "the malformed airline's calls were not dead-lettered"
    assert len(poison_ids) == POISONS
    await chaos.airlines()
    before = await chaos.counts(marks, outcomes)
    assert before.lost == []
    assert before.duplicated == []

    # ---- replay the range ----
    dlq_mark = await chaos.probe.end_offsets(names.dlq)
    responses_mark = await chaos.probe.end_offsets(names.responses)
    async with DlqStore(chaos.settings) as store:
        vs = (await store.dead_letters(DlqFilter(ids=frozenset(vs_ids)))).entries
        assert {e.record.error_code for e in vs} == {"airline_bad_response"}
        assert all(e.record.error_class == "AirlineBadResponse" for e in vs)

        default = await replay(store, vs, ReplayOptions())
        assert len(default.replayed) == 0
        assert default.reasons(default.skipped) == {"deadline passed": len(vs)}

        # The operator's command itself, as an operator would type it.
        first = chaos.stack.jetbridge("dlq", "replay", *map(str, vs_ids), "--include-expired")
        assert first.returncode == 0, first.stdout + first.stderr
        ledger = await store.replays()
        assert {str(i) for i in vs_ids} <= set(ledger)

        second = await replay(store, vs, ReplayOptions(include_expired=True))
        assert len(second.replayed) == 0
        assert second.reasons(second.skipped) == {"already replayed": len(vs)}

        poison = (await store.dead_letters(DlqFilter(ids=frozenset(poison_ids)))).entries
        poisoned = await replay(store, poison, ReplayOptions(include_expired=True))
        assert len(poisoned.replayed) == 0
        assert poisoned.reasons(poisoned.failed) == {"does not decode (poison)": POISONS}

    # ---- what the stages did with the replayed calls ----
    def answered(messages: list[Message]) -> bool:
        return sum("dlq.replayed_from" in chaos.probe.headers(m) for m in messages) >= len(vs)

    responses = await chaos.probe.read_since(names.responses, responses_mark, until_s=20, want=answered)
    replayed = [m for m in responses if "dlq.replayed_from" in chaos.probe.headers(m)]
    assert chaos.probe.codec is not None
    statuses = [(await chaos.probe.codec.decode(m.value(), AirlineResponse)).status for m in replayed]
    assert len(statuses) == len(vs)
    assert set(statuses) == {ResponseStatus.TIMEOUT}, "an expired call is answered TIMEOUT, the airline not called"
    assert {chaos.probe.headers(m)["dlq.replayed_from"] for m in replayed} == {str(i) for i in vs_ids}
    new_letters = await chaos.probe.read_since(names.dlq, dlq_mark, until_s=2)
    assert new_letters == [], "a replayed call answered TIMEOUT is not a dead letter"
    after = await chaos.counts(marks, outcomes, settle_s=5)
    assert after.lost == []
    assert after.duplicated == [], "a replayed call must not make a second reply"
    report(
        f"[chaos] dlq replay: {len(vs)} VS calls and {POISONS} poison dead-lettered; replay without "
        f"--include-expired: 0 replayed, {len(default.skipped)} skipped (deadline passed); with it: "
        f"{len(vs)} replayed and recorded, answered {len(statuses)} TIMEOUT, 0 new replies, 0 new dead letters; "
        f"again: {len(second.replayed)} replayed, {len(second.skipped)} skipped (already replayed); poison: "
        f"{len(poisoned.failed)} failed again, 0 sent; requests {after.requests_in}, replies {after.replies_out}"
    )
