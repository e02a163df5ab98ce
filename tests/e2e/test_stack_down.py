"""Runs after the search tests (file order): `jetbridge down` leaves no process of ours running."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra.stack.state import StackFiles
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

_OURS = ("infra.stack.supervisor", "infra.simulators", "infra.auth.dev_issuer", "streams", "connectors", "mcp_bridge")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def _processes_of(home: Path) -> dict[int, str]:
    """Every live process started for this stack: its environment names the stack's home, and it runs one of
    our modules (Kafka and the registry of the test session are left to the session)."""
    found: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if f"JB_HOME={home}".encode() in environ and "-m" in argv:
            module = argv[argv.index("-m") + 1] if argv.index("-m") + 1 < len(argv) else ""
            if module in _OURS and _alive(int(proc.name)):
                found[int(proc.name)] = module
    return found


def test_down_stops_every_process_it_started(stack: Stack) -> None:
    files = StackFiles(stack.home / "run", stack.home / "logs")
    supervisor = files.running_supervisor()
    assert supervisor is not None
    state = files.read_state()
    assert state is not None
    pids = {i.name: i.pid for i in state.instances}
    assert {"simulators", "streams-1", "connectors-1", "bridge"} <= set(pids)
    assert all(pid is not None and _alive(pid) for pid in pids.values()), pids
    assert set(_processes_of(stack.home)) >= {supervisor, *(p for p in pids.values() if p)}

    result = stack.jetbridge("down")
    assert result.returncode == 0, result.stderr

    assert not _alive(supervisor)
    assert {name: pid for name, pid in pids.items() if pid and _alive(pid)} == {}
    assert _processes_of(stack.home) == {}
    assert all(p.stem in ("kafka", "registry", "redis") for p in files.run_dir.glob("*.pid"))  # the session's
    status = stack.jetbridge("status")
    assert status.returncode != 0
    for name in ("supervisor", *pids):
        line = next(row for row in status.stdout.splitlines() if row.split()[:1] == [name])
        assert "stopped" in line, status.stdout
