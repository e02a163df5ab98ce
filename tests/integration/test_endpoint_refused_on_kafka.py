"""On real Kafka, with a real simulated airline: a connector worker whose airline's host resolves to an address
the registry does not allow never calls it. Its calls are answered at once with ``airline_quarantined`` and the
reason (host, address, what to list), nothing is dead-lettered, and the worker's health says which airline is
refused; the same worker with the name listed calls the airline as usual. Resolvers are injected."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import httpx
import pytest
from confluent_kafka import Message

from connectors.egress import EndpointGate, guarded_transport
from connectors.service import health_report
from connectors.worker import ConnectorWorker
from infra.simulators import Simulators
from jetbridge.airlines import Airline
from jetbridge.endpoints import PrivateEndpoints, Resolver
from jetbridge.http import build_http_client
from jetbridge.settings import Settings
from schemas.models import AirlineResponse, ResponseStatus, now_utc
from tests.integration.simulators_fixture import control_client, running_simulators
from tests.support import factories as f
from tests.support.streams_worker import TopicSpace

pytestmark = pytest.mark.kafka

CODE = "BA"
NAME = "ndc.ba-airline.example"  # a public-looking name no DNS knows: the injected resolver answers for it


@pytest.fixture(scope="module")
async def sims() -> AsyncIterator[Simulators]:
    async with running_simulators([CODE]) as running:
        yield running


@pytest.fixture
async def space(settings: Settings) -> AsyncIterator[TopicSpace]:
    topics = TopicSpace(settings)
    await topics.open()
    try:
        yield topics
    finally:
        await topics.close()


async def to_loopback(host: str, port: int) -> Sequence[str]:
    """DNS as a rebinding attacker would have it: the airline's public name answers with this machine."""
    if host != NAME:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return ["127.0.0.1"]


async def simulator_calls(sims: Simulators) -> int:
    async with control_client(sims) as control:
        calls: int = (await control.get(f"/airlines/{CODE}")).json()[CODE]["calls"]
        return calls


async def answer_of_one_call(
    space: TopicSpace, sims: Simulators, airline: Airline, resolver: Resolver, request_id: str
) -> tuple[AirlineResponse, ConnectorWorker, dict[str, object]]:
    """Run a worker for ``airline`` (building its own connector and client, as the service does), send it one
    call and return the response, the worker and the process's health answer while it ran."""
    assert space.codec is not None
    codec = space.codec
    settings = space.settings
    http = build_http_client(timeout_s=5.0, transport=guarded_transport(airline, resolver=resolver))
    worker = ConnectorWorker(
        airline,
        codec=codec,
        producer=space.producer,
        consumer_config={"bootstrap.servers": settings.kafka_bootstrap_servers},
        http=http,
        calls_topic=space.names.calls(CODE),
        responses_topic=space.names.responses,
        dlq_topic=space.names.dlq,
        group_id=f"{space.prefix}jb.connector.{CODE}",
        session_timeout_ms=settings.group_session_timeout_ms,
        endpoint_gate=EndpointGate(airline, resolver=resolver),
    )
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(30):
            await worker.assigned.wait()
        deadline = now_utc() + timedelta(seconds=5)
        call = f.airline_call(request_id=request_id, correlation_id=request_id, airline=CODE, deadline=deadline)
        await space.send(space.names.calls(CODE), call, key=request_id)
        found: list[AirlineResponse] = []
        loop = asyncio.get_running_loop()

        def answered(messages: list[Message]) -> bool:
            found[:] = [
                response
                for m in messages
                if (
                    response := asyncio.run_coroutine_threadsafe(codec.decode(m.value(), AirlineResponse), loop).result(
                        10
                    )
                ).request_id
                == request_id
            ]
            return bool(found)

        await asyncio.to_thread(space.read_all, space.names.responses, until=answered, timeout_s=20)
        assert len(found) == 1, f"one response to {request_id}, got {found}"
        return found[0], worker, health_report([worker], [task], "connectors-test")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await http.aclose()


def ba_at(sims: Simulators, host: str, *listed: str) -> Airline:
    """The simulated BA with its endpoint written with ``host``, and the registry listing ``listed``."""
    url = httpx.URL(sims.endpoint(CODE)).copy_with(host=host)
    return dataclasses.replace(sims.airline(CODE), endpoint=str(url), private_endpoints=PrivateEndpoints.parse(listed))


async def test_a_worker_whose_airline_name_resolves_to_a_private_address_answers_its_calls_without_calling_it(
    space: TopicSpace, sims: Simulators
) -> None:
    before = await simulator_calls(sims)
    response, worker, health = await answer_of_one_call(space, sims, ba_at(sims, NAME), to_loopback, "rebound")

    assert response.status is ResponseStatus.ERROR
    assert response.error is not None
    assert response.error.code == "airline_quarantined"
    assert response.error.message.startswith(
        f"BA: endpoint refused, not called: host {NAME} resolves to 127.0.0.1, a loopback address"
    )
    assert f'add "{NAME}" or "127.0.0.1" to private_endpoints_allowed' in response.error.message
    assert response.attempts == 0
    assert await simulator_calls(sims) == before, "the airline was never called"
    assert worker.endpoint_refused is not None
    assert health["status"] == "ok", "the worker answers its calls: the refusal is the airline's state"
    assert health["endpoints_refused"] == {CODE: worker.endpoint_refused}
    assert health["reason"] == "endpoint refused, not called: BA"
    letters = await space.dead_letters(until=lambda _: False, timeout_s=1.0)
    assert letters == [], "a refusal is told in the response, not dead-lettered"


async def test_a_worker_refuses_localhost_when_the_registry_lists_only_its_address(
    space: TopicSpace, sims: Simulators
) -> None:
    before = await simulator_calls(sims)
    response, worker, health = await answer_of_one_call(
        space, sims, ba_at(sims, "localhost", "127.0.0.1"), to_loopback, "by-localhost"
    )
    assert response.error is not None
    assert response.error.code == "airline_quarantined"
    assert "host localhost is a loopback name" in response.error.message
    assert 'add "localhost"' in response.error.message
    assert await simulator_calls(sims) == before
    assert health["endpoints_refused"] == {CODE: worker.endpoint_refused}


async def test_the_same_worker_with_the_name_listed_calls_the_airline(space: TopicSpace, sims: Simulators) -> None:
    before = await simulator_calls(sims)
    response, worker, health = await answer_of_one_call(space, sims, ba_at(sims, NAME, NAME), to_loopback, "listed")
    assert response.status is ResponseStatus.OK, response.error
    assert response.offers
    assert await simulator_calls(sims) == before + 1
    assert worker.endpoint_refused is None
    assert "endpoints_refused" not in health
