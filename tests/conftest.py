"""Session fixtures for tests that need real infrastructure.

Unit tests use none of these. Integration and end-to-end tests get a real Kafka, schema registry and Redis from
`infra.stack.backends.provide_infra` (an external cluster, testcontainers, or the project's local processes,
chosen automatically) on ports and a state folder of their own, so a developer's running stack is left
alone.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from infra.stack.backends import Infra, provide_infra
from jetbridge.airlines import load_registry
from jetbridge.kafka import apply_topics, client_config
from jetbridge.settings import REPO_ROOT, Settings
from jetbridge.topics import declared_topics
from tests.support.kafka_tools import KafkaProbe

# Two test sessions on one machine (two developers' checkouts, or a helper beside CI) set JB_TEST_PORT_SHIFT
# to different values: every port and the state folder of the test session move with it.
PORT_SHIFT = int(os.environ.get("JB_TEST_PORT_SHIFT", "0"))
TEST_HOME = REPO_ROOT / ".jetbridge" / (f"test-{PORT_SHIFT}" if PORT_SHIFT else "test")


@pytest.fixture(scope="session")
def test_home() -> Path:
    TEST_HOME.mkdir(parents=True, exist_ok=True)
    return TEST_HOME


@pytest.fixture(scope="session")
def infra(test_home: Path) -> Iterator[Infra]:
    with provide_infra(
        test_home,
        kafka_port=19092 + PORT_SHIFT,
        registry_port=18081 + PORT_SHIFT,
        redis_port=16379 + PORT_SHIFT,
    ) as provided:
        saved = {k: os.environ.get(k) for k in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "REDIS_URL")}
        # Every process started from here on (the stack, a second bridge) uses this cluster.
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = provided.bootstrap_servers
        os.environ["SCHEMA_REGISTRY_URL"] = provided.registry_url
        os.environ["REDIS_URL"] = provided.redis_url
        try:
            yield provided
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="session")
def settings(infra: Infra, test_home: Path) -> Settings:
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=infra.bootstrap_servers,
        SCHEMA_REGISTRY_URL=infra.registry_url,
        REDIS_URL=infra.redis_url,
        JB_HOME=test_home,
    )


@pytest.fixture(scope="session")
async def topics(settings: Settings) -> None:
    specs = declared_topics(load_registry(settings.airlines_file), settings.topic_partitions, settings.topic_prefix)
    await apply_topics(client_config(settings), specs)


@pytest.fixture(scope="session")
async def kafka(settings: Settings, topics: None) -> AsyncIterator[KafkaProbe]:
    probe = KafkaProbe(settings)
    await probe.open()
    try:
        yield probe
    finally:
        await probe.close()
