"""A real stream worker (``python -m streams``) on topics of its own, for tests below end to end.

Each ``TopicSpace`` is a unique topic prefix (so its own topics, schema subjects and consumer group) with a
codec, a producer that partitions like the bridge and the connectors, and readers for the outputs.
``StreamsWorker`` runs one faust worker process on that space and can kill it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, Message, TopicPartition

from jetbridge.airlines import load_registry
from jetbridge.http import build_http_client
from jetbridge.kafka import AsyncProducer, apply_topics, client_config, decode_headers, event_headers
from jetbridge.runtime import open_codec
from jetbridge.settings import REPO_ROOT, Settings
from jetbridge.topics import TopicNames, declared_topics
from schemas.codec import AvroCodec
from schemas.models import AirlineResponse, Event, SearchReply, SearchRequest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def security_env(settings: Settings) -> dict[str, str]:
    """The settings' Kafka security as the environment variables a child process reads them from."""
    env: dict[str, str] = {
        "KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol,
        "KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
    }
    if settings.kafka_sasl_username is not None:
        env["KAFKA_SASL_USERNAME"] = settings.kafka_sasl_username
    if settings.kafka_sasl_password is not None:
        env["KAFKA_SASL_PASSWORD"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_ca_location is not None:
        env["KAFKA_SSL_CA_LOCATION"] = str(settings.kafka_ssl_ca_location)
    return env


class TopicSpace:
    def __init__(self, settings: Settings) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:10]}."
        self.settings = settings.model_copy(update={"topic_prefix": self.prefix})
        self.names = TopicNames(self.prefix)
        self._http = build_http_client()
        self.codec: AvroCodec | None = None
        self.producer = AsyncProducer(client_config(settings))

    async def open(self) -> None:
        specs = declared_topics(load_registry(self.settings.airlines_file), self.settings.topic_partitions, self.prefix)
        await apply_topics(client_config(self.settings), specs)
        self.codec = await open_codec(self.settings, specs, self._http)
        await asyncio.to_thread(self._wait_for_metadata, [s.name for s in specs])

    def _wait_for_metadata(self, topics: list[str], timeout_s: float = 15.0) -> None:
        """New topics reach every client's metadata a moment after they are created."""
        consumer = Consumer(client_config(self.settings) | {"group.id": "metadata"})
        try:
            give_up = time.monotonic() + timeout_s
            while time.monotonic() < give_up:
                known = consumer.list_topics(timeout=5).topics
                if all(
                    t in known
                    and known[t].error is None
                    and known[t].partitions
                    and all(p.leader >= 0 for p in known[t].partitions.values())
                    for t in topics
                ):
                    return
                time.sleep(0.1)
            raise AssertionError(f"topics not in the broker's metadata after {timeout_s} s")
        finally:
            consumer.close()

    async def close(self) -> None:
        await self.producer.close()
        await self._http.aclose()

    async def send(self, topic: str, event: Event, *, key: str, client_id: str = "test-client") -> None:
        assert self.codec is not None
        deadline = getattr(event, "deadline", None)
        headers = event_headers(
            request_id=key,
            correlation_id=key,
            client_id=client_id,
            deadline_ms=int(deadline.timestamp() * 1000) if deadline else 0,
            traceparent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
        )
        await self.producer.send(topic, key=key, value=self.codec.encode(topic, event), headers=headers)

    async def send_raw(self, topic: str, value: bytes, *, key: str) -> None:
        await self.producer.send(topic, key=key, value=value, headers=[("request_id", key.encode())])

    async def request(self, request: SearchRequest) -> None:
        """A search request, as the bridge sends it: the worker routes it and opens its join."""
        await self.send(self.names.requests, request, key=request.request_id)

    async def respond(self, response: AirlineResponse) -> None:
        await self.send(self.names.responses, response, key=response.request_id)

    def read_all(self, topic: str, *, until: Callable[[list[Message]], bool], timeout_s: float) -> list[Message]:
        """Every message of ``topic`` from the beginning, until ``until(messages)`` or the timeout."""
        consumer = Consumer(
            client_config(self.settings) | {"group.id": f"test-reader-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            found: list[Message] = []
            stop = time.monotonic() + timeout_s
            while time.monotonic() < stop:
                found += [m for m in consumer.consume(500, 0.2) if m.error() is None]
                if until(found):
                    break
            return found
        finally:
            consumer.close()

    async def replies(
        self, *, until: Callable[[list[SearchReply]], bool] | None = None, timeout_s: float = 10.0
    ) -> list[SearchReply]:
        """Every reply on the space's reply topic (decoded), waiting until ``until(replies)`` holds."""
        assert self.codec is not None
        codec = self.codec
        decoded: dict[tuple[int, int], SearchReply] = {}

        async def decode_all(messages: list[Message]) -> list[SearchReply]:
            for m in messages:
                where = (int(m.partition() or 0), int(m.offset() or 0))
                if where not in decoded:
                    decoded[where] = await codec.decode(m.value(), SearchReply)
            return list(decoded.values())

        loop = asyncio.get_running_loop()

        def done(messages: list[Message]) -> bool:
            if until is None:
                return False
            replies = asyncio.run_coroutine_threadsafe(decode_all(messages), loop).result(10)
            return until(replies)

        messages = await asyncio.to_thread(self.read_all, self.names.replies, until=done, timeout_s=timeout_s)
        return await decode_all(messages)

    async def dead_letters(self, *, until: Callable[[list[Message]], bool], timeout_s: float = 15.0) -> list[Message]:
        return await asyncio.to_thread(self.read_all, self.names.dlq, until=until, timeout_s=timeout_s)

    @staticmethod
    def headers(message: Message) -> dict[str, str]:
        return decode_headers(message.headers())


class StreamsWorker:
    """One ``python -m streams`` process on a topic space."""

    def __init__(self, space: TopicSpace, home: Path, instance: str, **env: str) -> None:
        self.space = space
        self.instance = instance
        self.health_port = free_port()
        self.log_path = home / "logs" / f"{space.prefix}{instance}.log"
        self.env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=space.settings.kafka_bootstrap_servers,
            **security_env(space.settings),
            SCHEMA_REGISTRY_URL=space.settings.schema_registry_url,
            JB_HOME=str(home),
            JB_TOPIC_PREFIX=space.prefix,
            JB_INSTANCE=instance,
            JB_HEALTH_PORT=str(self.health_port),
            JB_LOG_FORMAT="json",
            PYTHONUNBUFFERED="1",
            **env,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams"],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    async def healthy(self, timeout_s: float = 60.0) -> float:
        """Wait until the worker reports ready (partitions assigned); returns the seconds waited."""
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as http:
            while time.monotonic() - started < timeout_s:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"streams exited with {self.proc.returncode}: {self.tail()}")
                try:
                    if (await http.get(f"http://127.0.0.1:{self.health_port}/health")).status_code == 200:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"streams not healthy after {timeout_s} s: {self.tail()}")

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as http:
            answer: dict[str, Any] = (await http.get(f"http://127.0.0.1:{self.health_port}/health")).json()
            return answer

    def kill(self) -> None:
        """kill -9: no shutdown, no last commit."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextlib.asynccontextmanager
async def running_worker(space: TopicSpace, home: Path, name: str) -> AsyncIterator[StreamsWorker]:
    """A stream worker process on ``space``, healthy, stopped at the end whatever happened."""
    proc = StreamsWorker(space, home, name)
    proc.start()
    try:
        await proc.healthy()
        yield proc
    finally:
        proc.stop()
