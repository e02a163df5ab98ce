"""One benchmark run: Jetbridge and the direct fan-out baseline, alternated at each offered rate, on the
same machine, against the same simulators at fixed latencies.

    jetbridge bench [--rates 10,20,50,100] [--warmup 5] [--hold 20] [--soak 600]

Starts what is missing (`jetbridge up`, the baseline server), sets every simulated airline to a fixed
latency, runs, restores the simulators and stops the baseline, then writes ``results.json``,
``latency.png`` and ``summary.md`` into ``bench/results/<timestamp>/`` (and ``bench/results/latest/``).
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.load import Sample, open_loop
from bench.measure import ProcessMeter, topic_end_offsets
from bench.report import percentile, write_chart, write_json, write_summary
from jetbridge.errors import ConfigurationError
from jetbridge.settings import REPO_ROOT, Settings

__all__ = ["BenchConfig", "run_benchmark"]

Say = Callable[[str], None]

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
    out_dir: Path = REPO_ROOT / "bench" / "results"


def _arguments(deadline_ms: int) -> Callable[[int], dict[str, Any]]:
    today = datetime.now(UTC).date()

    def make(i: int) -> dict[str, Any]:
        return {
            "origin": "LHR",
            "destination": "JFK",
            "departure_date": (today + timedelta(days=7 + i % 60)).isoformat(),
            "adults": 1 + i % 2,
            "deadline_ms": deadline_ms,
        }

    return make


def _baseline_env(settings: Settings) -> dict[str, str]:
    """The baseline reads the same airline registry (same simulators) as the stack under test."""
    env = dict(os.environ, JB_HOME=str(settings.home))
    if settings.airlines_file is not None:
        env["JB_AIRLINES_FILE"] = str(settings.airlines_file)
    return env


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
    }


async def _measure(
    url: str,
    system: str,
    rate: float,
    config: BenchConfig,
    meter: ProcessMeter,
    own: tuple[str, ...],
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
        arguments=_arguments(config.deadline_ms),
        timeout_s=config.deadline_ms / 1000 + 2.0,
        sessions=config.sessions,
        on_measured_start=measured_start,
    )
    cpu1 = meter.cpu_seconds()
    cpu0 = marks.get("cpu0", cpu1)
    cpu = {name: cpu1[name] - cpu0[name] for name in own}
    return _summarise(system, rate, samples, cpu, config.hold_s)


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


async def run_benchmark(settings: Settings, config: BenchConfig, say: Say, *, start_stack: bool = True) -> Path:
    """Run the whole benchmark; returns the folder with results.json, latency.png and summary.md."""
    if start_stack:
        from infra.stack.control import up

        await up(settings, say)
    control_url = f"http://{settings.simulator_host}:{settings.simulator_control_port}"
    baseline_url = f"http://127.0.0.1:{config.baseline_port}/mcp"
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    log = (settings.log_dir / "direct-baseline.log").open("ab")
    baseline = subprocess.Popen(  # noqa: ASYNC220 - returns at once; health is polled below
        [sys.executable, "-m", "bench.direct_server", "--port", str(config.baseline_port)],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_baseline_env(settings),
    )
    try:
        await _wait_http(f"http://127.0.0.1:{config.baseline_port}/health")
        await _configure_simulators(control_url, config.airline_latency_ms)
        # Kafka and the registry are measured when this machine runs them (not for an external cluster).
        own_infra = [n for n in ("kafka", "registry") if (settings.run_dir / f"{n}.pid").exists()]
        jetbridge_processes = tuple(n for n in JETBRIDGE_PROCESSES if n not in ("kafka", "registry") or n in own_infra)
        pids = {name: _pid(settings, name) for name in jetbridge_processes}
        pids |= {
            "direct-baseline": baseline.pid,
            "simulators": _pid(settings, "simulators"),
            "load-generator": os.getpid(),
        }
        meter = ProcessMeter(pids)
        meter.start()
        runs: list[dict[str, Any]] = []
        started = time.monotonic()
        saturated: dict[str, float] = {}
        for rate in config.rates:
            for system, url, own in (
                ("jetbridge", settings.bridge_url, jetbridge_processes),
                ("baseline", baseline_url, ("direct-baseline",)),
            ):
                if system in saturated:
                    say(f"bench: {system} at {rate:g}/s skipped: it already failed at {saturated[system]:g}/s")
                    continue
                say(f"bench: {system} at {rate:g}/s ({config.warmup_s:g} s warm-up + {config.hold_s:g} s)")
                before = await topic_end_offsets(settings.kafka_bootstrap_servers, KAFKA_PREFIXES)
                row = await _measure(url, system, rate, config, meter, own)
                after = await topic_end_offsets(settings.kafka_bootstrap_servers, KAFKA_PREFIXES)
                sent = round((config.warmup_s + config.hold_s) * rate)
                row["kafka_events_per_request"] = _events(before, after, sent)
                runs.append(row)
                # Past this point a system only queues up work; higher rates would measure the queue.
                if row["error_rate"] > 0.05 or not row["latency_ms"]["p99"] < config.deadline_ms:
                    saturated[system] = rate
                await _settle(meter, own)
                lat = row["latency_ms"]
                say(
                    f"       p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms, "
                    f"errors {row['error_rate'] * 100:.2f} %, CPU {row['cpu_s_per_request']['total'] * 1000:.1f} ms/req"
                )
        soak: dict[str, Any] | None = None
        if config.soak_s > 0:
            soak = await _soak(settings, config, {k: pids[k] for k in jetbridge_processes}, say)
        await meter.stop()
        peak = meter.peak_rss_mb()
        # Events per search where Jetbridge kept up (at overload, timeouts add dead letters).
        sustained_rate = _sustained(runs, "jetbridge", config.deadline_ms) or config.rates[0]
        events = next(r for r in runs if r["system"] == "jetbridge" and r["rate"] == sustained_rate)[
            "kafka_events_per_request"
        ]
        results: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": _machine(),
            "config": {k: v for k, v in asdict(config).items() if k != "out_dir"},
            "duration_s": round(time.monotonic() - started, 1),
            "runs": runs,
            "added_latency_ms": _added(runs),
            "max_sustained_rate": {s: _sustained(runs, s, config.deadline_ms) for s in ("jetbridge", "baseline")},
            "saturated_at": saturated,
            "peak_rss_mb": {
                "jetbridge": {k: peak[k] for k in jetbridge_processes},
                "baseline": {"direct-baseline": peak["direct-baseline"]},
                "shared": {"simulators": peak["simulators"], "load-generator": peak["load-generator"]},
            },
            "kafka_events_per_request": events,
            "soak": soak,
        }
        return _write(results, config.out_dir)
    finally:
        await _reset_simulators(control_url)
        baseline.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            baseline.wait(timeout=15)
        if baseline.poll() is None:
            baseline.kill()
        log.close()


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


def _write(results: dict[str, Any], out_dir: Path) -> Path:
    folder = out_dir / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "results.json", results)
    write_chart(folder / "latency.png", results)
    write_summary(folder / "summary.md", results)
    latest = out_dir / "latest"
    shutil.rmtree(latest, ignore_errors=True)
    shutil.copytree(folder, latest)
    return folder
