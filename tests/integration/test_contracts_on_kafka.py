"""On real Kafka: our events are decoded by a standard consumer that knows only the registry URL, and
the topic declaration is idempotent."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest
from confluent_kafka import DeserializingConsumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from jetbridge.kafka import AsyncProducer, apply_topics
from jetbridge.settings import Settings
from jetbridge.topics import TopicSpec
from schemas.codec import load_schema, value_subject
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


def _breaking_v2(schema: dict[str, Any]) -> dict[str, Any]:
    """search_request.avsc with ``criteria.adults`` a string: incompatible with v1, so a new topic's schema."""
    v2 = copy.deepcopy(schema)
    v2["namespace"] = "jetbridge.v2"
    criteria = next(f for f in v2["fields"] if f["name"] == "criteria")["type"]
    next(f for f in criteria["fields"] if f["name"] == "adults")["type"] = "string"
    return v2


async def test_a_breaking_change_goes_to_a_v2_topic_written_beside_v1_until_its_consumers_moved_over(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """The README's path ("A breaking change is a new topic"), step by step on the broker and the registry."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    v1, v2 = f"{prefix}jb.requests.v1", f"{prefix}jb.requests.v2"
    bootstrap = {"bootstrap.servers": settings.kafka_bootstrap_servers}
    registry = SchemaRegistryClient({"url": settings.schema_registry_url})
    v2_schema = json.dumps(_breaking_v2(json.loads(load_schema(SearchRequest.SCHEMA))))
    # 1. The v2 topic and its schema. Under v1's subject the registry refuses that schema (v1's level holds).
    await apply_topics(
        bootstrap, [TopicSpec(v1, SearchRequest, 1, 3_600_000), TopicSpec(v2, SearchRequest, 1, 3_600_000)]
    )
    for topic in (v1, v2):
        registry.set_compatibility(subject_name=value_subject(topic), level="BACKWARD")
    assert kafka.codec is not None
    await kafka.codec.register(v1, SearchRequest)
    with pytest.raises(SchemaRegistryError) as refused:
        registry.register_schema(value_subject(v1), Schema(v2_schema, "AVRO"))
    assert refused.value.http_status_code == 409
    registry.register_schema(value_subject(v2), Schema(v2_schema, "AVRO"))  # a new subject: nothing to break

    # 2. Before the migration v1 only; then dual writing: every event to both topics, each in its own schema.
    producer = AsyncProducer(bootstrap)
    to_v2 = AvroSerializer(registry, v2_schema)
    before = f.search_request(airlines=["BA"])
    await producer.send(v1, key=before.request_id, value=kafka.codec.encode(v1, before))
    await asyncio.sleep(0.05)
    dual_writing_since_ms = int(time.time() * 1000)
    during = [f.search_request(airlines=["BA", "AY"]) for _ in range(3)]
    for request in during:
        await producer.send(v1, key=request.request_id, value=kafka.codec.encode(v1, request))
        record = request.model_dump()
        record["criteria"]["adults"] = str(record["criteria"]["adults"])
        value = to_v2(record, SerializationContext(v2, MessageField.VALUE))
        await producer.send(v2, key=request.request_id, value=value)
    await producer.close()

    # 3. A consumer moves over: it starts on v2 at the time dual writing began and meets the same events there.
    def read(topic: str, since_ms: int | None) -> list[dict[str, Any]]:
        consumer = DeserializingConsumer(
            bootstrap | {"group.id": f"test-{uuid.uuid4().hex}", "value.deserializer": AvroDeserializer(registry)}
        )
        try:
            start = TopicPartition(topic, 0, since_ms if since_ms is not None else 0)
            [position] = consumer.offsets_for_times([start], 10) if since_ms is not None else [start]
            consumer.assign([position])
            values: list[dict[str, Any]] = []
            while (message := consumer.poll(2)) is not None:
                assert message.error() is None
                value = message.value()
                assert isinstance(value, dict)
                values.append(value)
            return values
        finally:
            consumer.close()

    on_v1 = await asyncio.to_thread(read, v1, None)
    on_v2 = await asyncio.to_thread(read, v2, dual_writing_since_ms)
    assert [v["request_id"] for v in on_v1] == [before.request_id, *(r.request_id for r in during)]
    assert [v["request_id"] for v in on_v2] == [r.request_id for r in during], "the same events, from dual writing on"
    assert {v["criteria"]["adults"] for v in on_v2} == {str(during[0].criteria.adults)}, "in v2's own schema"
    # The old consumers read v1 unchanged meanwhile, with the model they were built with.
    assert (await kafka.codec.decode(kafka.codec.encode(v1, during[0]), SearchRequest)) == during[0]
