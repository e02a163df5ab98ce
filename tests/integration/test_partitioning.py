"""On real Kafka: the bridge's and connectors' producer (librdkafka) and the stream processors' producer (faust
on aiokafka) put every key on the same partition, which the aggregator's join by request id relies on."""

from __future__ import annotations

import uuid
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]  # aiokafka ships no type information
from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]  # likewise

from jetbridge.kafka import AsyncProducer, apply_topics
from jetbridge.settings import Settings
from jetbridge.topics import TopicSpec

pytestmark = pytest.mark.kafka

PARTITIONS = 6


def faust_partitioner() -> DefaultPartitioner:
    """The partitioner faust gives aiokafka: its ``producer_partitioner`` setting, or aiokafka's default
    (faust/transport/drivers/aiokafka.py, ``Producer.__post_init__``); Jetbridge sets no partitioner."""
    # faust types this setting as a method of its Settings class; read it as the plain value it is.
    conf: Any = faust.App("jb-partitioning-check", broker="kafka://127.0.0.1:9").conf
    configured = conf.producer_partitioner
    assert configured is None, "faust would use a custom partitioner: this test must use it too"
    return DefaultPartitioner()


async def test_librdkafka_and_faust_producers_put_every_key_on_the_same_partition(settings: Settings) -> None:
    topic = f"jb.test.partitioning.{uuid.uuid4().hex[:8]}"
    await apply_topics(
        {"bootstrap.servers": settings.kafka_bootstrap_servers}, [TopicSpec(topic, None, PARTITIONS, 3_600_000)]
    )
    keys = [str(uuid.uuid4()) for _ in range(190)] + [f"req-{i}" for i in range(10)]

    ours = AsyncProducer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    try:
        by_ours = {key: (await ours.send(topic, key=key, value=b"librdkafka")).partition for key in keys}
    finally:
        await ours.close()

    theirs = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, partitioner=faust_partitioner())
    await theirs.start()
    try:
        by_theirs = {
            key: (await theirs.send_and_wait(topic, key=key.encode(), value=b"aiokafka")).partition for key in keys
        }
    finally:
        await theirs.stop()

    assert len(set(by_ours.values())) == PARTITIONS, "200 keys should reach every partition, or the check is weak"
    disagree = {key: (by_ours[key], by_theirs[key]) for key in keys if by_ours[key] != by_theirs[key]}
    assert disagree == {}, f"{len(disagree)} of {len(keys)} keys land on different partitions"
