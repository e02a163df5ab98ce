"""What `jetbridge up` waits for last, on the real broker: a static member that stopped still holds its place
(and its partitions) until its session expires, and `unsettled_groups` says so until the group has settled."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer

from infra.stack.groups import GroupWant, unsettled_groups, wanted_groups
from jetbridge.airlines import load_registry
from jetbridge.kafka import client_config
from jetbridge.settings import Settings
from tests.support.streams_worker import TopicSpace

pytestmark = pytest.mark.kafka

SESSION_MS = 6000


class StaticMember:
    """A consumer in ``group`` under a static instance id, polling in its own thread until stopped."""

    def __init__(self, settings: Settings, group: str, topic: str, instance: str) -> None:
        self._consumer = Consumer(
            client_config(settings)
            | {
                "group.id": group,
                "group.instance.id": instance,
                "session.timeout.ms": SESSION_MS,
                "heartbeat.interval.ms": SESSION_MS // 3,
            }
        )
        self._consumer.subscribe([topic])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._consumer.poll(0.1)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self._consumer.close()  # a static member sends no LeaveGroup: the broker keeps its place


async def settled(settings: Settings, wants: list[GroupWant], timeout_s: float) -> float:
    started = time.monotonic()
    while lines := await unsettled_groups(settings, wants):
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not settled in {timeout_s} s: {lines}")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def test_a_stopped_static_member_keeps_the_group_unsettled_until_its_session_expires(
    space: TopicSpace,
) -> None:
    group = f"{space.prefix}jetbridge-streams"
    topic = space.names.requests
    one = StaticMember(space.settings, group, topic, "streams-1")
    two = StaticMember(space.settings, group, topic, "streams-2")
    try:
        await settled(space.settings, [GroupWant(group, 2)], timeout_s=30)

        two.close()
        stopped = time.monotonic()
        lines = await unsettled_groups(space.settings, [GroupWant(group, 1)])
        assert lines == [f"{group}: stable, 2 of 1 members"], "the stopped member still holds its partitions"

        await settled(space.settings, [GroupWant(group, 1)], timeout_s=30)
        waited = time.monotonic() - stopped
        print(f"static member stopped: group settled at 1 member after {waited:.1f} s (session {SESSION_MS} ms)")
        assert waited >= SESSION_MS / 1000 * 0.8, "settled only once the stopped member's session expired"
    finally:
        one.close()
        two.close()


async def test_a_group_that_was_never_joined_is_unsettled_and_an_optional_one_is_not(space: TopicSpace) -> None:
    absent = f"{space.prefix}jb.connector.{uuid.uuid4().hex[:4]}"
    lines = await unsettled_groups(space.settings, [GroupWant(absent, 1), GroupWant(absent + "o", 1, required=False)])
    assert len(lines) == 1
    assert lines[0].startswith(f"{absent}: "), lines
    assert lines[0].endswith("0 of 1 members"), lines


def test_the_plan_wants_one_member_per_worker_in_the_streams_group_and_each_enabled_airlines_groups(
    settings: Settings,
) -> None:
    wants = wanted_groups(settings, {"streams": 2, "connectors": 3})
    enabled = [a.code for a in load_registry(settings.airlines_file) if a.enabled]
    assert GroupWant(f"{settings.topic_prefix}jetbridge-streams", 2) in wants
    for code in enabled:
        assert GroupWant(f"{settings.topic_prefix}jb.connector.{code}", 3) in wants
        assert GroupWant(f"{settings.topic_prefix}jb.orders.{code}", 3, required=False) in wants
    assert len(wants) == 1 + 2 * len(enabled)
