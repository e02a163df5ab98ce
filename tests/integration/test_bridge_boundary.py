"""The bridge's boundary over real HTTP, against a real ``python -m mcp_bridge`` process on Kafka, with
authentication on as shipped (the agents hold API keys of the bridge): one client opening sessions without end
is stopped at its own cap while another still gets in, and the bridge's memory stays bounded; a 20 MB body is
refused (413) without the bridge's memory growing; an Origin or Host from another site is refused (DNS
rebinding); another client's session is not there for an agent (404); ``tools/list`` shows what the key's
scopes allow and a call outside them is 403; an agent over its rate gets ``rate_limited`` and nothing is
published. Regression: on main one anonymous client opened 10,000 sessions in 32 s, the bridge grew from 98
to 483 MB and answered every client 503 for up to 30 minutes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from jetbridge.settings import REPO_ROOT
from mcp_bridge.api_keys import KeyFile, new_key
from mcp_bridge.auth import OFFERS_READ, ORDERS_WRITE
from tests.support.kafka_tools import KafkaProbe
from tests.support.streams_worker import TopicSpace, free_port

pytestmark = pytest.mark.kafka

INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
).encode()
MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
RSS_CEILING_MB = 200
# The client registry of the bridge under test: the shipped defaults, and one agent allowed a search a minute.
SLOW_AGENT = """
[defaults]
max_fanout = 60
rate_per_s = 200
burst = 400

[clients.slow-agent]
rate_per_s = 0.0167
burst = 1
"""


@dataclass
class BridgeProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    keys_file: Path | None = None
    keys: dict[str, str] = field(default_factory=dict)

    def keys_for(self, clients: Iterable[str], scopes: tuple[str, ...] = (OFFERS_READ,)) -> list[str]:
        """An API key per client (made once, written to the bridge's keys file, which it reads on change)."""
        assert self.keys_file is not None
        made = {c: new_key(c, scopes) for c in clients if c not in self.keys}
        if made:
            key_file = KeyFile(self.keys_file)
            key_file.write([*key_file.read().values(), *(entry for _, entry in made.values())])
            self.keys |= {c: key for c, (key, _) in made.items()}
        return [self.keys[c] for c in clients]

    def auth(self, client: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys_for([client])[0]}"}

    def rss_mb(self) -> float:
        return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_bridge(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "mcp_bridge"],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


@pytest.fixture
async def bridge(space: TopicSpace, test_home: Path) -> AsyncIterator[BridgeProcess]:
    """One bridge process with the shipped boundary settings, on a topic space and a port of its own."""
    async with running_bridge(space, test_home) as process:
        yield process


@contextlib.asynccontextmanager
async def running_bridge(space: TopicSpace, test_home: Path, name: str = "bridge") -> AsyncIterator[BridgeProcess]:
    """A bridge process on the topic space; bridges of one space share its API keys and client registry."""
    port = free_port()
    log_path = test_home / "logs" / f"{space.prefix}{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    keys_file = test_home / "auth" / f"{space.prefix}api-keys.toml"
    clients_file = test_home / f"{space.prefix}clients.toml"
    clients_file.write_text(SLOW_AGENT, encoding="utf-8")
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=space.settings.kafka_bootstrap_servers,
        SCHEMA_REGISTRY_URL=space.settings.schema_registry_url,
        REDIS_URL=space.settings.redis_url,
        JB_HOME=str(test_home),
        JB_AUTH="on",
        JB_API_KEYS_FILE=str(keys_file),
        JB_CLIENTS_FILE=str(clients_file),
        JB_TOPIC_PREFIX=space.prefix,
        JB_BRIDGE_HOST="127.0.0.1",
        JB_BRIDGE_PORT=str(port),
        JB_LOG_FORMAT="json",
        JB_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    for key in ("JB_BRIDGE_MAX_SESSIONS", "JB_BRIDGE_MAX_SESSIONS_PER_CLIENT", "JB_BRIDGE_MAX_BODY_BYTES"):
        env.pop(key, None)
    proc = start_bridge(env, log_path)
    process = BridgeProcess(proc, f"http://127.0.0.1:{port}/mcp", log_path, keys_file)
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as http:
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"bridge exited with {proc.returncode}: {process.tail()}")
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"bridge not up after 60 s: {process.tail()}"
                await asyncio.sleep(0.1)
        yield process
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
async def probe(space: TopicSpace) -> AsyncIterator[KafkaProbe]:
    """Reads the end offsets of the topics of the bridge under test."""
    probe = KafkaProbe(space.settings)
    try:
        yield probe
    finally:
        await probe.close()


async def open_session(http: httpx.AsyncClient, bridge: BridgeProcess, client: str) -> httpx.Response:
    return await http.post(bridge.url, content=INITIALIZE, headers=MCP_HEADERS | bridge.auth(client))


async def rpc(
    http: httpx.AsyncClient, bridge: BridgeProcess, client: str, method: str, params: dict[str, Any]
) -> httpx.Response:
    """One JSON-RPC request of ``client`` in a session of its own (initialize, initialized, then ``method``)."""
    opened = await open_session(http, bridge, client)
    assert opened.status_code == 200, opened.text
    headers = MCP_HEADERS | bridge.auth(client) | session_of(opened)
    initialized = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
    await http.post(bridge.url, content=initialized, headers=headers)
    body = json.dumps({"jsonrpc": "2.0", "id": 2, "method": method, "params": params})
    return await http.post(bridge.url, content=body, headers=headers)


def session_of(opened: httpx.Response) -> dict[str, str]:
    return {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}


def rpc_result(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC result of a response, whether it came as JSON or as a server-sent event."""
    data = next((line[5:] for line in response.text.splitlines() if line.startswith("data:")), response.text)
    return dict(json.loads(data)["result"])


async def test_one_client_opening_sessions_without_end_stops_at_its_cap_while_another_gets_in(
    bridge: BridgeProcess,
) -> None:
    attempts, per_client = 2000, 64  # per_client: JB_BRIDGE_MAX_SESSIONS_PER_CLIENT's default
    rss_before = bridge.rss_mb()
    statuses: dict[int, int] = {}
    retry_after: set[str] = set()
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
    async with httpx.AsyncClient(timeout=10, trust_env=False, limits=limits) as http:
        started = time.monotonic()
        for batch in range(0, attempts, 20):
            answers = await asyncio.gather(*(open_session(http, bridge, "greedy") for _ in range(20)))
            for answer in answers:
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                if answer.status_code == 429:
                    retry_after.add(answer.headers.get("retry-after", ""))
            assert time.monotonic() - started < 120, f"{batch} attempts took over 120 s"
        other = await open_session(http, bridge, "polite")
    rss_after = bridge.rss_mb()
    print(f"sessions: {statuses} in {time.monotonic() - started:.1f} s; RSS {rss_before:.0f} -> {rss_after:.0f} MB")
    assert statuses == {200: per_client, 429: attempts - per_client}
    assert all(value.isdigit() and int(value) >= 1 for value in retry_after)
    assert other.status_code == 200
    assert other.headers.get("mcp-session-id")
    assert rss_after < RSS_CEILING_MB


async def test_clients_rotating_their_ids_are_stopped_by_the_total_cap_with_memory_bounded(
    bridge: BridgeProcess,
) -> None:
    attempts, total = 1200, 1000  # total: JB_BRIDGE_MAX_SESSIONS' default
    statuses: dict[int, int] = {}
    bridge.keys_for([f"rotating-{n}" for n in range(attempts // 10)])
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
    async with httpx.AsyncClient(timeout=10, trust_env=False, limits=limits) as http:
        started = time.monotonic()
        for batch in range(0, attempts, 20):
            answers = await asyncio.gather(
                *(open_session(http, bridge, f"rotating-{(batch + i) // 10}") for i in range(20))
            )
            for answer in answers:
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            assert time.monotonic() - started < 120, f"{batch} attempts took over 120 s"
    rss = bridge.rss_mb()
    print(f"sessions: {statuses} in {time.monotonic() - started:.1f} s; RSS {rss:.0f} MB")
    assert statuses == {200: total, 503: attempts - total}
    assert rss < RSS_CEILING_MB


async def test_a_20_mb_body_is_refused_413_without_the_bridge_memory_growing(bridge: BridgeProcess) -> None:
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"pad": "' + b"x" * (20 * 2**20) + b'"}}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 2**20):
            yield body[start : start + 2**20]

    rss_before = bridge.rss_mb()
    signed = MCP_HEADERS | bridge.auth("big-sender")
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        declared = await http.post(bridge.url, content=body, headers=signed)
        streamed = await http.post(bridge.url, content=chunks(), headers=signed)  # chunked: no length given
        anonymous = await http.post(bridge.url, content=body, headers=MCP_HEADERS)
    rss_after = bridge.rss_mb()
    print(f"20 MB body: {declared.status_code}/{streamed.status_code}; RSS {rss_before:.0f} -> {rss_after:.0f} MB")
    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert anonymous.status_code == 401  # refused before its body is read
    assert rss_after - rss_before < 10


async def test_an_origin_or_host_from_another_site_is_refused(bridge: BridgeProcess) -> None:
    signed = MCP_HEADERS | bridge.auth("browser-agent")
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        foreign_origin = await http.post(
            bridge.url, content=INITIALIZE, headers=signed | {"origin": "http://evil.example"}
        )
        foreign_host = await http.post(bridge.url, content=INITIALIZE, headers=signed | {"host": "evil.example"})
        own_origin = await http.post(
            bridge.url, content=INITIALIZE, headers=signed | {"origin": bridge.url.removesuffix("/mcp")}
        )
    assert foreign_origin.status_code == 403
    assert foreign_host.status_code in (403, 421)
    assert own_origin.status_code == 200


async def test_an_agent_cannot_use_another_agents_session(bridge: BridgeProcess) -> None:
    listing = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        opened = await open_session(http, bridge, "agent-a")
        as_b = MCP_HEADERS | bridge.auth("agent-b") | session_of(opened)
        read = await http.post(bridge.url, content=listing, headers=as_b)
        listened = await http.get(bridge.url, headers=as_b)  # the session's stream of server messages
        ended = await http.delete(bridge.url, headers=as_b)
        as_a = MCP_HEADERS | bridge.auth("agent-a") | session_of(opened)
        still = await http.post(bridge.url, content=listing, headers=as_a)
    assert (read.status_code, listened.status_code, ended.status_code) == (404, 404, 404)
    assert still.status_code == 200  # neither read nor ended by agent-b


async def test_tools_list_follows_the_keys_scopes_and_a_call_outside_them_is_403(
    bridge: BridgeProcess, space: TopicSpace, probe: KafkaProbe
) -> None:
    bridge.keys_for(["order-bot"], scopes=(ORDERS_WRITE,))
    search = {"name": "search_offers", "arguments": {"origin": "LHR", "destination": "JFK"}}
    requests_before = sum((await probe.end_offsets(space.names.requests)).values())
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        reader = rpc_result(await rpc(http, bridge, "reader", "tools/list", {}))
        writer = rpc_result(await rpc(http, bridge, "order-bot", "tools/list", {}))
        refused = await rpc(http, bridge, "order-bot", "tools/call", search)
    assert sorted(t["name"] for t in reader["tools"]) == ["list_airlines", "price_offer", "search_offers"]
    assert sorted(t["name"] for t in writer["tools"]) == ["cancel_order", "create_order", "get_order"]
    assert refused.status_code == 403
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert 'scope="offers:read"' in refused.headers["www-authenticate"]
    assert sum((await probe.end_offsets(space.names.requests)).values()) == requests_before


async def test_an_agent_over_its_rate_is_rate_limited_and_nothing_is_published(
    bridge: BridgeProcess, space: TopicSpace, probe: KafkaProbe
) -> None:
    departure = (datetime.now(UTC).date() + timedelta(days=14)).isoformat()
    search = {
        "name": "search_offers",
        "arguments": {"origin": "LHR", "destination": "JFK", "departure_date": departure, "deadline_ms": 300},
    }
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        first = await rpc(http, bridge, "slow-agent", "tools/call", search)  # its burst of one: published
        requests_before = sum((await probe.end_offsets(space.names.requests)).values())
        second = await rpc(http, bridge, "slow-agent", "tools/call", search)
        requests_after = sum((await probe.end_offsets(space.names.requests)).values())
    assert first.status_code == 200
    answer = rpc_result(second)
    assert answer["isError"] is True
    assert "(code rate_limited, retriable, retry_after_s" in answer["content"][0]["text"]
    assert requests_after == requests_before


async def test_two_bridges_share_an_agents_allowance(bridge: BridgeProcess, space: TopicSpace, test_home: Path) -> None:
    """The client's allowance is counted in Redis: its one search a minute, spent on one bridge, is spent on
    the other too."""
    departure = (datetime.now(UTC).date() + timedelta(days=14)).isoformat()
    search = {
        "name": "search_offers",
        "arguments": {"origin": "LHR", "destination": "JFK", "departure_date": departure, "deadline_ms": 300},
    }
    async with running_bridge(space, test_home, "bridge-2") as second, httpx.AsyncClient(timeout=10) as http:
        second.keys = bridge.keys  # one keys file: the same agent, the same key, on either bridge
        first_answer = rpc_result(await rpc(http, bridge, "slow-agent", "tools/call", search))
        second_answer = rpc_result(await rpc(http, second, "slow-agent", "tools/call", search))
    assert "rate_limited" not in json.dumps(first_answer)
    assert second_answer["isError"] is True
    assert "(code rate_limited, retriable, retry_after_s" in second_answer["content"][0]["text"]
