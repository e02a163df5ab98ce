"""Runs after the search tests (file order): `jetbridge down` leaves no process of ours running."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_down_stops_every_process_it_started(stack: Stack) -> None:
    run = stack.home / "run"
    pids = {
        p.stem: int(p.read_text())
        for p in run.glob("*.pid")
        if p.stem in ("simulators", "streams", "connectors", "bridge")
    }
    assert set(pids) == {"simulators", "streams", "connectors", "bridge"}
    assert all(_alive(pid) for pid in pids.values())
    result = stack.jetbridge("down")
    assert result.returncode == 0, result.stderr
    still = {name: pid for name, pid in pids.items() if _alive(pid)}
    assert still == {}
    assert not list(run.glob("*.pid")) or all(p.stem in ("kafka", "registry") for p in run.glob("*.pid"))
    status = stack.jetbridge("status")
    for name in ("simulators", "streams", "connectors", "bridge"):
        line = next(row for row in status.stdout.splitlines() if row.startswith(name))
        assert "stopped" in line, status.stdout
