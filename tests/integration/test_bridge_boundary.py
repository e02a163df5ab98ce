"""The bridge's boundary over real HTTP, against a real ``python -m mcp_bridge`` process on Kafka: one client
opening sessions without end is stopped at its own cap while another still gets in, and the bridge's memory
stays bounded; a 20 MB body is refused (413) without the bridge's memory growing; an Origin or Host from
another site is refused (DNS rebinding). Regression: on main one anonymous client opened 10,000 sessions in
32 s, the bridge grew from 98 to 483 MB and answered every client 503 for up to 30 minutes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from jetbridge.settings import REPO_ROOT
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


@dataclass
class BridgeProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

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
    port = free_port()
    log_path = test_home / "logs" / f"{space.prefix}bridge.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=space.settings.kafka_bootstrap_servers,
        SCHEMA_REGISTRY_URL=space.settings.schema_registry_url,
        JB_HOME=str(test_home),
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
    process = BridgeProcess(proc, f"http://127.0.0.1:{port}/mcp", log_path)
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


async def open_session(http: httpx.AsyncClient, url: str, client: str) -> httpx.Response:
    return await http.post(url, content=INITIALIZE, headers=MCP_HEADERS | {"x-client-id": client})


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
            answers = await asyncio.gather(*(open_session(http, bridge.url, "greedy") for _ in range(20)))
            for answer in answers:
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                if answer.status_code == 429:
                    retry_after.add(answer.headers.get("retry-after", ""))
            assert time.monotonic() - started < 120, f"{batch} attempts took over 120 s"
        other = await open_session(http, bridge.url, "polite")
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
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
    async with httpx.AsyncClient(timeout=10, trust_env=False, limits=limits) as http:
        started = time.monotonic()
        for batch in range(0, attempts, 20):
            answers = await asyncio.gather(
                *(open_session(http, bridge.url, f"rotating-{(batch + i) // 10}") for i in range(20))
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
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        declared = await http.post(bridge.url, content=body, headers=MCP_HEADERS)
        streamed = await http.post(bridge.url, content=chunks(), headers=MCP_HEADERS)  # chunked: no length given
    rss_after = bridge.rss_mb()
    print(f"20 MB body: {declared.status_code}/{streamed.status_code}; RSS {rss_before:.0f} -> {rss_after:.0f} MB")
    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert rss_after - rss_before < 10


async def test_an_origin_or_host_from_another_site_is_refused(bridge: BridgeProcess) -> None:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        foreign_origin = await http.post(
            bridge.url, content=INITIALIZE, headers=MCP_HEADERS | {"origin": "http://evil.example"}
        )
        foreign_host = await http.post(bridge.url, content=INITIALIZE, headers=MCP_HEADERS | {"host": "evil.example"})
        own_origin = await http.post(
            bridge.url, content=INITIALIZE, headers=MCP_HEADERS | {"origin": bridge.url.removesuffix("/mcp")}
        )
    assert foreign_origin.status_code == 403
    assert foreign_host.status_code in (403, 421)
    assert own_origin.status_code == 200
