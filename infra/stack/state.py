"""The files the local stack keeps in ``$JB_HOME/run``, and how to tell whether a recorded process still runs.

``supervisor.pid``   the supervisor's PID
``stack-plan.json``  what ``jetbridge up`` asked for (a ``StackPlan``)
``stack.json``       what the supervisor runs now (a ``StackState``), rewritten on every change
``<instance>.pid``   each instance's PID (and ``streams.pid`` / ``connectors.pid`` for instance 1, for tools
                     that follow one process per kind, such as the benchmark's meter)

A PID alone can be reused by an unrelated process once ours is gone, so every recorded PID comes with the
process's start time (from ``/proc``) and counts as ours only while both match.
"""

from __future__ import annotations

import contextlib
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from infra.stack.components import StackPlan

__all__ = [
    "InstanceState",
    "Phase",
    "StackFiles",
    "StackState",
    "alive",
    "cmdline",
    "group_alive",
    "kill_group",
    "now_iso",
    "start_ticks",
    "write_atomic",
]

Phase = Literal["starting", "running", "backoff", "stopped"]


class InstanceState(BaseModel):
    """One supervised instance as ``jetbridge status`` reads it."""

    name: str
    kind: str
    state: Phase
    pid: int | None = None
    # The process's start time in clock ticks since boot (/proc/<pid>/stat): tells our process from a
    # later one that got the same PID.
    pid_started: int | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    last_exit_signal: str | None = None
    started_at: str | None = None
    healthy: bool = False
    # While in backoff: how long the supervisor waits before starting it again.
    backoff_s: float | None = None
    health_url: str = ""
    endpoint: str = ""
    log: str = ""


class StackState(BaseModel):
    supervisor_pid: int
    updated_at: str
    instances: list[InstanceState]


class StackFiles:
    """Paths of the stack's run files under one ``$JB_HOME``."""

    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir
        self.supervisor_pid = run_dir / "supervisor.pid"
        self.plan = run_dir / "stack-plan.json"
        self.state = run_dir / "stack.json"
        self.supervisor_log = log_dir / "supervisor.log"

    def read_plan(self) -> StackPlan | None:
        try:
            return StackPlan.model_validate_json(self.plan.read_text())
        except (OSError, ValueError):
            return None

    def write_plan(self, plan: StackPlan) -> None:
        write_atomic(self.plan, plan.model_dump_json(indent=1))

    def read_state(self) -> StackState | None:
        try:
            return StackState.model_validate_json(self.state.read_text())
        except (OSError, ValueError):
            return None

    def write_state(self, state: StackState) -> None:
        write_atomic(self.state, state.model_dump_json(indent=1))

    def running_supervisor(self) -> int | None:
        """The supervisor's PID if it runs (checked by its command line, not just the PID)."""
        try:
            pid = int(self.supervisor_pid.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) and "infra.stack.supervisor" in cmdline(pid) else None


def write_atomic(path: Path, text: str) -> None:
    """Readers never see half a file: write beside it, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    return raw[raw.rfind(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot), or None if it is gone or /proc is missing."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def cmdline(pid: int) -> str:
    """The process's command line, arguments joined by spaces (empty when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int, started: int | None = None) -> bool:
    """Whether the process runs (not a zombie) and, when ``started`` is given, is the one recorded."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return started is None
    fields = _stat_fields(pid)
    if fields is None:
        # Gone since the signal check, or no /proc on this system (then the PID is all we can go by).
        return started is None and not Path("/proc/self").exists()
    if fields[0] == "Z":
        return False
    return started is None or int(fields[19]) == started


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a whole process group (a component and anything it spawned); a gone group is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
