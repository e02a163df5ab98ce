"""The local stack with another airline registry for one benchmark, and back as it was afterwards.

Every process of the stack reads its registry once, from the ``JB_AIRLINES_FILE`` the supervisor was
started with, so another registry means another supervisor: ``jetbridge down`` then ``jetbridge up`` with
the new file, in child processes given exactly the environment the stack must run with (the supervisor
passes its own on to every instance). Kafka and the schema registry are left running across the switch:
both commands are told they are external. What ran before (the supervisor's environment, so its registry,
and its scale) is read before the switch and brought back by ``restore``; a stack that was not running is
stopped again. The commands' output goes to ``$JB_HOME/logs/bench-stack.log``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
from pydantic import SecretStr

from infra.stack.components import format_scale
from infra.stack.probes import port_open, registry_answers
from infra.stack.state import StackFiles
from jetbridge.airlines import DEFAULT_REGISTRY
from jetbridge.errors import ConfigurationError
from jetbridge.settings import REPO_ROOT, Settings

__all__ = [
    "PreviousStack",
    "previous_stack",
    "registry_path",
    "restore",
    "running_registry",
    "stack_env",
    "switch_registry",
]

Say = Callable[[str], None]

# Set per instance by the supervisor; a value here would leak into every instance.
_PER_INSTANCE = frozenset({"instance", "health_port"})


def registry_path(value: str | None) -> Path:
    """The registry file a stack reads for this ``JB_AIRLINES_FILE`` value (unset: the shipped one)."""
    if not value:
        return DEFAULT_REGISTRY
    path = Path(value)
    # The supervisor and its instances run in the repository root.
    return (path if path.is_absolute() else REPO_ROOT / path).resolve()


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


@dataclass(frozen=True)
class PreviousStack:
    """The stack as it was before the benchmark touched it."""

    running: bool
    env: dict[str, str] | None  # the running supervisor's environment (None: not running or unreadable)
    scale: dict[str, int]
    simulators: bool
    infra_running: bool

    @property
    def airlines_file(self) -> Path:
        return registry_path((self.env or {}).get("JB_AIRLINES_FILE"))

    def describe(self) -> str:
        return f"registry {_shown(self.airlines_file)}, {format_scale(self.scale)}"


def stack_env(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with every setting that was given explicitly, so ``jetbridge up`` starts what ``settings`` name."""
    env = dict(base)
    for name in settings.model_fields_set - _PER_INSTANCE:
        alias = Settings.model_fields[name].validation_alias
        value = getattr(settings, name)
        if isinstance(alias, str) and value is not None:
            env[alias] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    env["JB_HOME"] = str(settings.home)
    return env


def _infra_env(settings: Settings) -> dict[str, str]:
    """Kafka and the schema registry named as external: ``down`` leaves them alone, ``up`` only checks them."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SCHEMA_REGISTRY_URL": settings.schema_registry_url,
    }


async def _infra_answers(settings: Settings) -> bool:
    kafka, registry = await asyncio.gather(
        port_open(settings.kafka_bootstrap_servers), registry_answers(settings.schema_registry_url)
    )
    return kafka and registry


def _supervisor_env(settings: Settings) -> dict[str, str] | None:
    pid = StackFiles(settings.run_dir, settings.log_dir).running_supervisor()
    if pid is None:
        return None
    try:
        return dict(psutil.Process(pid).environ())
    except psutil.Error:
        return None


def running_registry(settings: Settings) -> Path | None:
    """The registry the running stack reads (None when no supervisor runs, or its environment is unreadable)."""
    env = _supervisor_env(settings)
    return None if env is None else registry_path(env.get("JB_AIRLINES_FILE"))


async def previous_stack(settings: Settings) -> PreviousStack:
    """The stack as it is now; raises when it runs but could not be brought back (its environment unreadable)."""
    files = StackFiles(settings.run_dir, settings.log_dir)
    running = files.running_supervisor() is not None
    plan = files.read_plan() if running else None
    env = _supervisor_env(settings) if running else None
    if running and env is None:
        raise ConfigurationError(
            "the running stack's environment cannot be read, so it could not be brought back after the run: "
            "stop it first (`jetbridge down`)"
        )
    return PreviousStack(
        running=running,
        env=env,
        scale=dict(plan.scale) if plan is not None else {},
        simulators=plan.simulators if plan is not None else True,
        infra_running=await _infra_answers(settings),
    )


def _tail(path: Path, since: int, lines: int = 15) -> str:
    try:
        with path.open("rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return "  (no log)"
    return "\n".join(f"  {line}" for line in text.splitlines()[-lines:]) or "  (empty)"


async def _jetbridge(settings: Settings, args: list[str], env: Mapping[str, str]) -> float:
    """Run ``jetbridge ARGS`` with ``env``, its output appended to the log; the seconds it took."""
    log_path = settings.log_dir / "bench-stack.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("ab") as log:
        since = log.tell()
        log.write(f"\n$ jetbridge {' '.join(args)}\n".encode())
        log.flush()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "jetbridge.cli",
            *args,
            cwd=REPO_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            code: int | None = await asyncio.wait_for(proc.wait(), settings.up_timeout_s + 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            code = None
    if code != 0:
        how = "did not finish in time" if code is None else f"failed (exit {code})"
        raise ConfigurationError(
            f"`jetbridge {' '.join(args)}` {how}; last lines of {log_path}:\n{_tail(log_path, since)}"
        )
    return time.monotonic() - started


async def switch_registry(settings: Settings, registry: Path, previous: PreviousStack, say: Say) -> None:
    """The stack running with ``registry`` (and the simulators), at the scale it had; says what it does."""
    env = stack_env(settings, os.environ) | {"JB_AIRLINES_FILE": str(registry)}
    keep = _infra_env(settings) if previous.infra_running else {}
    log = _shown(settings.log_dir / "bench-stack.log")
    if previous.running:
        say(
            f"bench: the stack runs with {previous.describe()}: restarting it with the synthetic registry "
            "(brought back as it was after the run)"
        )
        await _jetbridge(settings, ["down"], env | keep)
    else:
        say("bench: the stack is not running: starting it with the synthetic registry (stopped after the run)")
    seconds = await _jetbridge(settings, ["up", "--scale", format_scale(previous.scale)], env | keep)
    say(f"bench: stack up with the synthetic registry in {seconds:.1f} s (log: {log})")


async def restore(settings: Settings, previous: PreviousStack, say: Say) -> None:
    """Bring back what ran before ``switch_registry`` (or stop the stack if nothing did); never raises."""
    keep = _infra_env(settings) if await _infra_answers(settings) else {}
    ours = stack_env(settings, os.environ)
    try:
        if previous.running:
            say(f"bench: restoring the stack: {previous.describe()}")
            await _jetbridge(settings, ["down"], ours | keep)
            if previous.env is None:
                raise ConfigurationError("the stack's environment could not be read before the run")
            up = ["up", "--scale", format_scale(previous.scale)] + ([] if previous.simulators else ["--no-simulators"])
            seconds = await _jetbridge(settings, up, previous.env)
            say(f"bench: stack restored in {seconds:.1f} s")
        else:
            # Kafka and the registry stop too when this run started them.
            await _jetbridge(settings, ["down"], ours | (keep if previous.infra_running else {}))
            say("bench: stack stopped (it was not running before the run)")
    except (ConfigurationError, OSError) as exc:
        say(
            f"bench: could not restore the stack ({exc}).\n"
            f"       Run `jetbridge down`, then `jetbridge up` with the settings it had ({previous.describe()})."
        )
