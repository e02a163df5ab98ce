"""``python -m infra.simulators``: every airline in the registry, simulated, plus the control API.

Settings come from arguments first, then the environment:

    --host / JB_SIM_HOST                    bind address of every server (default 127.0.0.1)
    --control-port / JB_SIM_CONTROL_PORT    control API port (default 9100)
    --port CODE=PORT (repeatable)           override one airline's port (0 = any free port)
    --only BA,AY                            simulate only these airlines
    --latency-ms / JB_SIM_LATENCY_MS        added latency for every airline (default: per airline, 90-220)
    --jitter-ms / JB_SIM_JITTER_MS          +/- random jitter (default 30)
    --fault CODE=FAULT[:RATE] / JB_SIM_FAULTS="BA=slow:0.5,AY=malformed"   initial faults
    --registry / JB_AIRLINES_FILE           airline registry TOML (default connectors/airlines.toml)
    --webhook-url / JB_SIM_WEBHOOK_URL      where the airlines push their own order changes; {code} is the
                                            airline's code (default: nowhere; the control API sets it too)

Stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path
from typing import get_args

from infra.simulators.faults import DEFAULT_LATENCY_MS, Fault, FaultConfig
from infra.simulators.supervisor import Simulators
from jetbridge.airlines import load_registry
from jetbridge.log import configure_logging, get_logger
from jetbridge.settings import get_settings

log = get_logger("infra.simulators")


def _pairs(values: list[str], what: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            code, sep, rest = item.partition("=")
            if not sep or not rest:
                raise SystemExit(f"{what}: expected CODE=VALUE, got {item!r}")
            found[code.strip().upper()] = rest.strip()
    return found


def _parse_fault(text: str) -> tuple[Fault, float]:
    name, _, rate = text.partition(":")
    if name not in get_args(Fault):
        raise SystemExit(f"unknown fault {name!r}; one of {', '.join(get_args(Fault))}")
    fault: Fault = name  # type: ignore[assignment]  # checked against the Literal just above
    return fault, float(rate) if rate else 1.0


def _args(argv: list[str] | None) -> argparse.Namespace:
    settings = get_settings()
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m infra.simulators", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=env.get("JB_SIM_HOST"))
    parser.add_argument("--control-port", type=int, default=settings.simulator_control_port)
    parser.add_argument("--port", action="append", default=[], metavar="CODE=PORT")
    parser.add_argument("--only", default="", metavar="CODES")
    parser.add_argument("--latency-ms", type=int, default=_env_int("JB_SIM_LATENCY_MS"))
    parser.add_argument("--jitter-ms", type=int, default=_env_int("JB_SIM_JITTER_MS", 30))
    parser.add_argument("--fault", action="append", default=[env.get("JB_SIM_FAULTS", "")], metavar="CODE=FAULT")
    parser.add_argument("--registry", type=Path, default=settings.airlines_file)
    parser.add_argument("--webhook-url", default=env.get("JB_SIM_WEBHOOK_URL") or None)
    parser.add_argument("--log-level", default=settings.log_level)
    return parser.parse_args(argv)


def _env_int(name: str, default: int | None = None) -> int | None:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


async def _run(args: argparse.Namespace) -> None:
    registry = load_registry(args.registry)
    only = {c.strip().upper() for c in args.only.split(",") if c.strip()}
    airlines = [a for a in registry if not only or a.code in only]
    faults = {code: _parse_fault(text) for code, text in _pairs(args.fault, "--fault").items()}
    defaults = {
        a.code: FaultConfig(
            latency_ms=args.latency_ms if args.latency_ms is not None else DEFAULT_LATENCY_MS.get(a.code, 150),
            jitter_ms=args.jitter_ms or 0,
            fault=faults.get(a.code, ("none", 1.0))[0],
            fault_rate=faults.get(a.code, ("none", 1.0))[1],
            webhook_url=args.webhook_url.replace("{code}", a.code) if args.webhook_url else None,
        )
        for a in airlines
    }
    ports = {code: int(port) for code, port in _pairs(args.port, "--port").items()}
    sims = Simulators(
        airlines,
        host=args.host,
        ports=ports,
        control_host=args.host or get_settings().simulator_host,
        control_port=args.control_port,
        defaults=defaults,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with sims:
        log.info(
            "simulators ready",
            control=sims.control_url,
            endpoints={code: sims.endpoint(code) for code in sims.codes()},
        )
        await stop.wait()
        log.info("simulators stopping")


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    configure_logging(args.log_level, get_settings().log_format, process="simulators")
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
