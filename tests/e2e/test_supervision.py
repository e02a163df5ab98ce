"""The local stack's supervisor on the real stack: a worker killed with SIGKILL comes back by itself, healthy,
and `jetbridge status` says so; `up --scale` on a running stack changes the number of workers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from infra.stack.state import InstanceState, StackFiles, alive
from tests.e2e.conftest import Stack, call_tool

pytestmark = pytest.mark.e2e


def _files(stack: Stack) -> StackFiles:
    return StackFiles(stack.home / "run", stack.home / "logs")


def _instance(stack: Stack, name: str) -> InstanceState:
    state = _files(stack).read_state()
    assert state is not None, "the supervisor writes run/stack.json"
    return next(i for i in state.instances if i.name == name)


def _status_row(output: str, name: str) -> list[str]:
    return next(line.split() for line in output.splitlines() if line.split()[:1] == [name])


@pytest.fixture
def running(stack: Stack) -> Stack:
    """The stack, up: `test_stack_down` (earlier in file order) stops it, so start it again if needed."""
    if stack.jetbridge("status").returncode != 0:
        result = stack.jetbridge("up")
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return stack


async def _healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def _complete_search(stack: Stack) -> bool:
    departure = (datetime.now(UTC).date() + timedelta(days=30)).isoformat()
    # fresh: the airlines asked live, so every stage's partitions are used (not the offer cache)
    arguments = {"origin": "LHR", "destination": "JFK", "departure_date": departure, "fresh": True}
    result = await call_tool(stack, "search_offers", arguments | {"deadline_ms": 5000})
    assert not result.is_error, result.content
    return bool(result.structured_content["status"] == "complete")


@pytest.mark.parametrize("name", ["streams-1", "connectors-1"])
async def test_a_worker_killed_with_sigkill_is_restarted_and_healthy_again(running: Stack, name: str) -> None:
    # `up` returns once every health URL answers; the supervisor's own probe marks the instance running a
    # moment later (it probes a starting child every tick).
    async with asyncio.timeout(15):
        while (before := _instance(running, name)).state != "running":  # noqa: ASYNC110 - polling another process's state file
            await asyncio.sleep(0.05)
    assert before.pid is not None
    killed_at = time.monotonic()
    os.kill(before.pid, signal.SIGKILL)

    async with asyncio.timeout(60):
        while True:
            now = _instance(running, name)
            if now.pid not in (None, before.pid) and alive(now.pid) and await _healthy(now.health_url):
                break
            await asyncio.sleep(0.05)
    took = time.monotonic() - killed_at
    print(f"{name}: SIGKILL to healthy again in {took:.2f} s")

    assert now.restarts == before.restarts + 1
    assert now.last_exit_signal == "SIGKILL"
    assert not alive(before.pid)
    status = running.jetbridge("status")
    assert status.returncode == 0, status.stdout
    row = _status_row(status.stdout, name)
    assert row[1:4] == [str(now.pid), "healthy", str(now.restarts)], status.stdout

    # It took its partitions back: a search goes through every stage again.
    departure = (datetime.now(UTC).date() + timedelta(days=30)).isoformat()
    result = await call_tool(
        running,
        "search_offers",
        {"origin": "LHR", "destination": "JFK", "departure_date": departure, "deadline_ms": 5000},
    )
    assert not result.is_error
    assert result.structured_content["status"] == "complete", result.structured_content


async def test_up_with_a_new_scale_applies_it_to_the_running_stack(running: Stack) -> None:
    bridge = _instance(running, "bridge")
    scaled = running.jetbridge("up", "--scale", "streams=2,connectors=2")
    assert scaled.returncode == 0, f"{scaled.stdout}\n{scaled.stderr}"
    assert "streams=2,connectors=2" in scaled.stdout
    status = running.jetbridge("status")
    assert status.returncode == 0, status.stdout
    for name in ("streams-1", "streams-2", "connectors-1", "connectors-2"):
        assert _status_row(status.stdout, name)[2] == "healthy", status.stdout
    assert _instance(running, "streams-2").health_url != _instance(running, "streams-1").health_url
    assert _instance(running, "bridge").pid == bridge.pid, "what did not change kept running"
    assert await _complete_search(running), "once `up --scale` returned, the new workers serve"

    back = running.jetbridge("up", "--scale", "streams=1,connectors=1")
    assert back.returncode == 0, f"{back.stdout}\n{back.stderr}"
    # Removed workers are static members: their partitions stay theirs until their sessions expire, so `up`
    # returns only once the groups settled (on main it returned at once, and the next search went unanswered).
    assert "stable at the plan's scale" in back.stdout, back.stdout
    assert await _complete_search(running), "once `up --scale` returned, every partition is served again"
    status = running.jetbridge("status")
    assert status.returncode == 0, status.stdout
    names = {line.split()[0] for line in status.stdout.splitlines() if line.split()}
    assert "streams-2" not in names
    assert "connectors-2" not in names
