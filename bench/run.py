"""One benchmark run: Jetbridge and the direct fan-out baseline, alternated at each offered rate, on the
same machine, against the same simulators at fixed latencies.

    jetbridge bench [--rates 10,20,50,100] [--warmup 5] [--hold 20] [--soak 600]

Starts what is missing (`jetbridge up`, the baseline server), sets every simulated airline to a fixed
latency, runs, restores the simulators and stops the baseline, then writes ``results.json``,
``latency.png`` and ``summary.md`` into ``bench/results/<timestamp>/`` (and ``bench/results/latest/``).

    jetbridge bench --airline-counts 5,10,20 [--airline-counts-rate 10]

How cost grows with the number of airlines a search fans out to: a registry of max(N) synthetic airlines
that all fly LHR-JFK (``bench/synthetic_airlines.py``), the stack restarted with it and brought back
afterwards (``bench/registry_switch.py``), then for each N both systems, alternated, at one offered rate,
every search asking for exactly N airlines (the tool's ``airlines`` argument). Writes ``results.json``,
``airline-counts.png`` and ``summary.md`` into ``bench/results/<timestamp>/`` (and
``bench/results/latest-airline-counts/``).

    jetbridge bench --airlines-50 [--rates 10]

Fifty real airlines with their real route networks (``bench/route_networks.py``), the stack restarted with
them as above, then both systems, alternated, at the first of the rates, on a hub pair, the transatlantic
flagship and a thin route, every search naming no airlines, so route pruning decides whom to ask. Writes
``results.json``, ``summary.md`` and ``airlines.toml`` into ``bench/results/<timestamp>/`` (and
``bench/results/latest-airlines-50/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.load import Sample, open_loop
from bench.measure import ProcessMeter, topic_end_offsets
from bench.registry_switch import previous_stack, registry_path, restore, running_registry, switch_registry
from bench.report import (
    percentile,
    write_chart,
    write_counts_chart,
    write_counts_summary,
    write_json,
    write_network_summary,
    write_summary,
)
from bench.route_networks import (
    MEASURED_ROUTES,
    NetworkAirline,
    kinds_count,
    network_fleet,
    serving,
    write_network_registry,
)
from bench.synthetic_airlines import ROUTE, SyntheticAirline, synthetic_fleet, write_registry
from infra.stack.state import StackFiles
from jetbridge.airlines import DEFAULT_REGISTRY, load_registry
from jetbridge.errors import ConfigurationError
from jetbridge.kafka import client_config
from jetbridge.settings import REPO_ROOT, Settings
from jetbridge.topics import TopicNames

__all__ = ["BenchConfig", "kafka_log_bytes", "network_rows", "run_airline_counts", "run_benchmark", "run_network"]

Say = Callable[[str], None]
Writer = Callable[[Path, dict[str, Any]], None]

DEFAULT_LATENCY_MS = {"BA": 100, "AA": 120, "VS": 140, "DL": 160, "AY": 180}
JETBRIDGE_PROCESSES = ("bridge", "streams", "connectors", "kafka", "registry")
KAFKA_PREFIXES = ("jb.", "jetbridge-streams")


@dataclass
class BenchConfig:
    rates: list[float] = field(default_factory=lambda: [10, 20, 30, 40, 50, 75, 100])
    warmup_s: float = 5.0
    hold_s: float = 20.0
    deadline_ms: int = 3000
    sessions: int = 8
    airline_latency_ms: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LATENCY_MS))
    baseline_port: int = 8089
    soak_s: float = 0.0
    soak_rate: float = 20.0
    # Load before the first measured rate, not measured: a broker just started compiles its hot paths (JIT)
    # for a minute or so, and that CPU is not what a search costs (measured: Kafka at 10/s 25.1 ms per search
    # right after `jetbridge up`, 7.9 ms a run later on the same broker).
    stack_warmup_s: float = 45.0
    out_dir: Path = REPO_ROOT / "bench" / "results"
    # The airline-count mode (run_airline_counts): numbers of airlines per search, at one offered rate,
    # the synthetic airlines' fixed latencies taken in turn.
    airline_counts: list[int] = field(default_factory=list)
    airline_counts_rate: float = 10.0
    synthetic_latency_ms: list[int] = field(default_factory=lambda: list(DEFAULT_LATENCY_MS.values()))
    # The cache-hit scenario (bench/cache_mix.py): this share of the searches repeats earlier ones, at this rate.
    cache_mix: float = 0.0
    cache_mix_rate: float = 20.0
    # The bearer token both systems are called with (the baseline ignores it); when unset and the bridge
    # authenticates, one of the development issuer for the client "jetbridge-bench" (`with_token`).
    token: str | None = None


def with_token(settings: Settings, config: BenchConfig) -> BenchConfig:
    """``config`` with a token to call the bridge with, as an agent would have one."""
    if config.token or settings.auth == "off":
        return config
    if not settings.auth_dev_issuer:
        raise ConfigurationError("the bridge wants a token of JB_AUTH_ISSUER: set BenchConfig.token (--token)")
    from infra.auth.dev_issuer import dev_token
    from mcp_bridge.auth import OFFERS_READ

    return replace(config, token=dev_token(settings, "jetbridge-bench", [OFFERS_READ], ttl_s=24 * 3600))


def _arguments(
    deadline_ms: int, airlines: Sequence[str] | None = None, route: tuple[str, str] = ("LHR", "JFK")
) -> Callable[[int], dict[str, Any]]:
    today = datetime.now(UTC).date()

    def make(i: int) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "origin": route[0],
            "destination": route[1],
            "departure_date": (today + timedelta(days=7 + i % 60)).isoformat(),
            "adults": 1 + i % 2,
            "deadline_ms": deadline_ms,
            # The live path, as the baseline has it: repeats are the cache-mix scenario's (bench/cache_mix.py).
            "fresh": True,
        }
        if airlines is not None:
            arguments["airlines"] = list(airlines)
        return arguments

    return make


def _baseline_env(settings: Settings) -> dict[str, str]:
    """The baseline reads the same airline registry (same simulators) as the stack under test."""
    env = dict(os.environ, JB_HOME=str(settings.home))
    if settings.airlines_file is not None:
        env["JB_AIRLINES_FILE"] = str(settings.airlines_file)
    return env


@contextlib.asynccontextmanager
async def _baseline_running(settings: Settings, port: int, control_url: str) -> AsyncIterator[int]:
    """The direct fan-out baseline on ``port``, healthy; yields its PID. On exit the simulators are reset and
    the baseline stopped."""
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    with (settings.log_dir / "direct-baseline.log").open("ab") as log:
        baseline = subprocess.Popen(  # noqa: ASYNC220 - returns at once; health is polled below
            [sys.executable, "-m", "bench.direct_server", "--port", str(port)],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_baseline_env(settings),
        )
        try:
            await _wait_http(f"http://127.0.0.1:{port}/health")
            yield baseline.pid
        finally:
            await _reset_simulators(control_url)
            baseline.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                baseline.wait(timeout=15)
            if baseline.poll() is None:
                baseline.kill()


def _kafka_prefixes(settings: Settings) -> tuple[str, ...]:
    """Topics counted as Jetbridge's events: this deployment's, behind its topic prefix."""
    return tuple(settings.topic_prefix + p for p in KAFKA_PREFIXES)


def _jetbridge_processes(settings: Settings) -> tuple[str, ...]:
    """Jetbridge's own processes; Kafka and the registry when this machine runs them (not for an external cluster)."""
    own_infra = [n for n in ("kafka", "registry") if (settings.run_dir / f"{n}.pid").exists()]
    return tuple(n for n in JETBRIDGE_PROCESSES if n not in ("kafka", "registry") or n in own_infra)


def _pid(settings: Settings, name: str) -> int:
    path = settings.run_dir / f"{name}.pid"
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{name} is not running (no {path}); run `jetbridge up`") from exc
    if not psutil.pid_exists(pid):
        raise ConfigurationError(f"{name} (pid {pid}) is not running; run `jetbridge up`")
    return pid


async def _wait_http(url: str, timeout_s: float = 60) -> None:
    give_up = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=1.0, trust_env=False) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code == 200:
                    return
            if time.monotonic() > give_up:
                raise ConfigurationError(f"{url} did not answer within {timeout_s:.0f} s")
            await asyncio.sleep(0.2)


def _summarise(system: str, rate: float, samples: list[Sample], cpu: dict[str, float], wall_s: float) -> dict[str, Any]:
    measured = [s for s in samples if not s.warmup]
    ok = [s.latency_s * 1000 for s in measured if s.ok]
    errors = len(measured) - len(ok)
    n = max(1, len(measured))
    per_reply = Counter(len(s.airline_statuses) for s in measured if s.ok)
    return {
        "system": system,
        "rate": rate,
        "requests": len(measured),
        "ok": len(ok),
        "errors": errors,
        "error_rate": errors / n,
        "statuses": {st: sum(1 for s in measured if s.status == st) for st in sorted({s.status for s in measured})},
        "achieved_rate": round(len(measured) / wall_s, 2) if wall_s else None,
        "latency_ms": {
            "p50": percentile(ok, 50),
            "p95": percentile(ok, 95),
            "p99": percentile(ok, 99),
            "max": max(ok, default=float("nan")),
            "mean": sum(ok) / len(ok) if ok else float("nan"),
        },
        "cpu_s_per_request": {name: round(v / n, 5) for name, v in cpu.items()}
        | {"total": round(sum(cpu.values()) / n, 5)},
        # How many airlines each answered search named, and how each of them answered.
        "airlines_per_reply": {str(k): per_reply[k] for k in sorted(per_reply)},
        "airline_statuses": dict(sorted(Counter(st for s in measured for st in s.airline_statuses).items())),
    }


async def _measure(
    url: str,
    system: str,
    rate: float,
    config: BenchConfig,
    meter: ProcessMeter,
    own: tuple[str, ...],
    arguments: Callable[[int], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    marks: dict[str, Any] = {}

    def measured_start() -> None:
        marks["cpu0"] = meter.cpu_seconds()
        marks["t0"] = time.monotonic()

    samples = await open_loop(
        url,
        rate=rate,
        warmup_s=config.warmup_s,
        hold_s=config.hold_s,
        arguments=arguments or _arguments(config.deadline_ms),
        timeout_s=config.deadline_ms / 1000 + 2.0,
        sessions=config.sessions,
        on_measured_start=measured_start,
        token=config.token,
    )
    cpu1 = meter.cpu_seconds()
    cpu0 = marks.get("cpu0", cpu1)
    cpu = {name: cpu1[name] - cpu0[name] for name in own}
    return _summarise(system, rate, samples, cpu, config.hold_s)


def _metered(settings: Settings, jetbridge_processes: tuple[str, ...], baseline_pid: int) -> dict[str, int]:
    """Every process whose CPU and memory the bench reads: Jetbridge's, the baseline, the simulators, itself."""
    pids = {name: _pid(settings, name) for name in jetbridge_processes}
    return pids | {
        "direct-baseline": baseline_pid,
        "simulators": _pid(settings, "simulators"),
        "load-generator": os.getpid(),
    }


async def _run_one(
    settings: Settings,
    prefixes: tuple[str, ...],
    url: str,
    system: str,
    rate: float,
    config: BenchConfig,
    meter: ProcessMeter,
    own: tuple[str, ...],
    arguments: Callable[[int], dict[str, Any]],
) -> dict[str, Any]:
    """One measured run of one system at one rate: its figures and the Kafka events it caused; returns once
    the system has worked off what it queued."""
    before = await topic_end_offsets(client_config(settings), prefixes)
    row = await _measure(url, system, rate, config, meter, own, arguments)
    after = await topic_end_offsets(client_config(settings), prefixes)
    row["kafka_events_per_request"] = _events(before, after, round((config.warmup_s + config.hold_s) * rate))
    await _settle(meter, own)
    return row


def _figures(row: dict[str, Any], per: str) -> str:
    lat = row["latency_ms"]
    return (
        f"       p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms, "
        f"errors {row['error_rate'] * 100:.2f} %, CPU {row['cpu_s_per_request']['total'] * 1000:.1f} {per}"
    )


async def _warm_up(
    jetbridge_url: str,
    baseline_url: str,
    rate: float,
    config: BenchConfig,
    say: Say,
    arguments: Callable[[int], dict[str, Any]] | None = None,
) -> None:
    """Load both systems, unmeasured, for ``config.stack_warmup_s`` each: a broker just started compiles its
    hot paths (JIT) for a minute or so, and that CPU is not what a search costs."""
    if config.stack_warmup_s <= 0:
        return
    say(
        f"bench: warming both systems up, {config.stack_warmup_s:g} s each at {rate:g}/s "
        "(not measured: a freshly started broker is still compiling its hot paths)"
    )
    for url in (jetbridge_url, baseline_url):
        await open_loop(
            url,
            rate=rate,
            warmup_s=0.0,
            hold_s=config.stack_warmup_s,
            arguments=arguments or _arguments(config.deadline_ms),
            timeout_s=config.deadline_ms / 1000 + 2.0,
            sessions=config.sessions,
            token=config.token,
        )


async def _settle(meter: ProcessMeter, names: tuple[str, ...], quiet_cores: float = 0.15, limit_s: float = 60) -> None:
    """Wait until a system has worked off what it queued (its CPU is quiet) before the next run."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + limit_s
    before = meter.cpu_seconds()
    while loop.time() < give_up:
        await asyncio.sleep(1.0)
        after = meter.cpu_seconds()
        if sum(after[n] - before[n] for n in names) < quiet_cores:
            return
        before = after


async def _configure_simulators(control_url: str, latencies: dict[str, int]) -> None:
    async with httpx.AsyncClient(base_url=control_url, timeout=10, trust_env=False) as http:
        for code, latency in latencies.items():
            response = await http.put(
                f"/airlines/{code}", json={"latency_ms": latency, "jitter_ms": 0, "fault": "none"}
            )
            if response.status_code != 200:
                raise ConfigurationError(f"simulator {code} refused its latency: {response.text[:200]}")


async def _reset_simulators(control_url: str) -> None:
    async with httpx.AsyncClient(base_url=control_url, timeout=10, trust_env=False) as http:
        with contextlib.suppress(httpx.HTTPError):
            await http.post("/reset")


def _machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


@dataclass
class _Metering:
    """What every mode measures with: the baseline running beside the stack, a meter on every process, both
    systems warmed up and quiet again."""

    meter: ProcessMeter
    pids: dict[str, int]
    jetbridge_processes: tuple[str, ...]
    bridge_url: str
    baseline_url: str
    prefixes: tuple[str, ...]
    started: float

    @property
    def systems(self) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
        """Each system's name, MCP URL and metered processes, in the order they are measured."""
        return (
            ("jetbridge", self.bridge_url, self.jetbridge_processes),
            ("baseline", self.baseline_url, ("direct-baseline",)),
        )

    def peak_rss_mb(self) -> dict[str, dict[str, float]]:
        peak = self.meter.peak_rss_mb()
        return {
            "jetbridge": {k: peak[k] for k in self.jetbridge_processes},
            "baseline": {"direct-baseline": peak["direct-baseline"]},
            "shared": {"simulators": peak["simulators"], "load-generator": peak["load-generator"]},
        }


@contextlib.asynccontextmanager
async def _metering(
    settings: Settings,
    config: BenchConfig,
    latencies: dict[str, int],
    *,
    warm_rate: float,
    say: Say,
    warm_arguments: Callable[[int], dict[str, Any]] | None = None,
) -> AsyncIterator[_Metering]:
    """Start the baseline, give the simulated airlines ``latencies``, meter every process, warm both systems up
    at ``warm_rate`` and wait until they are quiet; the meter stops when the block ends."""
    control_url = f"http://{settings.simulator_host}:{settings.simulator_control_port}"
    async with _baseline_running(settings, config.baseline_port, control_url) as baseline_pid:
        await _configure_simulators(control_url, latencies)
        jetbridge_processes = _jetbridge_processes(settings)
        pids = _metered(settings, jetbridge_processes, baseline_pid)
        meter = ProcessMeter(pids)
        meter.start()
        metering = _Metering(
            meter,
            pids,
            jetbridge_processes,
            settings.bridge_url,
            f"http://127.0.0.1:{config.baseline_port}/mcp",
            _kafka_prefixes(settings),
            time.monotonic(),
        )
        try:
            await _warm_up(settings.bridge_url, metering.baseline_url, warm_rate, config, say, warm_arguments)
            await _settle(meter, tuple(pids))
            yield metering
        finally:
            await meter.stop()


async def run_benchmark(settings: Settings, config: BenchConfig, say: Say, *, start_stack: bool = True) -> Path:
    """Run the whole benchmark; returns the folder with results.json, latency.png and summary.md."""
    config = with_token(settings, config)
    if start_stack:
        from infra.stack.control import up

        await up(settings, say)
        _check_registry(settings, say)
    warm_rate = max(config.rates[0], min(config.rates[-1], 30.0))
    runs: list[dict[str, Any]] = []
    saturated: dict[str, float] = {}
    soak: dict[str, Any] | None = None
    async with _metering(settings, config, config.airline_latency_ms, warm_rate=warm_rate, say=say) as metering:
        for rate in config.rates:
            for system, url, own in metering.systems:
                if system in saturated:
                    say(f"bench: {system} at {rate:g}/s skipped: it already failed at {saturated[system]:g}/s")
                    continue
                say(f"bench: {system} at {rate:g}/s ({config.warmup_s:g} s warm-up + {config.hold_s:g} s)")
                arguments = _arguments(config.deadline_ms)
                row = await _run_one(
                    settings, metering.prefixes, url, system, rate, config, metering.meter, own, arguments
                )
                runs.append(row)
                # Past this point a system only queues up work; higher rates would measure the queue.
                if _failed(row, config.deadline_ms):
                    saturated[system] = rate
                say(_figures(row, "ms/req"))
        if config.soak_s > 0:
            soak = await _soak(settings, config, {k: metering.pids[k] for k in metering.jetbridge_processes}, say)
    # Events per search where Jetbridge kept up (at overload, timeouts add dead letters).
    sustained_rate = _sustained(runs, "jetbridge", config.deadline_ms) or config.rates[0]
    events = next(r for r in runs if r["system"] == "jetbridge" and r["rate"] == sustained_rate)[
        "kafka_events_per_request"
    ]
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "config": {k: v for k, v in asdict(config).items() if k != "out_dir"},
        "duration_s": round(time.monotonic() - metering.started, 1),
        "runs": runs,
        "added_latency_ms": _added(runs),
        "max_sustained_rate": {s: _sustained(runs, s, config.deadline_ms) for s in ("jetbridge", "baseline")},
        "saturated_at": saturated,
        "peak_rss_mb": metering.peak_rss_mb(),
        "kafka_events_per_request": events,
        "soak": soak,
    }
    return _write(config.out_dir, results, _REPORTS, latest="latest")


def _failed(row: dict[str, Any], deadline_ms: int) -> bool:
    """A run where the system did not keep up: p99 at the deadline, or over 5 % errors."""
    return bool(row["error_rate"] > 0.05 or not row["latency_ms"]["p99"] < deadline_ms)


def _check_registry(settings: Settings, say: Say) -> None:
    """Say so when the running stack reads another airline registry than the one asked for (an interrupted
    ``--airline-counts`` run, say): the figures would be of other airlines."""
    running = running_registry(settings)
    wanted = registry_path(str(settings.airlines_file or DEFAULT_REGISTRY))
    if running is not None and running != wanted:
        say(
            f"bench: note: the running stack reads the airline registry {running}, not {wanted}; "
            "`jetbridge down` then `jetbridge up` to measure the one asked for"
        )


async def run_airline_counts(settings: Settings, config: BenchConfig, say: Say) -> Path:
    """Cost against the number of airlines per search, both systems at one rate; returns the results folder.

    Restarts the stack with a registry of synthetic airlines and brings back what ran before, whatever happens.
    """
    config = with_token(settings, config)
    counts = sorted(set(config.airline_counts))
    if not counts:
        raise ConfigurationError("no airline counts to measure")
    taken = set(load_registry(settings.airlines_file).codes()) | set(load_registry(DEFAULT_REGISTRY).codes())
    fleet = synthetic_fleet(
        counts[-1], taken=taken, latencies_ms=config.synthetic_latency_ms, host=settings.simulator_host
    )
    registry = write_registry(
        settings.home / "bench" / f"airlines-{counts[-1]}.toml",
        fleet,
        defaults_from=settings.airlines_file or DEFAULT_REGISTRY,
    )
    say(
        f"bench: airline counts {', '.join(map(str, counts))} at {config.airline_counts_rate:g}/s: registry of "
        f"{_airlines(len(fleet))} (synthetic) flying {'-'.join(ROUTE)} (ndc, rest, mcp in turn): {registry}"
    )
    results = await _on_registry(
        settings, registry, [a.code for a in fleet], say, lambda on: _measure_counts(on, config, counts, fleet, say)
    )
    return _write(config.out_dir, results, _COUNTS_REPORTS, latest="latest-airline-counts")


async def _on_registry(
    settings: Settings,
    registry: Path,
    codes: list[str],
    say: Say,
    measure: Callable[[Settings], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """Restart the stack on ``registry``, check it serves ``codes``, measure, and bring back what ran before
    (whatever happens); the results name the registry file."""
    previous = await previous_stack(settings)
    on = settings.model_copy(update={"airlines_file": registry})
    try:
        await switch_registry(settings, registry, previous, say)
        await _check_fleet(on, codes, say)
        results = await measure(on)
    finally:
        await restore(settings, previous, say)
    results["registry_file"] = str(registry)
    return results


def _airlines(n: int) -> str:
    return f"{n} airline" if n == 1 else f"{n} airlines"


def _copy_registry(path: Path, results: dict[str, Any]) -> None:
    shutil.copyfile(results["registry_file"], path)


async def _check_fleet(settings: Settings, codes: list[str], say: Say) -> None:
    """Every synthetic airline is simulated, has its calls topic, and a connector consumer placed in its group."""
    control = f"http://{settings.simulator_host}:{settings.simulator_control_port}"
    names = TopicNames(settings.topic_prefix)
    topics = await topic_end_offsets(client_config(settings), (settings.topic_prefix + "jb.airline.",))
    plan = StackFiles(settings.run_dir, settings.log_dir).read_plan()
    placed: set[str] = set()
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
        simulated = set((await http.get(f"{control}/health")).json().get("airlines", []))
        for spec in plan.instances if plan is not None else ():
            if spec.kind == "connectors":
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    report = (await http.get(spec.health_url)).json()
                    placed |= {code for code, ok in report.get("placed", {}).items() if ok}
    problems = [
        f"{what}: {', '.join(missing)}"
        for what, missing in (
            ("not simulated", [c for c in codes if c not in simulated]),
            ("no calls topic", [c for c in codes if names.calls(c) not in topics]),
            ("no connector consumer placed", [c for c in codes if c not in placed]),
        )
        if missing
    ]
    if problems:
        raise ConfigurationError(
            "the stack does not serve every airline of the benchmark registry: " + "; ".join(problems)
        )
    say(f"bench: {_airlines(len(codes))} simulated, each with its calls topic and a connector consumer placed")


async def _measure_counts(
    settings: Settings, config: BenchConfig, counts: list[int], fleet: list[SyntheticAirline], say: Say
) -> dict[str, Any]:
    rate = config.airline_counts_rate
    codes_all = [a.code for a in fleet[: max(counts)]]
    runs: list[dict[str, Any]] = []
    saturated: dict[str, int] = {}
    latencies = {a.code: a.latency_ms for a in fleet}
    warm = _arguments(config.deadline_ms, codes_all)
    async with _metering(settings, config, latencies, warm_rate=rate, say=say, warm_arguments=warm) as metering:
        for n in counts:
            codes = [a.code for a in fleet[:n]]
            for system, url, own in metering.systems:
                if system in saturated:
                    failed = _airlines(saturated[system])
                    say(f"bench: {_airlines(n)}, {system} skipped: it already failed with {failed}")
                    continue
                hold = f"{config.warmup_s:g} s warm-up + {config.hold_s:g} s"
                say(f"bench: {_airlines(n)}, {system} at {rate:g}/s ({hold})")
                arguments = _arguments(config.deadline_ms, codes)
                row = await _run_one(
                    settings, metering.prefixes, url, system, rate, config, metering.meter, own, arguments
                )
                row["airline_count"] = n
                runs.append(row)
                # More airlines only cost more: a system that failed here is not measured further.
                if _failed(row, config.deadline_ms):
                    saturated[system] = n
                events = row["kafka_events_per_request"]["total"]
                say(_figures(row, "ms/search") + f", {events:g} Kafka events/search")
    by_count = _by_count(runs, counts)
    return {
        "mode": "airline_counts",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "config": {k: v for k, v in asdict(config).items() if k not in ("out_dir", "rates", "soak_s", "soak_rate")},
        "duration_s": round(time.monotonic() - metering.started, 1),
        "route": "-".join(ROUTE),
        "rate": rate,
        "airlines": [{"code": a.code, "kind": a.kind, "mapping": a.mapping, "latency_ms": a.latency_ms} for a in fleet],
        "runs": runs,
        "by_count": by_count,
        "growth": _growth(by_count),
        "saturated_at": saturated,
        "peak_rss_mb": metering.peak_rss_mb(),
    }


async def run_network(settings: Settings, config: BenchConfig, say: Say) -> Path:
    """Fifty real airlines with their route networks, both systems at the first rate on the measured routes;
    returns the results folder. Restarts the stack with them and brings back what ran before, whatever happens."""
    config = with_token(settings, config)
    fleet = network_fleet(latencies_ms=config.synthetic_latency_ms, host=settings.simulator_host)
    registry = write_network_registry(
        settings.home / "bench" / f"airlines-network-{len(fleet)}.toml",
        fleet,
        defaults_from=settings.airlines_file or DEFAULT_REGISTRY,
    )
    kinds = ", ".join(f"{n} {kind}" for kind, n in kinds_count(fleet).items())
    say(
        f"bench: {_airlines(len(fleet))} with their OpenFlights route networks ({kinds}), "
        f"{sum(len(a.routes) for a in fleet)} routes: {registry}"
    )
    results = await _on_registry(
        settings, registry, [a.code for a in fleet], say, lambda on: _measure_network(on, config, fleet, say)
    )
    return _write(config.out_dir, results, _NETWORK_REPORTS, latest="latest-airlines-50")


async def _measure_network(
    settings: Settings, config: BenchConfig, fleet: list[NetworkAirline], say: Say
) -> dict[str, Any]:
    rate = config.rates[0]
    runs: list[dict[str, Any]] = []
    latencies = {a.code: a.latency_ms for a in fleet}
    warm = _arguments(config.deadline_ms, route=MEASURED_ROUTES[0])
    async with _metering(settings, config, latencies, warm_rate=rate, say=say, warm_arguments=warm) as metering:
        for route in MEASURED_ROUTES:
            flying = serving(fleet, route)
            for system, url, own in metering.systems:
                name = "-".join(route)
                say(f"bench: {name} ({len(flying)} of {len(fleet)} airlines fly it), {system} at {rate:g}/s")
                arguments = _arguments(config.deadline_ms, route=route)
                bytes_before = kafka_log_bytes(settings, metering.prefixes)
                row = await _run_one(
                    settings, metering.prefixes, url, system, rate, config, metering.meter, own, arguments
                )
                searches = round((config.warmup_s + config.hold_s) * rate)
                row["kafka_bytes_per_request"] = _events(
                    bytes_before, kafka_log_bytes(settings, metering.prefixes), searches
                )
                row |= {"route": name, "airlines_serving": flying}
                runs.append(row)
                say(_figures(row, "ms/search") + f", {row['kafka_events_per_request']['total']:g} Kafka events/search")
    return {
        "mode": "airlines_50",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "config": {k: v for k, v in asdict(config).items() if k not in ("out_dir", "soak_s", "soak_rate")},
        "duration_s": round(time.monotonic() - metering.started, 1),
        "rate": rate,
        "registry_airlines": len(fleet),
        "registry_routes": sum(len(a.routes) for a in fleet),
        "kinds": dict(kinds_count(fleet)),
        "airlines": [
            {"code": a.code, "name": a.name, "kind": a.kind, "mapping": a.mapping, "latency_ms": a.latency_ms}
            | {"routes": len(a.routes)}
            for a in fleet
        ],
        "runs": runs,
        "by_route": network_rows(runs, len(fleet)),
        "peak_rss_mb": metering.peak_rss_mb(),
    }


def kafka_log_bytes(settings: Settings, prefixes: tuple[str, ...]) -> dict[str, int]:
    """Bytes in the local broker's log segments per topic starting with one of ``prefixes``: what the broker
    wrote, batch headers and compression included (empty when Kafka is not this machine's)."""
    if not (settings.run_dir / "kafka.pid").exists():
        return {}
    try:
        properties = (settings.home / "kafka" / "server.properties").read_text(encoding="utf-8")
    except OSError:
        return {}
    dirs = next((line.split("=", 1)[1] for line in properties.splitlines() if line.startswith("log.dirs=")), "")
    sizes: dict[str, int] = {}
    for log_dir in filter(None, dirs.split(",")):
        for partition in Path(log_dir.strip()).glob("*-*"):
            topic = partition.name.rsplit("-", 1)[0]
            if topic.startswith(prefixes):
                with contextlib.suppress(OSError):  # a segment deleted while summed
                    sizes[topic] = sizes.get(topic, 0) + sum(f.stat().st_size for f in partition.glob("*.log"))
    return sizes


def _mean_airlines(per_reply: dict[str, int]) -> float | None:
    replies = sum(per_reply.values())
    return round(sum(int(k) * v for k, v in per_reply.items()) / replies, 2) if replies else None


def network_rows(runs: list[dict[str, Any]], registry_airlines: int) -> list[dict[str, Any]]:
    """One row per measured route: whom pruning asked out of the whole registry, and each system's figures."""
    rows: list[dict[str, Any]] = []
    for route in dict.fromkeys(r["route"] for r in runs):
        mine = {r["system"]: r for r in runs if r["route"] == route}
        serving_codes = next(iter(mine.values()))["airlines_serving"]
        row: dict[str, Any] = {
            "route": route,
            "registry_airlines": registry_airlines,
            "airlines_serving": len(serving_codes),
            "airlines_serving_codes": serving_codes,
        }
        for system in ("jetbridge", "baseline"):
            run = mine.get(system)
            if run is None:
                row[system] = None
                continue
            events = run["kafka_events_per_request"]
            row[system] = {
                "airlines_per_reply": _mean_airlines(run["airlines_per_reply"]),
                "cpu_ms_per_search": round(run["cpu_s_per_request"]["total"] * 1000, 2),
                "cpu_ms_per_search_by_process": {
                    k: round(v * 1000, 2) for k, v in run["cpu_s_per_request"].items() if k != "total"
                },
                "kafka_events_per_search": events.get("total", 0.0),
                "kafka_events_per_search_by_topic": {t: v for t, v in events.items() if t != "total"},
                "kafka_bytes_per_search": run.get("kafka_bytes_per_request", {}).get("total"),
                "kafka_bytes_per_search_by_topic": {
                    t: v for t, v in run.get("kafka_bytes_per_request", {}).items() if t != "total"
                },
                **_calls_and_responses(events),
                "latency_ms": {q: run["latency_ms"][q] for q in ("p50", "p95", "p99")},
                "requests": run["requests"],
                "errors": run["errors"],
                "error_rate": run["error_rate"],
                "airline_statuses": run["airline_statuses"],
            }
        rows.append(row)
    return rows


def _calls_and_responses(events: dict[str, float]) -> dict[str, float]:
    calls = sum(v for t, v in events.items() if ".airline." in t and t.endswith(".calls.v1"))
    responses = sum(v for t, v in events.items() if t.endswith("airline-responses.v1"))
    return {"calls": round(calls, 2), "responses": round(responses, 2)}


def _by_count(runs: list[dict[str, Any]], counts: list[int]) -> list[dict[str, Any]]:
    """One row per airline count: both systems' figures side by side, and Jetbridge's added latency."""
    by = {(r["system"], r["airline_count"]): r for r in runs}
    rows = []
    for n in counts:
        row: dict[str, Any] = {"airlines": n}
        for system in ("jetbridge", "baseline"):
            run = by.get((system, n))
            if run is None:
                row[system] = None
                continue
            events = run["kafka_events_per_request"]
            row[system] = {
                "cpu_ms_per_search": round(run["cpu_s_per_request"]["total"] * 1000, 2),
                "cpu_ms_per_search_by_process": {
                    k: round(v * 1000, 2) for k, v in run["cpu_s_per_request"].items() if k != "total"
                },
                "kafka_events_per_search": events.get("total", 0.0),
                **_calls_and_responses(events),
                "latency_ms": {q: run["latency_ms"][q] for q in ("p50", "p95", "p99")},
                "requests": run["requests"],
                "errors": run["errors"],
                "error_rate": run["error_rate"],
                "statuses": run["statuses"],
            }
        jb, base = row["jetbridge"], row["baseline"]
        row["added_latency_ms"] = (
            {q: round(jb["latency_ms"][q] - base["latency_ms"][q], 1) for q in ("p50", "p95", "p99")}
            if jb is not None and base is not None
            else None
        )
        rows.append(row)
    return rows


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    num = sum((x - mean_x) * (y - mean_y) for x, y in points)
    den = sum((x - mean_x) ** 2 for x, _ in points)
    return num / den


def _growth(by_count: list[dict[str, Any]]) -> dict[str, Any]:
    """What one more airline per search costs (least-squares slopes over the counts measured)."""
    growth: dict[str, Any] = {"cpu_ms_per_added_airline": {}, "kafka_events_per_added_airline": None}
    for system in ("jetbridge", "baseline"):
        points = [(r["airlines"], r[system]["cpu_ms_per_search"]) for r in by_count if r[system] is not None]
        slope = _slope(points)
        growth["cpu_ms_per_added_airline"][system] = None if slope is None else round(slope, 2)
    events = [(r["airlines"], r["jetbridge"]["kafka_events_per_search"]) for r in by_count if r["jetbridge"]]
    slope = _slope(events)
    growth["kafka_events_per_added_airline"] = None if slope is None else round(slope, 2)
    return growth


async def _soak(settings: Settings, config: BenchConfig, pids: dict[str, int], say: Say) -> dict[str, Any]:
    say(f"bench: soak, Jetbridge at {config.soak_rate:g}/s for {config.soak_s:g} s")
    meter = ProcessMeter(pids, interval_s=5.0)
    meter.start()
    samples = await open_loop(
        settings.bridge_url,
        rate=config.soak_rate,
        warmup_s=0,
        hold_s=config.soak_s,
        arguments=_arguments(config.deadline_ms),
        timeout_s=config.deadline_ms / 1000 + 2.0,
        sessions=config.sessions,
        token=config.token,
    )
    await meter.stop()
    rss: dict[str, dict[str, float]] = {}
    for name in pids:
        series = meter.rss_series_mb(name)
        first = [mb for t, mb in series if t <= 60] or [series[0][1]]
        last = [mb for t, mb in series if t >= series[-1][0] - 60] or [series[-1][1]]
        rss[name] = {"first": max(first), "last": max(last)}
    ok = [s.latency_s * 1000 for s in samples if s.ok]
    return {
        "seconds": config.soak_s,
        "rate": config.soak_rate,
        "requests": len(samples),
        "error_rate": 1 - len(ok) / max(1, len(samples)),
        "latency_ms": {"p50": percentile(ok, 50), "p99": percentile(ok, 99)},
        "rss_mb": rss,
    }


def _events(before: dict[str, int], after: dict[str, int], requests: int) -> dict[str, float]:
    per = {t: (after.get(t, 0) - before.get(t, 0)) / max(1, requests) for t in sorted(after)}
    rounded = {t: round(v, 2) for t, v in per.items() if v > 0}
    return rounded | {"total": round(sum(rounded.values()), 2)}


def _added(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["system"], r["rate"]): r for r in runs}
    rows = []
    for rate in sorted({r["rate"] for r in runs}):
        if ("jetbridge", rate) not in by or ("baseline", rate) not in by:
            continue
        jb, base = by[("jetbridge", rate)]["latency_ms"], by[("baseline", rate)]["latency_ms"]
        rows.append({"rate": rate} | {q: round(jb[q] - base[q], 1) for q in ("p50", "p95", "p99")})
    return rows


def _sustained(runs: list[dict[str, Any]], system: str, deadline_ms: int) -> float | None:
    best: float | None = None
    for row in sorted((r for r in runs if r["system"] == system), key=lambda r: r["rate"]):
        if row["error_rate"] < 0.001 and row["latency_ms"]["p99"] < deadline_ms:
            best = row["rate"]
        else:
            break
    return best


def _write(out_dir: Path, results: dict[str, Any], writers: dict[str, Writer], *, latest: str) -> Path:
    """Every file of ``writers`` into ``out_dir/<time>/``, the folder then copied to ``out_dir/<latest>/``."""
    folder = out_dir / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder.mkdir(parents=True, exist_ok=True)
    for name, writer in writers.items():
        writer(folder / name, results)
    latest_folder = out_dir / latest
    shutil.rmtree(latest_folder, ignore_errors=True)
    shutil.copytree(folder, latest_folder)
    return folder


# The files of a results folder, each with the function that writes it from the results.
_REPORTS: dict[str, Writer] = {"results.json": write_json, "latency.png": write_chart, "summary.md": write_summary}
_COUNTS_REPORTS: dict[str, Writer] = {
    "results.json": write_json,
    "airline-counts.png": write_counts_chart,
    "summary.md": write_counts_summary,
    "airlines.toml": _copy_registry,
}
_NETWORK_REPORTS: dict[str, Writer] = {
    "results.json": write_json,
    "summary.md": write_network_summary,
    "airlines.toml": _copy_registry,
}
