"""``jetbridge up``, ``down`` and ``status`` for the local stack.

Kafka, the schema registry and Redis are started by their scripts in ``infra/`` (their chatter goes to
``$JB_HOME/logs/setup.log``) unless ``KAFKA_BOOTSTRAP_SERVERS`` / ``SCHEMA_REGISTRY_URL`` / ``REDIS_URL`` name
ones that run elsewhere; the Python processes are children of the supervisor (``infra/stack/supervisor.py``).
Nothing here trusts a PID file alone: a process counts as up when its PID is ours and its probe answers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from infra.stack.components import KINDS, InstanceSpec, StackPlan, plan
from infra.stack.figures import Figures, figures
from infra.stack.groups import unsettled_groups, wanted_groups
from infra.stack.probes import health_detail, http_healthy, port_open, registry_answers
from infra.stack.state import (
    InstanceState,
    StackFiles,
    StackState,
    alive,
    cmdline,
    group_alive,
    kill_group,
    now_iso,
)
from jetbridge.airlines import load_registry
from jetbridge.contracts import apply_compatibility
from jetbridge.errors import ConfigurationError
from jetbridge.http import build_http_client
from jetbridge.kafka import apply_topics, client_config
from jetbridge.redis_client import ping, public_url
from jetbridge.runtime import registry_client
from jetbridge.settings import REPO_ROOT, Settings
from jetbridge.topics import declared_topics

__all__ = [
    "LineReporter",
    "Reporter",
    "Row",
    "Status",
    "down",
    "external_kafka",
    "external_redis",
    "external_registry",
    "status",
    "up",
]

# Health words: the first two count as up.
UP = ("healthy", "running")
# A component that restarts this often while `up` waits for it is crash-looping: stop waiting.
_CRASH_LOOP_RESTARTS = 3
# Markers in a recorded PID's command line that make it one of ours (older stacks wrote per-kind PID files).
_OUR_MODULES = (
    "-m infra.stack.supervisor",
    "-m infra.simulators",
    "-m infra.auth.dev_issuer",
    "-m streams",
    "-m connectors",
    "-m mcp_bridge",
)
_SCRIPT_MARKERS = {"kafka": "kafka.Kafka", "registry": "infra.registry.local_registry", "redis": "redis-server"}


class Reporter(Protocol):
    """How ``up`` and ``down`` tell a person what they are doing."""

    def working(self, text: str) -> None:
        """What is being done now (a spinner's label)."""

    def done(self, text: str) -> None:
        """A step that finished: one line."""

    def instances(self, rows: Sequence[Row]) -> None:
        """The instances ``up`` is waiting for, as they are now."""


class LineReporter:
    """A ``Reporter`` for plain lines (logs, the benchmark): finished steps, and each instance once healthy."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self._healthy: set[str] = set()

    def working(self, text: str) -> None:
        pass

    def done(self, text: str) -> None:
        self._say(text)

    def instances(self, rows: Sequence[Row]) -> None:
        for row in rows:
            if row.up and row.name not in self._healthy:
                self._healthy.add(row.name)
                self._say(f"{row.name:<16} healthy (pid {row.pid})")


@dataclass(frozen=True)
class Row:
    """One line of ``jetbridge status``, the same for every component."""

    name: str
    pid: str
    health: str
    restarts: str
    endpoint: str
    note: str = ""

    @property
    def up(self) -> bool:
        return self.health in UP


@dataclass(frozen=True)
class Status:
    rows: list[Row]
    notes: list[str]
    figures: list[Figures] = field(default_factory=list)

    @property
    def all_up(self) -> bool:
        return all(row.up for row in self.rows)


def external_kafka() -> bool:
    return bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))


def external_registry() -> bool:
    return bool(os.environ.get("SCHEMA_REGISTRY_URL"))


def external_redis() -> bool:
    return bool(os.environ.get("REDIS_URL"))


def _files(settings: Settings) -> StackFiles:
    return StackFiles(settings.run_dir, settings.log_dir)


def _tail(path: Path, lines: int = 15, *, since: int = 0) -> str:
    try:
        with path.open("rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(f"  {line}" for line in text.splitlines()[-lines:]) or "  (empty)"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _script_pid(settings: Settings, name: str) -> int | None:
    try:
        pid = int((settings.run_dir / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) and _SCRIPT_MARKERS[name] in cmdline(pid) else None


async def _script(settings: Settings, name: str, action: str) -> int:
    """Run ``infra/<name>/<name>.sh action`` with its output appended to setup.log; its exit code."""
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, JB_HOME=str(settings.home), JB_PYTHON=sys.executable)
    with (settings.log_dir / "setup.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            "/bin/bash",
            str(REPO_ROOT / "infra" / name / f"{name}.sh"),
            action,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
        )
        return await proc.wait()


async def _start_infra(settings: Settings, report: Reporter) -> None:
    setup_log = settings.log_dir / "setup.log"
    kafka = settings.kafka_bootstrap_servers
    if external_kafka():
        report.working(f"checking Kafka at {kafka}")
        if not await port_open(kafka):
            raise ConfigurationError(f"Kafka at {kafka} (KAFKA_BOOTSTRAP_SERVERS) does not answer")
        report.done(f"Kafka            {kafka} (external)")
    else:
        before, offset, started = _script_pid(settings, "kafka"), _size(setup_log), time.monotonic()
        report.working("starting Kafka" if before is None else "checking Kafka")
        code = await _script(settings, "kafka", "start")
        pid = _script_pid(settings, "kafka")
        if code != 0 or pid is None or not await port_open(kafka):
            raise ConfigurationError(
                f"Kafka did not start (see {settings.log_dir}/kafka.log):\n{_tail(setup_log, since=offset)}"
            )
        how = "already running" if before == pid else f"started in {time.monotonic() - started:.1f} s"
        report.done(f"Kafka            {kafka} ({how}, pid {pid})")
    url = settings.schema_registry_url
    if external_registry():
        report.working(f"checking the schema registry at {url}")
        if not await registry_answers(url):
            raise ConfigurationError(f"the schema registry at {url} (SCHEMA_REGISTRY_URL) does not answer")
        report.done(f"Schema registry  {url} (external)")
    else:
        before, offset, started = _script_pid(settings, "registry"), _size(setup_log), time.monotonic()
        report.working("starting the schema registry")
        code = await _script(settings, "registry", "start")
        pid = _script_pid(settings, "registry")
        if code != 0 or pid is None or not await registry_answers(url):
            raise ConfigurationError(
                f"the schema registry did not start (see {settings.log_dir}/registry.log):\n"
                f"{_tail(setup_log, since=offset)}"
            )
        how = "already running" if before == pid else f"started in {time.monotonic() - started:.1f} s"
        report.done(f"Schema registry  {url} ({how}, pid {pid})")
    redis = public_url(settings.redis_url)
    if external_redis():
        report.working(f"checking Redis at {redis}")
        if not await ping(settings.redis_url):
            raise ConfigurationError(f"Redis at {redis} (REDIS_URL) does not answer PING")
        report.done(f"Redis            {redis} (external)")
    else:
        before, offset, started = _script_pid(settings, "redis"), _size(setup_log), time.monotonic()
        report.working("starting Redis" if before is None else "checking Redis")
        code = await _script(settings, "redis", "start")
        pid = _script_pid(settings, "redis")
        if code != 0 or pid is None or not await ping(settings.redis_url):
            raise ConfigurationError(
                f"Redis did not start (see {settings.log_dir}/redis.log):\n{_tail(setup_log, since=offset)}"
            )
        how = "already running" if before == pid else f"started in {time.monotonic() - started:.1f} s"
        report.done(f"Redis            {redis} ({how}, pid {pid})")


async def up(
    settings: Settings,
    report: Reporter | Callable[[str], None],
    *,
    scale: Mapping[str, int] | None = None,
    simulators: bool = True,
) -> tuple[float, StackPlan]:
    """Start what is not running and wait until every instance is healthy; the seconds it took, and the plan.

    ``scale=None`` keeps the scale of the stack that runs or last ran (one of each after ``down``). ``report`` may be a
    plain ``say(line)`` function.
    """
    if callable(report):
        report = LineReporter(report)
    started = time.monotonic()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    await _start_infra(settings, report)
    report.working("declaring topics")
    specs = declared_topics(load_registry(settings.airlines_file), settings.topic_partitions, settings.topic_prefix)
    outcome = await apply_topics(client_config(settings), specs, replication_factor=settings.replication_factor)
    # Each subject's compatibility level, as declared with its topic (jetbridge/topics.py), set in the registry.
    async with build_http_client(timeout_s=10.0, max_connections=4) as http:
        levels = await apply_compatibility(registry_client(settings, http), specs)
    created = sum(1 for o in outcome.values() if o == "created")
    report.done(f"Topics           {len(outcome)} declared, {created} created, {len(levels)} compatibility levels set")
    files = _files(settings)
    running = files.running_supervisor()
    # The plan outlives a supervisor that died (not a `down`): its scale is still what was asked for.
    current = files.read_plan()
    if scale is None:
        scale = current.scale if current is not None else {}
    wanted = plan(settings, scale, simulators=simulators)
    supervisor = await _ensure_supervisor(settings, files, wanted, running, current, report)
    await _wait_healthy(settings, files, wanted, supervisor, report)
    return time.monotonic() - started, wanted


async def _ensure_supervisor(
    settings: Settings,
    files: StackFiles,
    wanted: StackPlan,
    running: int | None,
    current: StackPlan | None,
    report: Reporter,
) -> int:
    if running is not None:
        if current == wanted:
            report.done(f"Supervisor       already running (pid {running})")
        else:
            files.write_plan(wanted)
            os.kill(running, signal.SIGHUP)
            names = ", ".join(spec.name for spec in wanted.instances)
            report.done(f"Supervisor       pid {running}, applying the new plan: {names}")
        return running
    stopped = await _stop_orphans(settings, files)
    if stopped:
        report.done(f"Stopped          {', '.join(stopped)} (left running by a supervisor that died)")
    files.write_plan(wanted)
    with files.supervisor_log.open("ab") as log:
        proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the supervisor outlives this command
            [sys.executable, "-m", "infra.stack.supervisor"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO_ROOT,
            env=dict(os.environ, JB_HOME=str(settings.home)),
        )
    files.supervisor_pid.write_text(f"{proc.pid}\n")
    report.done(f"Supervisor       started (pid {proc.pid})")
    return proc.pid


async def _wait_healthy(
    settings: Settings, files: StackFiles, wanted: StackPlan, supervisor: int, report: Reporter
) -> None:
    names = [spec.name for spec in wanted.instances]
    report.working(f"waiting for {len(names)} instances to be healthy")
    deadline = time.monotonic() + settings.up_timeout_s
    first_restarts: dict[str, int] = {}
    groups = wanted_groups(settings, wanted.scale)
    unsettled: list[str] = []
    while True:
        if not alive(supervisor):
            raise ConfigurationError(
                f"the supervisor exited; last lines of {files.supervisor_log}:\n{_tail(files.supervisor_log)}"
            )
        state = files.read_state()
        if state is not None and state.supervisor_pid != supervisor:
            state = None  # written by an earlier supervisor: says nothing about this one
        rows = await _instance_rows(wanted.instances, state, supervised=True)
        report.instances(rows)
        if state is not None and [i.name for i in state.instances] == names and all(r.up for r in rows):
            # Healthy is not yet serving: a worker that `--scale` removed keeps its partitions until its
            # session expires (static membership), so the groups must have settled on the plan's scale too.
            unsettled = await unsettled_groups(settings, groups)
            if not unsettled:
                report.done(f"Consumer groups  {len(groups)} stable at the plan's scale")
                return
            report.working(
                f"waiting for {len(unsettled)} consumer groups to settle (a removed worker's partitions move when"
                f" its {settings.group_session_timeout_ms / 1000:.0f} s session expires)"
            )
        for inst in state.instances if state is not None else []:
            first = first_restarts.setdefault(inst.name, inst.restarts)
            if inst.restarts - first >= _CRASH_LOOP_RESTARTS:
                why = _exit_words(inst)
                raise ConfigurationError(
                    f"{inst.name} keeps exiting ({why}); the supervisor keeps retrying (`jetbridge down` stops it)."
                    f" Last lines of {inst.log}:\n{_tail(Path(inst.log))}"
                )
        if time.monotonic() > deadline:
            late = [r for r in rows if not r.up]
            detail = "\n".join(
                [f"{r.name} is {r.health}; last lines of its log:\n{_log_tail(settings, r.name)}" for r in late]
                + ([] if late else [f"consumer group {line}" for line in unsettled])
            )
            raise ConfigurationError(
                f"not healthy after {settings.up_timeout_s:.0f} s (the supervisor keeps trying; "
                f"`jetbridge status` shows it, `jetbridge down` stops it):\n{detail}"
            )
        await asyncio.sleep(0.25)


def _log_tail(settings: Settings, name: str) -> str:
    return _tail(settings.log_dir / f"{name}.log")


def _exit_words(inst: InstanceState) -> str:
    if inst.last_exit_signal:
        return f"last killed by {inst.last_exit_signal}"
    if inst.last_exit_code is not None:
        return f"last exit code {inst.last_exit_code}"
    return ""


async def _instance_rows(specs: Sequence[InstanceSpec], state: StackState | None, *, supervised: bool) -> list[Row]:
    recorded = {inst.name: inst for inst in state.instances} if state is not None else {}

    async def row(spec: InstanceSpec) -> Row:
        inst = recorded.get(spec.name)
        pid = inst.pid if inst is not None and inst.pid and alive(inst.pid, inst.pid_started) else None
        restarts = str(inst.restarts) if inst is not None else "-"
        note = _exit_words(inst) if inst is not None else ""
        if supervised and inst is not None and inst.state == "backoff" and inst.backoff_s is not None:
            note = f"{note}; next start in {inst.backoff_s:g} s" if note else f"next start in {inst.backoff_s:g} s"
        if pid is None:
            waiting = supervised and inst is not None and inst.state in ("backoff", "starting")
            health = "restarting" if waiting else "stopped"
            return Row(spec.name, "-", health, restarts, spec.endpoint, note)
        ok = await http_healthy(spec.health_url) if spec.health_url else True
        health = "healthy" if ok else ("starting" if inst is not None and inst.state == "starting" else "unhealthy")
        detail = await health_detail(spec.health_url) if spec.health_url else None
        if detail:
            note = f"{note}; {detail}" if note else detail
        return Row(spec.name, str(pid), health, restarts, spec.endpoint, note)

    return list(await asyncio.gather(*(row(spec) for spec in specs)))


async def status(settings: Settings) -> Status:
    """Every component, Kafka and the registry included, probed now."""
    files = _files(settings)
    rows: list[Row] = []
    notes: list[str] = []
    kafka, registry = settings.kafka_bootstrap_servers, settings.schema_registry_url
    kafka_ok, registry_ok, redis_ok = await asyncio.gather(
        port_open(kafka), registry_answers(registry), ping(settings.redis_url)
    )
    for name, external, ok, endpoint in (
        ("kafka", external_kafka(), kafka_ok, kafka),
        ("registry", external_registry(), registry_ok, registry),
        ("redis", external_redis(), redis_ok, public_url(settings.redis_url)),
    ):
        if external:
            rows.append(Row(name, "external", "healthy" if ok else "down", "n/a", endpoint))
            continue
        pid = _script_pid(settings, name)
        health = "stopped" if pid is None else ("healthy" if ok else "unhealthy")
        rows.append(Row(name, str(pid) if pid else "-", health, "n/a", endpoint))
    supervisor = files.running_supervisor()
    rows.append(
        Row("supervisor", str(supervisor or "-"), "running" if supervisor else "stopped", "n/a", str(files.state))
    )
    state = files.read_state()
    wanted = files.read_plan() or plan(settings)
    instance_rows = await _instance_rows(wanted.instances, state, supervised=supervisor is not None)
    rows += instance_rows
    running = {r.name for r in instance_rows if r.pid != "-"}
    counted = await figures([spec for spec in wanted.instances if spec.name in running])
    notes.append(
        "restarts n/a: Kafka, the registry, Redis and the supervisor are started by `jetbridge up`, not supervised."
    )
    if supervisor is None and any(r.pid != "-" for r in instance_rows):
        notes.append("The supervisor is not running: nothing restarts these; `jetbridge up` takes them over.")
    return Status(rows, notes, counted)


async def down(settings: Settings, report: Reporter | Callable[[str], None]) -> None:
    """Stop the supervisor (which stops its instances), anything it left behind, then Redis, the registry and Kafka."""
    if callable(report):
        report = LineReporter(report)
    files = _files(settings)
    supervisor = files.running_supervisor()
    if supervisor is not None:
        state = files.read_state()
        names = [i.name for i in state.instances if i.pid] if state is not None else []
        report.working(f"stopping {len(names)} instances")
        os.kill(supervisor, signal.SIGTERM)
        # The supervisor stops kind by kind, each within the grace period.
        give_up = time.monotonic() + settings.stop_grace_s * (len(KINDS) + 1)
        while alive(supervisor) and time.monotonic() < give_up:  # noqa: ASYNC110 - polling another process
            await asyncio.sleep(0.1)
        if alive(supervisor):
            kill_group(supervisor, signal.SIGKILL)
        report.done(f"Stopped          {', '.join(names) or 'nothing'} (supervisor pid {supervisor})")
    stopped = await _stop_orphans(settings, files)
    stopped += await _stop_strays(settings)
    if stopped:
        report.done(f"Stopped          {', '.join(stopped)} (not supervised)")
    files.supervisor_pid.unlink(missing_ok=True)
    files.plan.unlink(missing_ok=True)  # the next `up` starts from one of each unless told otherwise
    for name, title, external in (
        ("redis", "Redis", external_redis()),
        ("registry", "the schema registry", external_registry()),
        ("kafka", "Kafka", external_kafka()),
    ):
        if external:
            continue
        if _script_pid(settings, name) is None:
            await _script(settings, name, "stop")  # clears a stale PID file
            continue
        report.working(f"stopping {title}")
        await _script(settings, name, "stop")
        report.done(f"Stopped          {title}")


async def _stop_orphans(settings: Settings, files: StackFiles) -> list[str]:
    """Stop instances recorded in the state file that still run without their supervisor."""
    state = files.read_state()
    if state is None:
        return []
    orphans = [i for i in state.instances if i.pid and alive(i.pid, i.pid_started)]
    await _stop_pids([i.pid for i in orphans if i.pid], settings.stop_grace_s)
    if orphans or any(i.state != "stopped" for i in state.instances):
        instances = [i.model_copy(update={"state": "stopped", "pid": None, "healthy": False}) for i in state.instances]
        files.write_state(StackState(supervisor_pid=state.supervisor_pid, updated_at=now_iso(), instances=instances))
    return [i.name for i in orphans]


async def _stop_strays(settings: Settings) -> list[str]:
    """Processes of ours named only by a PID file (left by an older stack); nothing whose command line differs."""
    found: dict[str, int] = {}
    for path in settings.run_dir.glob("*.pid"):
        if path.stem in _SCRIPT_MARKERS:
            continue
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and alive(pid) and any(m in cmdline(pid) for m in _OUR_MODULES):
            found[path.stem] = pid
        path.unlink(missing_ok=True)
    await _stop_pids(list(set(found.values())), settings.stop_grace_s)
    return sorted(found)


async def _stop_pids(pids: Sequence[int], grace_s: float) -> None:
    for pid in pids:
        kill_group(pid, signal.SIGTERM)
    give_up = time.monotonic() + grace_s
    while any(group_alive(pid) for pid in pids) and time.monotonic() < give_up:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    for pid in pids:
        kill_group(pid, signal.SIGKILL)
