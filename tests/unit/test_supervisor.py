"""The local stack's supervisor with stand-in children (``python -c ...``): restart, backoff, scale, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from infra.stack.components import InstanceSpec
from infra.stack.state import InstanceState, StackFiles, alive
from infra.stack.supervisor import RestartPolicy, Supervisor

FAST = RestartPolicy(initial_s=0.05, factor=2.0, max_s=0.2, stable_after_s=60.0)


def _spec(name: str, code: str, *, kind: str | None = None, index: int = 1, ready: Path | None = None) -> InstanceSpec:
    return InstanceSpec(
        name=name,
        kind=kind or name.rsplit("-", 1)[0],
        index=index,
        argv=(sys.executable, "-c", code),
        env={"JB_INSTANCE": name},
        health_url=str(ready) if ready else "",
    )


def _sleeper(ready: Path, *, on_term: str = "", ignore_term: bool = False) -> str:
    """A child that marks itself ready (after installing its SIGTERM handler) and sleeps."""
    handler = "signal.SIG_IGN" if ignore_term else "lambda *_: (on_term(), sys.exit(0))"
    return (
        "import pathlib, signal, sys, time\n"
        f"def on_term():\n    {on_term or 'pass'}\n"
        f"signal.signal(signal.SIGTERM, {handler})\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(120)\n"
    )


async def _file_exists(url: str) -> bool:
    return Path(url).exists()  # noqa: ASYNC240 - a stat() of a local file, as cheap as the probe it stands in for


async def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 - polling another process's effect
            await asyncio.sleep(0.01)


@pytest.fixture
async def files(tmp_path: Path) -> StackFiles:
    return StackFiles(tmp_path / "run", tmp_path / "logs")


@pytest.fixture
async def supervisor(files: StackFiles) -> AsyncIterator[Supervisor]:
    sup = Supervisor(files, env=os.environ, policy=FAST, grace_s=2.0, probe=_file_exists)
    health = asyncio.create_task(sup.watch_health())
    try:
        yield sup
    finally:
        health.cancel()
        await sup.stop()


def _one(sup: Supervisor, name: str) -> InstanceState:
    return next(i for i in sup.instances if i.name == name)


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy(initial_s=0.5, factor=2.0, max_s=30.0, stable_after_s=60.0)
    assert [policy.delay(n) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_backoff_starts_again_after_a_stable_run() -> None:
    policy = RestartPolicy(initial_s=0.5, factor=2.0, max_s=30.0, stable_after_s=60.0)
    quick = 0
    delays = []
    for ran_s in (1.0, 1.0, 1.0):
        delay, quick = policy.after_exit(quick, ran_s)
        delays.append(delay)
    assert delays == [0.5, 1.0, 2.0]
    assert policy.after_exit(quick, 61.0) == (0.5, 1)


async def test_a_child_killed_with_sigkill_is_restarted_within_a_second(
    supervisor: Supervisor, files: StackFiles, tmp_path: Path
) -> None:
    ready = tmp_path / "worker.ready"
    await supervisor.apply([_spec("worker-1", _sleeper(ready), ready=ready)])
    await _until(lambda: _one(supervisor, "worker-1").state == "running")
    first = _one(supervisor, "worker-1").pid
    assert first is not None
    assert files.read_state() is not None
    assert (files.run_dir / "worker-1.pid").read_text().strip() == str(first)

    ready.unlink()
    killed_at = time.monotonic()
    os.kill(first, signal.SIGKILL)
    await _until(lambda: _one(supervisor, "worker-1").state == "running" and _one(supervisor, "worker-1").pid != first)
    took = time.monotonic() - killed_at

    now = _one(supervisor, "worker-1")
    assert now.restarts == 1
    assert now.last_exit_signal == "SIGKILL"
    assert now.last_exit_code is None
    assert now.pid is not None
    assert alive(now.pid, now.pid_started)
    assert not alive(first)
    assert took < 1.5, f"restarted and ready {took:.2f} s after the kill"
    state = files.read_state()
    assert state is not None
    recorded = state.instances[0]
    assert (recorded.pid, recorded.restarts, recorded.state) == (now.pid, 1, "running")


async def test_a_crash_looping_child_backs_off_and_keeps_its_exit_code(supervisor: Supervisor) -> None:
    await supervisor.apply([_spec("crashy-1", "raise SystemExit(3)")])
    await _until(lambda: _one(supervisor, "crashy-1").restarts >= 3)
    started = time.monotonic()
    # Capped at 0.2 s: restarts keep coming, no faster than the cap allows.
    await _until(lambda: _one(supervisor, "crashy-1").restarts >= 6)
    assert time.monotonic() - started >= 3 * 0.2 * 0.9
    crashy = _one(supervisor, "crashy-1")
    assert crashy.last_exit_code == 3
    assert crashy.last_exit_signal is None


async def test_apply_scales_down_and_up_leaving_the_others_alone(supervisor: Supervisor, tmp_path: Path) -> None:
    def spec(i: int) -> InstanceSpec:
        ready = tmp_path / f"w{i}.ready"
        return _spec(f"worker-{i}", _sleeper(ready), index=i, ready=ready)

    await supervisor.apply([spec(1), spec(2)])
    await _until(lambda: all(i.state == "running" for i in supervisor.instances))
    pids = {i.name: i.pid for i in supervisor.instances}
    second = pids["worker-2"]
    assert second is not None

    await supervisor.apply([spec(1)])
    assert [i.name for i in supervisor.instances] == ["worker-1"]
    assert _one(supervisor, "worker-1").pid == pids["worker-1"]
    assert not alive(second)

    await supervisor.apply([spec(1), spec(2), spec(3)])
    await _until(lambda: all(i.state == "running" for i in supervisor.instances))
    assert [i.name for i in supervisor.instances] == ["worker-1", "worker-2", "worker-3"]
    assert _one(supervisor, "worker-1").pid == pids["worker-1"]


async def test_stop_goes_in_reverse_start_order_and_kills_what_ignores_sigterm(
    files: StackFiles, tmp_path: Path
) -> None:
    order = tmp_path / "stopped.txt"
    specs = []
    for kind in ("first", "second", "stubborn"):
        ready = tmp_path / f"{kind}.ready"
        note = f"open({str(order)!r}, 'a').write({kind!r} + '\\n')"
        code = _sleeper(ready, on_term=note, ignore_term=kind == "stubborn")
        specs.append(_spec(f"{kind}-1", code, kind=kind, ready=ready))
    # The stubborn one is started last, so it is stopped first: the others wait for its grace period.
    sup = Supervisor(files, env=os.environ, policy=FAST, grace_s=0.5, probe=_file_exists)
    health = asyncio.create_task(sup.watch_health())
    try:
        await sup.apply(specs)
        await _until(lambda: all(i.state == "running" for i in sup.instances))
        pids = [i.pid for i in sup.instances]
    finally:
        health.cancel()
        started = time.monotonic()
        await sup.stop()
    took = time.monotonic() - started
    assert order.read_text().split() == ["second", "first"]
    assert 0.5 <= took < 5.0
    assert all(pid is not None and not alive(pid) for pid in pids)
    assert all(i.state == "stopped" and i.pid is None for i in sup.instances)
    assert list(files.run_dir.glob("*.pid")) == []
    state = files.read_state()
    assert state is not None
    assert {i.state for i in state.instances} == {"stopped"}


async def test_a_child_that_cannot_be_started_is_retried_not_fatal(supervisor: Supervisor, tmp_path: Path) -> None:
    missing = InstanceSpec(name="ghost-1", kind="ghost", index=1, argv=(str(tmp_path / "no-such-program"),), env={})
    await supervisor.apply([missing])
    await _until(lambda: _one(supervisor, "ghost-1").restarts >= 2)
    assert _one(supervisor, "ghost-1").last_exit_code == 127
