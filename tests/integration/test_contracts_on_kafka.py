"""On real Kafka: our events are decoded by a standard consumer that knows only the registry URL, and
the topic declaration is idempotent."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest
from confluent_kafka import DeserializingConsumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer

from jetbridge.kafka import AsyncProducer, apply_topics
from jetbridge.settings import Settings
from jetbridge.topics import TopicSpec
from schemas.models import SearchRequest
from tests.support import factories as f
from tests.support.kafka_tools import KafkaProbe

pytestmark = pytest.mark.kafka


async def test_standard_avro_consumer_decodes_our_events_knowing_only_the_registry(
    settings: Settings, kafka: KafkaProbe
) -> None:
    topic = f"jb.test.contracts.{uuid.uuid4().hex[:8]}"
    await apply_topics(
        {"bootstrap.servers": settings.kafka_bootstrap_servers},
        [TopicSpec(topic, SearchRequest, 1, 3_600_000)],
    )
    assert kafka.codec is not None
    await kafka.codec.register(topic, SearchRequest)
    request = f.search_request(airlines=["BA", "AY"])
    producer = AsyncProducer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    delivery = await producer.send(topic, key=request.request_id, value=kafka.codec.encode(topic, request))
    await producer.close()

    def consume() -> dict[str, object]:
        registry = SchemaRegistryClient({"url": settings.schema_registry_url})
        consumer = DeserializingConsumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": f"test-{uuid.uuid4().hex}",
                "value.deserializer": AvroDeserializer(registry),
            }
        )
        consumer.assign([TopicPartition(topic, delivery.partition, delivery.offset)])
        try:
            message = consumer.poll(15)
            assert message is not None
            assert message.error() is None
            value = message.value()
            assert isinstance(value, dict)
            return value
        finally:
            consumer.close()

    decoded = await asyncio.to_thread(consume)
    assert decoded["request_id"] == request.request_id
    assert decoded["airlines"] == ["BA", "AY"]
    criteria = decoded["criteria"]
    assert isinstance(criteria, dict)
    assert criteria["origin"] == "LHR"
    assert criteria["departure_date"] == request.criteria.departure_date
    assert criteria["cabin"] == "ECONOMY"
    assert decoded["deadline"] == request.deadline


async def test_topics_apply_creates_once_then_changes_nothing(settings: Settings) -> None:
    name = f"jb.test.apply.{uuid.uuid4().hex[:8]}"
    spec = TopicSpec(name, SearchRequest, 2, 7_200_000)
    config = {"bootstrap.servers": settings.kafka_bootstrap_servers}
    assert await apply_topics(config, [spec]) == {name: "created"}
    assert await apply_topics(config, [spec]) == {name: "unchanged"}
    changed = TopicSpec(name, SearchRequest, 2, 3_600_000)
    assert await apply_topics(config, [changed]) == {name: "updated"}


async def test_topics_apply_adds_partitions_to_a_growable_topic_and_says_what_it_kept_of_the_others(
    settings: Settings,
) -> None:
    config = {"bootstrap.servers": settings.kafka_bootstrap_servers}
    calls = TopicSpec(f"jb.test.calls.{uuid.uuid4().hex[:8]}", SearchRequest, 2, 7_200_000, grows=True)
    joined = TopicSpec(f"jb.test.requests.{uuid.uuid4().hex[:8]}", SearchRequest, 2, 7_200_000)
    assert await apply_topics(config, [calls, joined]) == {calls.name: "created", joined.name: "created"}

    more = [replace(calls, partitions=5), replace(joined, partitions=5)]
    assert await apply_topics(config, more) == {
        calls.name: "unchanged, partitions 2 → 5",
        joined.name: "unchanged, kept 2 partitions (5 declared; not grown in place)",
    }
    assert await partitions_of(settings, calls.name) == 5
    assert await partitions_of(settings, joined.name) == 2
    # Partitions are never removed: fewer declared is said, and nothing changes.
    fewer = replace(calls, partitions=3)
    kept = "unchanged, kept 5 partitions (3 declared; never removed)"
    assert await apply_topics(config, [fewer]) == {calls.name: kept}
    assert await partitions_of(settings, calls.name) == 5


async def partitions_of(settings: Settings, topic: str) -> int:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    metadata = await asyncio.to_thread(admin.list_topics, topic, 10)
    return len(metadata.topics[topic].partitions)
