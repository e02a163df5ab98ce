"""The local stack's supervisor: runs every instance of the plan as its child and keeps it running.

``python -m infra.stack.supervisor``, started in the background by ``jetbridge up``. Each child runs in its
own process group, its output in ``$JB_HOME/logs/<instance>.log``. A child that exits or is killed is
started again after a backoff (``RestartPolicy``). Every change is written to ``$JB_HOME/run/stack.json``,
which ``jetbridge status`` reads. SIGHUP re-reads ``stack-plan.json`` and applies it (a new scale);
SIGTERM or SIGINT stop the children in reverse start order (SIGTERM, then SIGKILL after the grace period)
and end the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.stack.components import InstanceSpec
from infra.stack.probes import http_healthy
from infra.stack.state import (
    InstanceState,
    Phase,
    StackFiles,
    StackState,
    kill_group,
    now_iso,
    start_ticks,
    write_atomic,
)
from jetbridge.log import configure_logging, get_logger
from jetbridge.settings import REPO_ROOT, get_settings

__all__ = ["RestartPolicy", "Supervisor", "main"]

log = get_logger(__name__)

Probe = Callable[[str], Awaitable[bool]]

# How often a child that is up is asked for its health; one that is starting is asked every tick.
_TICK_S = 0.25
_PROBE_RUNNING_S = 2.0


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff between restarts; a run that lasted ``stable_after_s`` starts the count again."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    stable_after_s: float = 60.0

    def delay(self, quick_exits: int) -> float:
        """The wait before the next start, after ``quick_exits`` earlier exits in a row."""
        return min(self.max_s, self.initial_s * self.factor**quick_exits)

    def after_exit(self, quick_exits: int, ran_s: float) -> tuple[float, int]:
        """A process exited after running ``ran_s``: the wait before restarting it, and the new count."""
        if ran_s >= self.stable_after_s:
            quick_exits = 0
        return self.delay(quick_exits), quick_exits + 1


@dataclass(eq=False)
class _Child:
    spec: InstanceSpec
    log_path: Path
    phase: Phase = "starting"
    proc: asyncio.subprocess.Process | None = None
    pid_started: int | None = None
    restarts: int = 0
    quick_exits: int = 0
    backoff_s: float | None = None
    last_exit_code: int | None = None
    last_exit_signal: str | None = None
    started_at: str | None = None
    started_mono: float = 0.0
    healthy: bool = False
    last_probe: float = 0.0
    stopping: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def view(self) -> InstanceState:
        return InstanceState(
            name=self.spec.name,
            kind=self.spec.kind,
            state=self.phase,
            pid=self.proc.pid if self.running and self.proc else None,
            pid_started=self.pid_started if self.running else None,
            restarts=self.restarts,
            last_exit_code=self.last_exit_code,
            last_exit_signal=self.last_exit_signal,
            started_at=self.started_at,
            healthy=self.healthy,
            backoff_s=self.backoff_s if self.phase == "backoff" else None,
            health_url=self.spec.health_url,
            endpoint=self.spec.endpoint,
            log=str(self.log_path),
        )


class Supervisor:
    """Keeps a set of instances running; ``apply`` changes the set, ``stop`` ends them all."""

    def __init__(
        self,
        files: StackFiles,
        *,
        env: Mapping[str, str],
        cwd: Path = REPO_ROOT,
        policy: RestartPolicy = RestartPolicy(),
        grace_s: float = 20.0,
        probe: Probe = http_healthy,
    ) -> None:
        self._files = files
        self._env = dict(env)
        self._cwd = cwd
        self._policy = policy
        self._grace_s = grace_s
        self._probe = probe
        self._children: dict[str, _Child] = {}

    @property
    def instances(self) -> list[InstanceState]:
        return [child.view() for child in self._children.values()]

    async def apply(self, specs: Sequence[InstanceSpec]) -> None:
        """Make what runs match ``specs``: stop what is gone or changed (reverse order), start what is new."""
        wanted = {spec.name: spec for spec in specs}
        outgoing = [c for c in self._children.values() if wanted.get(c.spec.name) != c.spec]
        await self._stop_in_reverse(outgoing)
        kept = {name: child for name, child in self._children.items() if child not in outgoing}
        self._children = {spec.name: kept.get(spec.name) or self._launch(spec) for spec in specs}
        self._write_state()

    async def stop(self) -> None:
        await self._stop_in_reverse(list(self._children.values()))
        self._write_state()

    async def watch_health(self) -> None:
        """Probe the children's health URLs (until cancelled): ``starting`` becomes ``running`` once healthy."""
        while True:
            now = time.monotonic()
            due = [
                (child, child.proc)
                for child in self._children.values()
                if child.running
                and child.phase in ("starting", "running")
                and (child.phase == "starting" or now - child.last_probe >= _PROBE_RUNNING_S)
            ]
            results = await asyncio.gather(*(self._healthy(child) for child, _ in due))
            changed = False
            for (child, proc), ok in zip(due, results, strict=True):
                if child.proc is not proc or not child.running:
                    continue  # exited or restarted while we asked
                child.last_probe = now
                if ok and child.phase == "starting":
                    child.phase = "running"
                    changed = True
                    log.info(
                        "instance healthy",
                        instance=child.spec.name,
                        pid=proc.pid if proc else None,
                        after_s=round(time.monotonic() - child.started_mono, 2),
                        restarts=child.restarts,
                    )
                changed = changed or ok != child.healthy
                child.healthy = ok
            if changed:
                self._write_state()
            await asyncio.sleep(_TICK_S)

    async def _healthy(self, child: _Child) -> bool:
        if not child.spec.health_url:
            return True
        try:
            return await self._probe(child.spec.health_url)
        except Exception as exc:  # noqa: BLE001 - a probe that breaks means "not healthy", never a dead watcher
            log.warning("health probe failed", instance=child.spec.name, error=repr(exc))
            return False

    def _launch(self, spec: InstanceSpec) -> _Child:
        child = _Child(spec, self._files.log_dir / f"{spec.name}.log")
        child.task = asyncio.create_task(self._keep(child), name=f"keep-{spec.name}")
        return child

    async def _keep(self, child: _Child) -> None:
        while not child.stopping:
            status = await self._run_once(child)
            if child.stopping:
                break
            ran_s = time.monotonic() - child.started_mono
            delay, child.quick_exits = self._policy.after_exit(child.quick_exits, ran_s)
            child.backoff_s = delay
            child.last_exit_code = status if status >= 0 else None
            child.last_exit_signal = signal.Signals(-status).name if status < 0 else None
            child.phase = "backoff"
            child.healthy = False
            if child.proc is not None:
                kill_group(child.proc.pid, signal.SIGKILL)  # whatever it spawned goes with it
            self._write_state()
            log.warning(
                "instance exited; restarting",
                instance=child.spec.name,
                exit_code=child.last_exit_code,
                exit_signal=child.last_exit_signal,
                ran_s=round(ran_s, 2),
                restart_in_s=delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wake.wait(), delay)
            if not child.stopping:
                child.restarts += 1

    async def _run_once(self, child: _Child) -> int:
        """Start the child and wait for it to end; its exit status (negative: the signal that killed it)."""
        child.phase = "starting"
        child.healthy = False
        child.started_mono = time.monotonic()
        child.started_at = now_iso()
        try:
            self._files.log_dir.mkdir(parents=True, exist_ok=True)
            with child.log_path.open("ab") as out:
                child.proc = await asyncio.create_subprocess_exec(
                    *child.spec.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopped as a whole, never by a stray ^C
                    cwd=self._cwd,
                    env={**self._env, **child.spec.env},
                )
        except OSError as exc:
            log.error("instance did not start", instance=child.spec.name, error=str(exc))
            child.proc = None
            return 127
        if child.stopping:
            kill_group(child.proc.pid, signal.SIGTERM)  # asked to stop while it was being spawned
        child.pid_started = start_ticks(child.proc.pid)
        self._write_pidfiles(child, child.proc.pid)
        log.info("instance started", instance=child.spec.name, pid=child.proc.pid, restarts=child.restarts)
        self._write_state()
        return await child.proc.wait()

    async def _stop_in_reverse(self, children: Sequence[_Child]) -> None:
        """Stop kind by kind, last started first; instances of one kind stop together."""
        for _, group in itertools.groupby(reversed(children), key=lambda c: c.spec.kind):
            await asyncio.gather(*(self._stop_child(child) for child in group))

    async def _stop_child(self, child: _Child) -> None:
        child.stopping = True
        child.wake.set()
        if child.running and child.proc is not None:
            kill_group(child.proc.pid, signal.SIGTERM)
        if child.task is not None:
            # The task ends once the process is gone (it also signals one that was being spawned just now).
            done, _ = await asyncio.wait({child.task}, timeout=self._grace_s)
            if not done:
                log.warning("instance ignored SIGTERM; killing", instance=child.spec.name, grace_s=self._grace_s)
                if child.proc is not None:
                    kill_group(child.proc.pid, signal.SIGKILL)
                await child.task
        if child.proc is not None:
            kill_group(child.proc.pid, signal.SIGKILL)  # anything of its group that outlived it
        child.phase = "stopped"
        child.healthy = False
        self._remove_pidfiles(child)
        log.info("instance stopped", instance=child.spec.name, exit_code=child.proc.returncode if child.proc else None)

    def _pidfiles(self, child: _Child) -> list[Path]:
        names = [child.spec.name]
        if child.spec.index == 1 and child.spec.name != child.spec.kind:
            names.append(child.spec.kind)
        return [self._files.run_dir / f"{name}.pid" for name in names]

    def _write_pidfiles(self, child: _Child, pid: int) -> None:
        for path in self._pidfiles(child):
            try:
                write_atomic(path, f"{pid}\n")
            except OSError as exc:
                log.error("PID file not written", path=str(path), error=str(exc))

    def _remove_pidfiles(self, child: _Child) -> None:
        for path in self._pidfiles(child):
            path.unlink(missing_ok=True)

    def _write_state(self) -> None:
        try:
            self._files.write_state(
                StackState(supervisor_pid=os.getpid(), updated_at=now_iso(), instances=self.instances)
            )
        except OSError as exc:
            # Supervising matters more than reporting: keep restarting children even if the disk is full.
            log.error("state file not written", path=str(self._files.state), error=str(exc))


async def serve(files: StackFiles, *, env: Mapping[str, str], grace_s: float) -> int:
    """Run the plan in ``files`` until SIGTERM/SIGINT; SIGHUP applies a new plan."""
    other = files.running_supervisor()
    if other is not None and other != os.getpid():
        log.error("another supervisor runs this stack", pid=other)
        return 1
    plan = files.read_plan()
    if plan is None:
        log.error("no plan to run", plan=str(files.plan))
        return 1
    write_atomic(files.supervisor_pid, f"{os.getpid()}\n")
    supervisor = Supervisor(files, env=env, grace_s=grace_s)
    signals: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, signals.put_nowait, "stop")
    loop.add_signal_handler(signal.SIGINT, signals.put_nowait, "stop")
    loop.add_signal_handler(signal.SIGHUP, signals.put_nowait, "reload")
    health = asyncio.create_task(supervisor.watch_health(), name="health")
    log.info("supervisor started", instances=[spec.name for spec in plan.instances])
    try:
        await supervisor.apply(plan.instances)
        while await signals.get() == "reload":
            plan = files.read_plan()
            if plan is not None:
                log.info("applying a new plan", instances=[spec.name for spec in plan.instances])
                await supervisor.apply(plan.instances)
    finally:
        health.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await health
        await supervisor.stop()
        files.supervisor_pid.unlink(missing_ok=True)
        log.info("supervisor stopped")
    return 0


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, "json", process="supervisor")
    files = StackFiles(settings.run_dir, settings.log_dir)
    env = dict(os.environ, JB_HOME=str(settings.home))
    sys.exit(asyncio.run(serve(files, env=env, grace_s=settings.stop_grace_s)))


if __name__ == "__main__":
    main()
