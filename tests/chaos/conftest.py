"""A whole local stack to break: real processes under the supervisor, the real broker, real MCP agents.

The chaos stack has its own home, ports and topic prefix (``chaos.``), so it never meets the end-to-end
stack. Each scenario drives searches through MCP, breaks something, and then checks the invariant from
the topics themselves: every request the bridge published has exactly one reply on the reply topic, and
every agent got a result or a clear error.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.stack.backends import Infra
from jetbridge.settings import REPO_ROOT, Settings
from jetbridge.topics import TopicNames
from schemas.models import AuditRecord, SearchReply
from tests.conftest import PORT_SHIFT
from tests.e2e.conftest import Stack, running_stack
from tests.support.kafka_tools import KafkaProbe

PREFIX = "chaos."
BRIDGE_PORT = 18280 + PORT_SHIFT
SIM_CONTROL_PORT = 19400 + PORT_SHIFT
AIRLINE_PORT_SHIFT = 10300 + PORT_SHIFT  # 9201 -> 19501
HEALTH_PORT_BASE = 18500 + PORT_SHIFT
SOON = (datetime.now(UTC).date() + timedelta(days=21)).isoformat()

# Every scenario's counts, printed at the end of the test run (not only with -s).
REPORT: list[str] = []


def report(line: str) -> None:
    print(line)
    REPORT.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("chaos: what each scenario counted")
        for line in REPORT:
            terminalreporter.write_line(line)


@dataclass
class Outcome:
    """What one agent got: a result (status) or a tool error (code), and how long it took."""

    request_id: str | None
    status: str | None
    error_code: str | None
    elapsed_s: float
    deadline_s: float
    started_at: float


@dataclass
class Counts:
    requests_in: int
    replies_out: int
    lost: list[str]
    duplicated: list[str]
    agents: Counter[str] = field(default_factory=Counter)

    def line(self, scenario: str) -> str:
        return (
            f"[chaos] {scenario}: requests in {self.requests_in}, replies out {self.replies_out}, "
            f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, agents {dict(self.agents)}"
        )


class ChaosStack:
    def __init__(self, stack: Stack, settings: Settings) -> None:
        self.stack = stack
        self.settings = settings
        self.names = TopicNames(PREFIX)
        self.probe = KafkaProbe(settings)

    # ---- processes ----
    def up(self, scale: str | None = None) -> None:
        args = ["up"] + (["--scale", scale] if scale else [])
        result = self.stack.jetbridge(*args)
        assert result.returncode == 0, f"jetbridge up failed:\n{result.stdout}\n{result.stderr}"

    def instances(self) -> dict[str, dict[str, Any]]:
        state = json.loads((self.stack.home / "run" / "stack.json").read_text())
        return {i["name"]: i for i in state["instances"]}

    def kill(self, name: str) -> int:
        """kill -9 of one instance (its whole process group); returns the PID killed."""
        pid = int(self.instances()[name]["pid"])
        os.killpg(pid, signal.SIGKILL)
        return pid

    async def healthy_again(self, name: str, old_pid: int, timeout_s: float = 30.0) -> float:
        """Seconds until the supervisor has a new, healthy process for ``name``."""
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as http:
            while time.monotonic() - started < timeout_s:
                info = self.instances().get(name, {})
                if info.get("pid") not in (None, old_pid):
                    try:
                        if (await http.get(info["health_url"])).status_code == 200:
                            return time.monotonic() - started
                    except httpx.HTTPError:
                        pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"{name} not restarted and healthy within {timeout_s} s: {self.instances().get(name)}")

    # ---- airlines ----
    async def airlines(self, **patches: dict[str, Any]) -> None:
        async with httpx.AsyncClient(base_url=self.stack.control_url, timeout=10, trust_env=False) as http:
            await http.post("/reset")
            for code, patch in patches.items():
                assert (await http.put(f"/airlines/{code}", json=patch)).status_code == 200

    # ---- agents ----
    async def search(self, deadline_ms: int = 3000, **overrides: Any) -> Outcome:
        # Live offers only: the chaos suites measure the live path, which the offer cache would stand in for.
        arguments = {
            "origin": "LHR",
            "destination": "JFK",
            "departure_date": SOON,
            "deadline_ms": deadline_ms,
            "fresh": True,
        }
        started = time.monotonic()
        try:
            async with self.stack.agent() as client:
                call_started = time.monotonic()
                result = await client.call_tool("search_offers", arguments | overrides)
        except Exception as exc:  # noqa: BLE001 - the bridge itself unreachable is an outcome too
            return Outcome(
                None, None, f"client:{type(exc).__name__}", time.monotonic() - started, deadline_ms / 1000, started
            )
        elapsed = time.monotonic() - call_started
        if result.is_error:
            text = " ".join(getattr(c, "text", "") for c in result.content)
            rid = re.search(r"request ([0-9a-f-]{36})", text)
            code = re.search(r"code (\w+)", text)
            return Outcome(
                rid.group(1) if rid else None,
                None,
                code.group(1) if code else text[:80],
                elapsed,
                deadline_ms / 1000,
                started,
            )
        content = result.structured_content or {}
        return Outcome(content["request_id"], content["status"], None, elapsed, deadline_ms / 1000, started)

    async def searches(self, n: int, rate_per_s: float, deadline_ms: int = 3000) -> list[Outcome]:
        """``n`` searches arriving at ``rate_per_s`` (open loop), each its own MCP agent."""
        tasks: list[asyncio.Task[Outcome]] = []
        for i in range(n):
            tasks.append(asyncio.create_task(self.search(deadline_ms)))
            if i < n - 1:
                await asyncio.sleep(1 / rate_per_s)
        return list(await asyncio.gather(*tasks))

    async def first_complete_after(self, since: float, limit_s: float = 30.0) -> float:
        """Seconds from ``since`` until a fresh search comes back complete."""
        while time.monotonic() - since < limit_s:
            outcome = await self.search(deadline_ms=3000)
            if outcome.status == "complete":
                return time.monotonic() - since
            await asyncio.sleep(0.2)
        raise AssertionError(f"no complete search within {limit_s} s")

    # ---- the invariant, read from the topics ----
    async def marks(self) -> dict[str, dict[int, int]]:
        topics = (self.names.requests, self.names.replies, self.names.audit)
        return {t: await self.probe.end_offsets(t) for t in topics}

    async def bridge_durations_ms(self, since: dict[str, dict[int, int]]) -> list[int]:
        """How long the bridge held each search since ``since``, as its audit records say: from the call's start in
        the bridge to its answer (what the bridge bounds; the agent's own figure adds the HTTP round trip)."""
        records = await self.probe.read_since(self.names.audit, since[self.names.audit], until_s=3)
        assert self.probe.codec is not None
        audits = [await self.probe.codec.decode(m.value(), AuditRecord) for m in records]
        return [a.duration_ms for a in audits if a.tool == "search_offers"]

    async def counts(self, since: dict[str, dict[int, int]], outcomes: list[Outcome], settle_s: float = 20.0) -> Counts:
        """Requests published since ``since`` and their replies, once every reply had time to come."""
        requests = await self.probe.read_since(self.names.requests, since[self.names.requests], until_s=3)
        ids = {(m.key() or b"").decode() for m in requests}

        def replied(messages: list[Any]) -> bool:
            return ids <= {(m.key() or b"").decode() for m in messages}

        replies = await self.probe.read_since(
            self.names.replies, since[self.names.replies], until_s=settle_s, want=replied
        )
        # Replies that arrive late (a dead stage's work replayed) would show up here: read a little more.
        replies += await self.probe.read_since(
            self.names.replies, {p: o for p, o in (await self.probe.end_offsets(self.names.replies)).items()}, until_s=2
        )
        per_id = Counter((m.key() or b"").decode() for m in replies)
        assert self.probe.codec is not None
        for m in replies:  # every reply is a valid contract event
            await self.probe.codec.decode(m.value(), SearchReply)
        agents = Counter(o.status or o.error_code or "?" for o in outcomes)
        return Counts(
            requests_in=len(ids),
            replies_out=sum(per_id[i] for i in ids),
            lost=sorted(i for i in ids if per_id[i] == 0),
            duplicated=sorted(i for i in ids if per_id[i] > 1),
            agents=agents,
        )


@pytest.fixture(scope="session")
def chaos_stack(infra: Infra, test_home: Path) -> Iterator[Stack]:
    with running_stack(
        infra,
        test_home / "chaos",
        bridge_port=BRIDGE_PORT,
        control_port=SIM_CONTROL_PORT,
        health_port_base=HEALTH_PORT_BASE,
        airline_port_shift=AIRLINE_PORT_SHIFT,
        JB_TOPIC_PREFIX=PREFIX,
    ) as started:
        yield started


@pytest.fixture
async def chaos(chaos_stack: Stack, settings: Settings) -> AsyncIterator[ChaosStack]:
    breaker = ChaosStack(chaos_stack, settings.model_copy(update={"topic_prefix": PREFIX}))
    await breaker.probe.open()
    try:
        yield breaker
    finally:
        await breaker.airlines()
        await breaker.probe.close()


def kafka_script(action: str, test_home: Path, infra: Infra) -> subprocess.CompletedProcess[bytes]:
    """The test session's own broker, stopped or started by the project's script."""
    port = int(infra.bootstrap_servers.rsplit(":", 1)[1])
    env = dict(os.environ, JB_HOME=str(test_home), JB_KAFKA_PORT=str(port), JB_KAFKA_CONTROLLER_PORT=str(port + 1))
    return subprocess.run(
        ["/bin/bash", str(REPO_ROOT / "infra" / "kafka" / "kafka.sh"), action],
        env=env,
        capture_output=True,
        check=False,
    )
