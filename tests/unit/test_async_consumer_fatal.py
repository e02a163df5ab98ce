"""A consumer's one fatal error (a static member fenced out of its group, see jetbridge/kafka.py): a subscribed
consumer is replaced by a new one, once per error; a consumer reading assigned partitions says so instead.
The fencing itself, on the broker: tests/integration/test_connector_worker_on_kafka.py."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError as ClientError

from jetbridge.errors import KafkaError
from jetbridge.kafka import AsyncConsumer

FENCED = ClientError(
    ClientError._FATAL,
    "Fatal error: Broker: Static consumer fenced by other consumer with same group.instance.id",
    fatal=True,
)
NOWHERE = {"bootstrap.servers": "127.0.0.1:9", "group.id": "g", "group.instance.id": "connectors-1-ZZ"}


async def test_a_subscribed_consumer_hit_by_a_fatal_error_is_replaced_once() -> None:
    consumer = AsyncConsumer(NOWHERE)
    try:
        await consumer.subscribe(["t.jb.airline.ZZ.calls.v1"])
        first = consumer.raw
        consumer._on_error(FENCED)  # what librdkafka calls inside a poll
        assert await consumer.consume(1, 0.01) == []
        assert consumer.replaced == 1
        assert consumer.raw is not first, "a new consumer, subscribed again under the same instance id"
        assert await consumer.consume(1, 0.01) == []
        assert consumer.replaced == 1, "one error, one replacement"
    finally:
        await consumer.close()


async def test_a_transient_error_replaces_nothing() -> None:
    consumer = AsyncConsumer(NOWHERE)
    try:
        await consumer.subscribe(["t.jb.airline.ZZ.calls.v1"])
        consumer._on_error(ClientError(ClientError._TRANSPORT, "broker down"))
        assert await consumer.consume(1, 0.01) == []
        assert consumer.replaced == 0
    finally:
        await consumer.close()


async def test_a_consumer_of_assigned_partitions_hit_by_a_fatal_error_raises_saying_so() -> None:
    consumer = AsyncConsumer(NOWHERE)
    try:
        consumer._on_error(FENCED)
        with pytest.raises(KafkaError, match=r"stopped by a fatal error: .*fenced"):
            await consumer.consume(1, 0.01)
    finally:
        await consumer.close()
