"""The local stack: start, check and stop every process of Jetbridge on this machine, idempotently.

Each component runs in its own process group with a PID file in ``$JB_HOME/run`` and a log in
``$JB_HOME/logs``; ``down`` stops exactly the processes whose PID files it finds, nothing else.
Kafka and the schema registry are started by their scripts in ``infra/`` unless
``KAFKA_BOOTSTRAP_SERVERS`` / ``SCHEMA_REGISTRY_URL`` point at ones that already run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from jetbridge.airlines import load_registry
from jetbridge.errors import ConfigurationError
from jetbridge.kafka import apply_topics
from jetbridge.settings import REPO_ROOT, Settings
from jetbridge.topics import declared_topics

__all__ = ["Component", "components", "down", "external_kafka", "external_registry", "status", "up"]

Probe = Callable[[], Awaitable[bool]]
Say = Callable[[str], None]


def external_kafka() -> bool:
    return bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))


def external_registry() -> bool:
    return bool(os.environ.get("SCHEMA_REGISTRY_URL"))


async def _http_ok(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
            return (await client.get(url)).status_code < 500
    except httpx.HTTPError:
        return False


@dataclass(frozen=True)
class Component:
    """A Python process of the stack."""

    name: str
    argv: list[str]
    probe: Probe
    settings: Settings

    @property
    def pidfile(self) -> Path:
        return self.settings.run_dir / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return self.settings.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    async def start(self, say: Say, timeout_s: float = 90.0) -> None:
        if self.pid() is not None and await self.probe():
            say(f"{self.name}: already running (pid {self.pid()})")
            return
        if self.pid() is not None:
            await self.stop(say)
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        (self.settings.run_dir / f"{self.name}.ready").unlink(missing_ok=True)
        log = self.logfile.open("ab")
        env = dict(os.environ, JB_HOME=str(self.settings.home), PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the child runs in the background
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=REPO_ROOT,
            env=env,
        )
        log.close()
        self.pidfile.write_text(str(proc.pid))
        started = time.monotonic()
        while not await self.probe():
            if proc.poll() is not None:
                raise ConfigurationError(f"{self.name} exited with {proc.returncode}:\n{_tail(self.logfile)}")
            if time.monotonic() - started > timeout_s:
                raise ConfigurationError(f"{self.name} not healthy after {timeout_s:.0f} s:\n{_tail(self.logfile)}")
            await asyncio.sleep(0.2)
        say(f"{self.name}: healthy in {time.monotonic() - started:.1f} s (pid {proc.pid})")

    async def stop(self, say: Say, timeout_s: float = 20.0) -> None:
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive_group(pid):  # noqa: ASYNC110 - polling another process
            await asyncio.sleep(0.1)
        if _alive_group(pid):
            say(f"{self.name}: did not stop in {timeout_s:.0f} s, killing")
            os.killpg(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        (self.settings.run_dir / f"{self.name}.ready").unlink(missing_ok=True)
        say(f"{self.name}: stopped")


def _alive_group(pgid: int) -> bool:
    """Whether any process of the group still runs (reaping the leader first if it is our child)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def components(settings: Settings) -> list[Component]:
    """The stack's Python processes, in start order."""
    py = sys.executable

    def ready_file(name: str) -> Probe:
        async def probe() -> bool:
            return (settings.run_dir / f"{name}.ready").exists()

        return probe

    async def simulators_ok() -> bool:
        return await _http_ok(f"http://{settings.simulator_host}:{settings.simulator_control_port}/health")

    async def bridge_ok() -> bool:
        return await _http_ok(f"http://{settings.bridge_host}:{settings.bridge_port}/health")

    return [
        Component("simulators", [py, "-m", "infra.simulators"], simulators_ok, settings),
        Component("streams", [py, "-m", "streams"], ready_file("streams"), settings),
        Component("connectors", [py, "-m", "connectors"], ready_file("connectors"), settings),
        Component("bridge", [py, "-m", "mcp_bridge"], bridge_ok, settings),
    ]


def _script(name: str, action: str, settings: Settings) -> subprocess.CompletedProcess[bytes]:
    script = REPO_ROOT / "infra" / name / f"{name}.sh"
    env = dict(os.environ, JB_HOME=str(settings.home))
    return subprocess.run(["/bin/bash", str(script), action], env=env, check=False, capture_output=action == "status")


async def up(settings: Settings, say: Say, *, with_simulators: bool = True) -> float:
    """Start everything that is not running yet; returns the seconds it took."""
    started = time.monotonic()
    if external_kafka():
        say(f"kafka: using {settings.kafka_bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS)")
    elif (await asyncio.to_thread(_script, "kafka", "start", settings)).returncode != 0:
        raise ConfigurationError("kafka did not start; see .jetbridge/logs/kafka.log")
    if external_registry():
        say(f"registry: using {settings.schema_registry_url} (SCHEMA_REGISTRY_URL)")
    elif (await asyncio.to_thread(_script, "registry", "start", settings)).returncode != 0:
        raise ConfigurationError("schema registry did not start; see .jetbridge/logs/registry.log")
    airlines = load_registry(settings.airlines_file)
    outcome = await apply_topics(
        {"bootstrap.servers": settings.kafka_bootstrap_servers},
        declared_topics(airlines, settings.topic_partitions, settings.topic_prefix),
        replication_factor=settings.replication_factor,
    )
    created = [t for t, o in outcome.items() if o == "created"]
    say(f"topics: {len(outcome)} declared, {len(created)} created")
    for component in components(settings):
        if component.name == "simulators" and not with_simulators:
            continue
        await component.start(say)
    return time.monotonic() - started


async def down(settings: Settings, say: Say) -> None:
    """Stop every process whose PID file we hold, in reverse start order, then Kafka and the registry."""
    for component in reversed(components(settings)):
        await component.stop(say)
    if not external_registry():
        await asyncio.to_thread(_script, "registry", "stop", settings)
    if not external_kafka():
        await asyncio.to_thread(_script, "kafka", "stop", settings)


async def status(settings: Settings) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for name in ("kafka", "registry"):
        external = external_kafka() if name == "kafka" else external_registry()
        if external:
            rows.append((name, "external"))
            continue
        code = (await asyncio.to_thread(_script, name, "status", settings)).returncode
        rows.append((name, "running" if code == 0 else "stopped"))
    for component in components(settings):
        pid = component.pid()
        if pid is None:
            rows.append((component.name, "stopped"))
        else:
            rows.append((component.name, f"{'healthy' if await component.probe() else 'unhealthy'} (pid {pid})"))
    return rows
