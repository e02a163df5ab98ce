"""On real Kafka: our events are decoded by a standard consumer that knows only the registry URL, and
the topic declaration is idempotent."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from confluent_kafka import DeserializingConsumer, TopicPartition
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
