"""The stream worker (router and aggregator) as a real process on a real broker, on topics of its own:
deadline -> partial reply, duplicates absorbed, poison -> DLQ, and exactly one reply across kill -9.

These drive the worker's inputs directly (search requests and airline responses), standing in for the
bridge and the connectors, so each case controls exactly what the aggregator has seen when it dies.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from schemas.models import AirlineOutcome, ErrorInfo, ReplyStatus, ResponseStatus, SearchReply, now_utc
from tests.support import factories as f
from tests.support.streams_worker import StreamsWorker, TopicSpace, running_worker

pytestmark = pytest.mark.kafka

FIVE = ["BA", "AA", "VS", "DL", "AY"]


def rid() -> str:
    return f"req-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def worker(space: TopicSpace, test_home: Path) -> AsyncIterator[StreamsWorker]:
    async with running_worker(space, test_home, "streams-t1") as proc:
        yield proc


def by_request(replies: list[SearchReply]) -> Counter[str]:
    return Counter(r.request_id for r in replies)


async def answer(space: TopicSpace, request_id: str, airlines: list[str]) -> None:
    for code in airlines:
        await space.respond(f.response(code, request_id=request_id, correlation_id=request_id))


async def test_router_fans_a_request_out_and_the_aggregator_joins_the_answers_without_a_plan_event(
    space: TopicSpace, worker: StreamsWorker
) -> None:
    request_id = rid()
    await space.send(
        space.names.requests, f.search_request(request_id=request_id, correlation_id=request_id), key=request_id
    )
    for code in FIVE:
        calls = await asyncio.to_thread(
            space.read_all, space.names.calls(code), until=lambda m: len(m) >= 1, timeout_s=15
        )
        assert [m.key() for m in calls] == [request_id.encode()], code
    await answer(space, request_id, FIVE)
    replies = await space.replies(until=lambda r: len(r) >= 1)
    assert [(r.request_id, r.status) for r in replies] == [(request_id, ReplyStatus.COMPLETE)]
    # The router hands its plan to the aggregator in memory: nothing goes to the control topic any more.
    assert await asyncio.to_thread(space.read_all, space.names.control, until=lambda m: False, timeout_s=2) == []


async def test_a_plan_from_a_worker_of_an_earlier_version_is_still_joined(
    space: TopicSpace, worker: StreamsWorker
) -> None:
    request_id = rid()
    await space.send(
        space.names.control, f.plan(["BA", "AA"], request_id=request_id, correlation_id=request_id), key=request_id
    )
    await answer(space, request_id, ["BA", "AA"])
    [reply] = await space.replies(until=lambda r: len(r) >= 1)
    assert (reply.request_id, reply.status) == (request_id, ReplyStatus.COMPLETE)


async def test_deadline_gives_a_partial_reply_naming_each_missing_airline(
    space: TopicSpace, worker: StreamsWorker
) -> None:
    request_id = rid()
    deadline = now_utc() + timedelta(milliseconds=1500)
    await space.request(f.request(FIVE, request_id=request_id, correlation_id=request_id, deadline=deadline))
    await answer(space, request_id, ["BA", "AA", "VS"])
    replies = await space.replies(until=lambda r: len(r) >= 1, timeout_s=10)
    [reply] = replies
    assert reply.status is ReplyStatus.PARTIAL
    assert {a.airline: a.status for a in reply.airlines if a.status is not AirlineOutcome.OK} == {
        "DL": AirlineOutcome.TIMEOUT,
        "AY": AirlineOutcome.TIMEOUT,
    }
    assert reply.completed_at >= deadline
    assert (reply.completed_at - deadline) < timedelta(seconds=1), "answered at the deadline, not long after"


async def test_a_reply_where_no_airline_answered_says_so(space: TopicSpace, worker: StreamsWorker) -> None:
    request_id = rid()
    await space.request(
        f.request(
            ["BA", "AA"], request_id=request_id, correlation_id=request_id, deadline=now_utc() + timedelta(seconds=1)
        )
    )
    failed = ErrorInfo(code="airline_unavailable", message="HTTP 500", retriable=True)
    await space.respond(f.response("BA", ResponseStatus.ERROR, request_id=request_id, error=failed))
    [reply] = await space.replies(until=lambda r: len(r) >= 1)
    assert reply.status is ReplyStatus.UNANSWERED
    assert reply.offers == []


async def test_duplicates_after_the_reply_never_make_a_second_one(space: TopicSpace, worker: StreamsWorker) -> None:
    request_id = rid()
    request = f.request(["BA", "AA"], request_id=request_id, correlation_id=request_id)
    await space.request(request)
    await answer(space, request_id, ["BA", "AA"])
    await space.replies(until=lambda r: len(r) >= 1)
    await space.request(request)  # the bridge's retry
    await answer(space, request_id, ["BA", "AA", "AA"])  # connectors' replays
    replies = await space.replies(timeout_s=3)
    assert by_request(replies) == {request_id: 1}


async def test_poison_on_every_input_goes_to_the_dlq_and_the_stream_goes_on(
    space: TopicSpace, worker: StreamsWorker
) -> None:
    poisons = {
        space.names.requests: "router",
        space.names.responses: "aggregator",
        space.names.control: "aggregator",
    }
    for topic in poisons:
        await space.send_raw(topic, b"\x00\x00\x00\x00\x07 not avro at all", key=f"poison-{topic}")
    letters = await space.dead_letters(until=lambda m: len(m) >= 3)
    assert {(TopicSpace.headers(m)["dlq.original_topic"], TopicSpace.headers(m)["dlq.stage"]) for m in letters} == set(
        poisons.items()
    )
    assert all(TopicSpace.headers(m)["dlq.error_code"] == "decode" for m in letters)
    request_id = rid()
    await space.request(f.request(["BA"], request_id=request_id, correlation_id=request_id))
    await answer(space, request_id, ["BA"])
    [reply] = await space.replies(until=lambda r: len(r) >= 1)
    assert reply.status is ReplyStatus.COMPLETE, "the aggregator kept going after the poison events"


async def test_kill_9_after_three_of_five_answered_then_one_complete_reply(space: TopicSpace, test_home: Path) -> None:
    first = StreamsWorker(space, test_home, "streams-t1")
    first.start()
    try:
        await first.healthy()
        ids = [rid() for _ in range(5)]
        for request_id in ids:
            deadline = now_utc() + timedelta(seconds=25)
            await space.request(f.request(FIVE, request_id=request_id, correlation_id=request_id, deadline=deadline))
            await answer(space, request_id, ["BA", "AA", "VS"])
        await asyncio.sleep(1.5)  # the worker has seen them (and committed what it could)
        assert (await first.health())["open_joins"] == 5
        first.kill()
        second = StreamsWorker(space, test_home, "streams-t1")
        second.start()
        try:
            took = await second.healthy()
            for request_id in ids:
                await answer(space, request_id, ["DL", "AY"])
            replies = await space.replies(until=lambda r: len(r) >= 5, timeout_s=20)
            print(f"restart to healthy: {took:.1f} s; replies {by_request(replies)}")
            assert by_request(replies) == dict.fromkeys(ids, 1), "exactly one reply per request"
            assert {r.status for r in replies} == {ReplyStatus.COMPLETE}, "the three early answers were not lost"
        finally:
            second.stop()
    finally:
        first.kill()


async def test_kill_9_right_after_a_burst_of_replies_then_no_second_reply(space: TopicSpace, test_home: Path) -> None:
    first = StreamsWorker(space, test_home, "streams-t1")
    first.start()
    try:
        await first.healthy()
        ids = [rid() for _ in range(40)]
        for request_id in ids:
            await space.request(f.request(FIVE, request_id=request_id, correlation_id=request_id))
            await answer(space, request_id, FIVE)
        replies = await space.replies(until=lambda r: len(r) >= 40, timeout_s=30)
        assert by_request(replies) == dict.fromkeys(ids, 1)
        first.kill()  # before (or while) its last offsets are committed
        second = StreamsWorker(space, test_home, "streams-t1")
        second.start()
        try:
            await second.healthy()
            await asyncio.sleep(3)  # whatever it replays, it has replayed by now
            later = await space.replies(timeout_s=2)
            duplicated = {k: n for k, n in by_request(later).items() if n > 1}
            print(f"requests {len(ids)}, replies {len(later)}, duplicated {len(duplicated)}")
            assert duplicated == {}
            assert len(later) == 40
        finally:
            second.stop()
    finally:
        first.kill()


async def test_two_workers_share_the_joins_and_one_dying_loses_nothing(space: TopicSpace, test_home: Path) -> None:
    workers = [StreamsWorker(space, test_home, f"streams-t{i}") for i in (1, 2)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            await w.healthy()
        ids = [rid() for _ in range(30)]
        deadline = now_utc() + timedelta(seconds=20)
        for request_id in ids:
            await space.request(f.request(FIVE, request_id=request_id, correlation_id=request_id, deadline=deadline))
            await answer(space, request_id, ["BA", "AA"])
        await asyncio.sleep(1.0)
        held = [(await w.health())["open_joins"] for w in workers]
        assert sum(held) == 30
        assert all(h > 0 for h in held), f"both workers hold joins: {held}"
        workers[1].kill()
        for request_id in ids:
            await answer(space, request_id, ["VS", "DL", "AY"])
        replies = await space.replies(until=lambda r: len(r) >= 30, timeout_s=30)
        assert by_request(replies) == dict.fromkeys(ids, 1)
        assert {r.status for r in replies} == {ReplyStatus.COMPLETE}
    finally:
        for w in workers:
            w.kill()


async def test_a_worker_fenced_by_a_second_process_under_its_name_answers_again_once_that_one_is_gone(
    space: TopicSpace, test_home: Path
) -> None:
    # Two processes under one JB_INSTANCE (a broker restart's rejoin race does the same to one process): the
    # group hands the static member's place to the newcomer and fences the first.
    first = StreamsWorker(space, test_home, "streams-t1")
    first.start()
    try:
        await first.healthy()
        twin = StreamsWorker(space, test_home, "streams-t1")
        twin.start()
        try:
            await twin.healthy()
            await asyncio.sleep(5)  # a few heartbeats: the first one learns that it was fenced
        finally:
            twin.kill()
        request_id = rid()
        deadline = now_utc() + timedelta(seconds=40)
        await space.request(f.request(FIVE, request_id=request_id, correlation_id=request_id, deadline=deadline))
        await answer(space, request_id, FIVE)
        replies = await space.replies(until=lambda r: len(r) >= 1, timeout_s=45)
        assert [(r.request_id, r.status) for r in replies] == [(request_id, ReplyStatus.COMPLETE)]
        assert first.proc is not None
        assert first.proc.poll() is None, "the first worker answered it itself, still running"
    finally:
        first.kill()
