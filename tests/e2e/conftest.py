"""The whole local stack for end-to-end tests: `jetbridge up` on test ports, driven through MCP over HTTP.

Authentication is on, as by default: `jetbridge up` runs the development issuer on a port of the stack's own,
and the tests call the bridge as the agent ``e2e-agent`` with a token of that issuer (`Stack.agent`)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from infra.auth.dev_issuer import auth_dir, load_or_create_key, mint
from infra.stack.backends import Infra
from jetbridge.airlines import DEFAULT_REGISTRY
from jetbridge.settings import REPO_ROOT, Settings
from mcp_bridge.agent import open_agent
from mcp_bridge.auth import OFFERS_READ
from tests.conftest import PORT_SHIFT

BRIDGE_PORT = 18080 + PORT_SHIFT
SECOND_BRIDGE_PORT = 18090 + PORT_SHIFT
SIM_CONTROL_PORT = 19100 + PORT_SHIFT
# streams-N serves /health on 19300 + N, connectors-N on 19350 + N (see infra/stack/components.py)
HEALTH_PORT_BASE = 19300 + PORT_SHIFT
# 9201 -> 19201: the test stack never collides with a developer's stack
AIRLINE_PORT_SHIFT = 10000 + PORT_SHIFT


# The development issuer of a test stack listens this far above its bridge's port.
ISSUER_PORT_OFFSET = 5
AGENT = "e2e-agent"


@dataclass(frozen=True)
class Stack:
    home: Path
    env: dict[str, str]
    bridge_url: str
    control_url: str
    issuer_url: str

    def token(self, client: str = AGENT, scopes: tuple[str, ...] = (OFFERS_READ,), ttl_s: int = 4 * 3600) -> str:
        """A token of the stack's development issuer for ``client`` (its key is in the stack's home)."""
        key = load_or_create_key(auth_dir(self.home))
        audience = self.bridge_url
        return mint(key, issuer=self.issuer_url, audience=audience, client_id=client, scopes=list(scopes), ttl_s=ttl_s)

    def settings(self, **overrides: Any) -> Settings:
        """The settings a process of this stack reads (its environment), with ``overrides``."""
        return Settings(**(self.env | overrides))

    def agent(
        self,
        url: str | None = None,
        *,
        client: str = AGENT,
        scopes: tuple[str, ...] = (OFFERS_READ,),
        **options: Any,
    ) -> contextlib.AbstractAsyncContextManager[Client]:
        """An MCP session with the bridge (or another instance of it at ``url``), as the agent ``client`` with
        ``scopes``; ``options`` go to the SDK's `Client` (``elicitation_callback``, ``mode``...)."""
        return open_agent(url or self.bridge_url, token=self.token(client, scopes), **options)

    def jetbridge(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jetbridge.cli", *args],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def shifted_registry(home: Path, shift: int = AIRLINE_PORT_SHIFT) -> Path:
    """The airline registry with every simulator port moved by ``shift``, so a test stack has its own."""
    text = DEFAULT_REGISTRY.read_text(encoding="utf-8")
    text = re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{int(m.group(1)) + shift}", text)
    path = home / "airlines.toml"
    path.write_text(text, encoding="utf-8")
    return path


@contextlib.contextmanager
def running_stack(
    infra: Infra,
    home: Path,
    *,
    bridge_port: int,
    control_port: int,
    health_port_base: int,
    airline_port_shift: int,
    **env: str,
) -> Iterator[Stack]:
    """`jetbridge up` on ports and a home of its own (plus any extra settings), `jetbridge down` after."""
    home.mkdir(parents=True, exist_ok=True)
    bridge_url = f"http://127.0.0.1:{bridge_port}/mcp"
    issuer_url = f"http://127.0.0.1:{bridge_port + ISSUER_PORT_OFFSET}"
    stack = Stack(
        home=home,
        env=dict(
            os.environ,
            JB_HOME=str(home),
            JB_AIRLINES_FILE=str(shifted_registry(home, airline_port_shift)),
            JB_BRIDGE_PORT=str(bridge_port),
            JB_SIM_CONTROL_PORT=str(control_port),
            JB_HEALTH_PORT_BASE=str(health_port_base),
            KAFKA_BOOTSTRAP_SERVERS=infra.bootstrap_servers,
            SCHEMA_REGISTRY_URL=infra.registry_url,
            JB_LOG_FORMAT="json",
            JB_TRACING="file",  # spans in $JB_HOME/traces/, for `jetbridge trace` (tests/e2e/test_trace.py)
            JB_AUTH_ISSUER=issuer_url,
            # Every bridge instance of the stack is one resource, whatever port it listens on.
            JB_AUTH_RESOURCE=bridge_url,
            **env,
        ),
        bridge_url=bridge_url,
        control_url=f"http://127.0.0.1:{control_port}",
        issuer_url=issuer_url,
    )
    result = stack.jetbridge("up")
    if result.returncode != 0:
        stack.jetbridge("down")
        pytest.fail(f"jetbridge up failed:\n{result.stdout}\n{result.stderr}")
    print(result.stdout)
    try:
        yield stack
    finally:
        stack.jetbridge("down")


@pytest.fixture(scope="session")
def stack(infra: Infra, test_home: Path) -> Iterator[Stack]:
    with running_stack(
        infra,
        test_home,
        bridge_port=BRIDGE_PORT,
        control_port=SIM_CONTROL_PORT,
        health_port_base=HEALTH_PORT_BASE,
        airline_port_shift=AIRLINE_PORT_SHIFT,
    ) as started:
        yield started


@pytest.fixture
async def simulators(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The simulators' control API; every airline is reset after the test."""
    async with httpx.AsyncClient(base_url=stack.control_url, timeout=10, trust_env=False) as client:
        await client.post("/reset")
        try:
            yield client
        finally:
            await client.post("/reset")


async def call_tool(stack: Stack, name: str, arguments: dict[str, Any]) -> Any:
    async with stack.agent() as client:
        return await client.call_tool(name, arguments)


def error_text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


@contextlib.asynccontextmanager
async def second_bridge(stack: Stack) -> AsyncIterator[str]:
    """Another bridge instance of the stack (its own process, on `SECOND_BRIDGE_PORT`): its URL, once healthy."""
    env = dict(stack.env, JB_BRIDGE_PORT=str(SECOND_BRIDGE_PORT))
    log = (stack.home / "logs" / "bridge-second.log").open("ab")
    second = subprocess.Popen(  # noqa: ASYNC220 - returns at once; then its health is polled
        [sys.executable, "-m", "mcp_bridge"], env=env, cwd=REPO_ROOT, stdout=log, stderr=log
    )
    try:
        with anyio.fail_after(60):
            while True:
                try:
                    async with httpx.AsyncClient(trust_env=False) as http:
                        if (await http.get(f"http://127.0.0.1:{SECOND_BRIDGE_PORT}/health")).status_code == 200:
                            break
                except httpx.HTTPError:
                    pass
                await anyio.sleep(0.2)
        yield f"http://127.0.0.1:{SECOND_BRIDGE_PORT}/mcp"
    finally:
        second.terminate()
        second.wait(timeout=20)
        log.close()
