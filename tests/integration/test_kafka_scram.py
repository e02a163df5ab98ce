"""On a broker that wants SASL/SCRAM-SHA-512 (README "Kafka security"): our librdkafka clients and a real stream
worker (faust's aiokafka clients) authenticate with the security settings, and a wrong password is an error
naming authentication within seconds, not a hang.

The broker is the project's own (``infra/kafka/kafka.sh`` with ``JB_KAFKA_SCRAM_USER``), started for this module
on ports and a state folder of its own and stopped by its PID at the end. The schema registry is the session's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Message, TopicPartition
from pydantic import SecretStr

from jetbridge.errors import KafkaError
from jetbridge.kafka import AsyncConsumer, AsyncProducer, apply_topics, client_config
from jetbridge.runtime import kafka_config
from jetbridge.settings import REPO_ROOT, Settings
from jetbridge.topics import TopicSpec
from schemas.models import ReplyStatus
from tests.conftest import PORT_SHIFT
from tests.support import factories as f
from tests.support.streams_worker import StreamsWorker, TopicSpace

pytestmark = pytest.mark.kafka

USER = "jetbridge-scram"
PASSWORD = "scram-Test-pa55word"  # made up; also looked for in the worker's log, where it must not be
# Beside the session's broker (19092 + shift, its controller on + 1): client, controller and internal listeners.
PORT = 19592 + PORT_SHIFT
FIVE = ["BA", "AA", "VS", "DL", "AY"]


def _kafka_sh(action: str, env: dict[str, str], log: Path, timeout_s: float) -> int:
    with log.open("ab") as out:
        script = REPO_ROOT / "infra" / "kafka" / "kafka.sh"
        return subprocess.run(
            ["/bin/bash", str(script), action], env=env, stdout=out, stderr=out, timeout=timeout_s, check=False
        ).returncode


@pytest.fixture(scope="module")
def scram_broker(test_home: Path) -> Iterator[str]:
    """A SCRAM-SHA-512 broker on fresh storage; its bootstrap servers."""
    if shutil.which("java") is None:
        pytest.skip("no java: the SCRAM broker runs from the Apache Kafka jars")
    home = test_home / "scram"
    env = dict(
        os.environ,
        JB_HOME=str(home),
        JB_KAFKA_PORT=str(PORT),
        JB_KAFKA_CONTROLLER_PORT=str(PORT + 1),
        JB_KAFKA_INTERNAL_PORT=str(PORT + 2),
        JB_KAFKA_SCRAM_USER=USER,
        JB_KAFKA_SCRAM_PASSWORD=PASSWORD,
        JB_KAFKA_HEAP="256m",
    )
    (home / "logs").mkdir(parents=True, exist_ok=True)
    log = home / "logs" / "setup.log"
    _kafka_sh("stop", env, log, 60)  # a broker left by an interrupted run
    shutil.rmtree(home / "kafka", ignore_errors=True)
    pidfile = home / "run" / "kafka.pid"
    code = _kafka_sh("start", env, log, 180)
    pid = int(pidfile.read_text()) if pidfile.exists() else None
    try:
        assert code == 0, f"the SCRAM broker did not start: see {log} and {home}/logs/kafka.log"
        yield f"127.0.0.1:{PORT}"
    finally:
        if pid is not None:
            _stop(pid)
        pidfile.unlink(missing_ok=True)


def _stop(pid: int, grace_s: float = 30.0) -> None:
    """SIGTERM to the broker this module started, SIGKILL if it outlives the grace period."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    give_up = time.monotonic() + grace_s
    while time.monotonic() < give_up:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def scram_settings(scram_broker: str, settings: Settings, test_home: Path) -> Settings:
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=scram_broker,
        SCHEMA_REGISTRY_URL=settings.schema_registry_url,
        JB_HOME=test_home,
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME=USER,
        KAFKA_SASL_PASSWORD=PASSWORD,
    )


@pytest.fixture(scope="module")
async def topic(scram_settings: Settings) -> str:
    name = f"t{uuid.uuid4().hex[:10]}.scram"
    async with asyncio.timeout(60):
        await apply_topics(client_config(scram_settings), [TopicSpec(name, None, 1, 3_600_000)])
    return name


async def test_our_producer_and_consumer_authenticate_with_scram(scram_settings: Settings, topic: str) -> None:
    producer = AsyncProducer(kafka_config(scram_settings, "jb-scram-test"))
    consumer = AsyncConsumer(client_config(scram_settings) | {"group.id": f"jb-scram-{uuid.uuid4().hex[:8]}"})
    try:
        async with asyncio.timeout(30):
            delivery = await producer.send(topic, key="k", value=b"authenticated")
            await consumer.assign([TopicPartition(topic, 0, delivery.offset)])
            received: list[Message] = []
            while not received:
                received = [m for m in await consumer.consume(10, 0.5) if m.error() is None]
        assert [(m.key(), m.value()) for m in received] == [(b"k", b"authenticated")]
    finally:
        await consumer.close()
        await producer.close()


async def test_a_wrong_password_is_an_authentication_error_within_seconds(scram_settings: Settings, topic: str) -> None:
    wrong = scram_settings.model_copy(update={"kafka_sasl_password": SecretStr("not-" + PASSWORD)})
    producer = AsyncProducer(kafka_config(wrong, "jb-scram-wrong"))
    consumer = AsyncConsumer(client_config(wrong) | {"group.id": "jb-scram-wrong"})
    started = time.monotonic()
    try:
        async with asyncio.timeout(20):
            with pytest.raises(KafkaError, match="Kafka authentication failed") as refused:
                await producer.send(topic, key="k", value=b"refused")
        assert "SCRAM-SHA-512" in str(refused.value)
        assert "not-" + PASSWORD not in str(refused.value)
        await consumer.assign([TopicPartition(topic, 0, 0)])
        async with asyncio.timeout(20):
            with pytest.raises(KafkaError, match="Kafka authentication failed"):
                await _consume_until_it_raises(consumer)
        assert time.monotonic() - started < 30
    finally:
        await consumer.close()
        await producer.close(timeout_s=0.5)


async def _consume_until_it_raises(consumer: AsyncConsumer) -> None:
    while True:
        await consumer.consume(10, 0.5)


@pytest.fixture
async def scram_space(scram_settings: Settings) -> AsyncIterator[TopicSpace]:
    space = TopicSpace(scram_settings)
    async with asyncio.timeout(60):
        await space.open()
    try:
        yield space
    finally:
        await space.close()


async def test_a_stream_worker_authenticates_with_scram_and_routes_a_request(
    scram_space: TopicSpace, test_home: Path
) -> None:
    worker = StreamsWorker(scram_space, test_home, "streams-scram")
    worker.start()
    try:
        await worker.healthy(timeout_s=90)  # faust's consumer joined its group on the SCRAM listener
        request_id = f"req-{uuid.uuid4().hex[:12]}"
        await scram_space.request(f.search_request(request_id=request_id, correlation_id=request_id))
        for code in FIVE:
            calls = await asyncio.to_thread(
                scram_space.read_all, scram_space.names.calls(code), until=lambda m: len(m) >= 1, timeout_s=20
            )
            assert [m.key() for m in calls] == [request_id.encode()], code
        for code in FIVE:
            await scram_space.respond(f.response(code, request_id=request_id, correlation_id=request_id))
        replies = await scram_space.replies(until=lambda r: len(r) >= 1, timeout_s=20)
        assert [(r.request_id, r.status) for r in replies] == [(request_id, ReplyStatus.COMPLETE)]
    finally:
        worker.stop()
    assert PASSWORD not in worker.log_path.read_text(errors="replace")
