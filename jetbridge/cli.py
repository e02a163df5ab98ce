"""The ``jetbridge`` command.

jetbridge up                 start the local stack in the background; returns when all is healthy
jetbridge down               stop everything the stack started
jetbridge status             what runs, and whether it is healthy
jetbridge demo               an AI-agent search through MCP, printed as a table
jetbridge topics apply       declare every topic (idempotent)
jetbridge bench              Jetbridge against a direct fan-out baseline, in one run (see bench/run.py)
jetbridge run COMPONENT      run one component in the foreground (bridge, streams, connectors, simulators)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jetbridge.airlines import load_registry
from jetbridge.errors import JetbridgeError
from jetbridge.kafka import apply_topics
from jetbridge.settings import Settings, get_settings
from jetbridge.topics import declared_topics

__all__ = ["main"]


def _say(line: str) -> None:
    print(line, flush=True)


async def _up(settings: Settings, args: argparse.Namespace) -> int:
    from jetbridge.stack import up

    seconds = await up(settings, _say, with_simulators=not args.no_simulators)
    print(f"\nJetbridge is up in {seconds:.1f} s.")
    print(f"  MCP bridge        {settings.bridge_url}")
    print(f"  Kafka             {settings.kafka_bootstrap_servers}")
    print(f"  Schema registry   {settings.schema_registry_url}")
    if not args.no_simulators:
        print(f"  Simulator control http://{settings.simulator_host}:{settings.simulator_control_port}/airlines")
    print(f"  Logs              {settings.log_dir}")
    return 0


async def _down(settings: Settings, _: argparse.Namespace) -> int:
    from jetbridge.stack import down

    await down(settings, _say)
    return 0


async def _status(settings: Settings, _: argparse.Namespace) -> int:
    from jetbridge.stack import status

    rows = await status(settings)
    for name, state in rows:
        print(f"{name:<12} {state}")
    return 0 if all(not s.startswith(("stopped", "unhealthy")) for _, s in rows) else 3


async def _topics(settings: Settings, _: argparse.Namespace) -> int:
    specs = declared_topics(load_registry(settings.airlines_file), settings.topic_partitions, settings.topic_prefix)
    outcome = await apply_topics(
        {"bootstrap.servers": settings.kafka_bootstrap_servers},
        specs,
        replication_factor=settings.replication_factor,
    )
    for spec in specs:
        print(
            f"{spec.name:<32} {spec.partitions:>3} partitions  "
            f"retention {spec.retention_ms // 3_600_000:>4} h  "
            f"{spec.cleanup_policy:<8} {outcome[spec.name]}"
        )
    return 0


def format_result(result: dict[str, Any]) -> str:
    """A search result as a table a person can read."""
    lines = [f"request {result['request_id']}  status {result['status']}  in {result['elapsed_ms']} ms", ""]
    lines.append(
        f"{'#':>2}  {'airline':<7} {'price':>12}  {'cabin':<15} {'brand':<16} {'flights':<16} "
        f"{'depart':<16} {'arrive':<16} {'time':>6}"
    )
    for i, offer in enumerate(result["offers"], 1):
        for j, sl in enumerate(offer["slices"]):
            head = (
                (
                    f"{i:>2}  {offer['airline']:<7} {offer['total_amount'] + ' ' + offer['currency']:>12}  "
                    f"{offer['cabin']:<15} {(offer['fare_brand'] or '-')[:16]:<16} "
                )
                if j == 0
                else " " * 58
            )
            hours, minutes = divmod(sl["duration_minutes"], 60)
            lines.append(
                f"{head}{','.join(sl['flights']):<16} {sl['departure']:<16} {sl['arrival']:<16} "
                f"{hours:>2}h{minutes:02d}"
            )
    lines += ["", f"{'airline':<8} {'status':<11} {'offers':>6} {'latency':>9}  error"]
    for a in result["airlines"]:
        latency = f"{a['latency_ms']} ms" if a.get("latency_ms") is not None else "-"
        lines.append(
            f"{a['airline']:<8} {a['status']:<11} {a['offer_count']:>6} {latency:>9}  {a.get('error_code') or ''}"
        )
    return "\n".join(lines)


async def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from mcp import Client

    departure = args.date or (datetime.now(UTC).date() + timedelta(days=21)).isoformat()
    arguments: dict[str, Any] = {
        "origin": args.origin,
        "destination": args.destination,
        "departure_date": departure,
        "adults": args.adults,
        "max_offers": args.max_offers,
    }
    if args.return_date:
        arguments["return_date"] = args.return_date
    if args.cabin:
        arguments["cabin"] = args.cabin
    url = args.url or settings.bridge_url
    print(f"MCP client -> {url}: search_offers {json.dumps(arguments)}")
    started = time.monotonic()
    async with Client(url) as client:
        result = await client.call_tool("search_offers", arguments)
    wall_ms = int((time.monotonic() - started) * 1000)
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        print(f"tool error: {text}", file=sys.stderr)
        return 1
    structured = result.structured_content or {}
    print(format_result(structured))
    print(f"\nround trip through MCP (including session set-up): {wall_ms} ms")
    return 0


async def _bench(settings: Settings, args: argparse.Namespace) -> int:
    from bench.run import BenchConfig, run_benchmark

    config = BenchConfig(
        rates=[float(r) for r in args.rates.split(",")],
        warmup_s=args.warmup,
        hold_s=args.hold,
        deadline_ms=args.deadline_ms,
        sessions=args.sessions,
        soak_s=args.soak,
        soak_rate=args.soak_rate,
    )
    if args.out:
        config.out_dir = Path(args.out)
    folder = await run_benchmark(settings, config, _say)
    print(f"\nresults: {folder}/results.json, latency.png, summary.md\n")
    print((folder / "summary.md").read_text())
    return 0


def _run(settings: Settings, args: argparse.Namespace) -> int:
    module = {
        "bridge": "mcp_bridge",
        "streams": "streams",
        "connectors": "connectors",
        "simulators": "infra.simulators",
    }[args.component]
    os.execv(sys.executable, [sys.executable, "-m", module, *args.rest])  # noqa: S606 - our own interpreter
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jetbridge", description="Jetbridge: AI agents to airlines over Kafka.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the local stack in the background")
    p_up.add_argument("--no-simulators", action="store_true", help="do not start the airline simulators")
    sub.add_parser("down", help="stop everything the local stack started")
    sub.add_parser("status", help="show what runs")
    p_demo = sub.add_parser("demo", help="search flights through the MCP bridge and print the offers")
    p_demo.add_argument("--origin", default="LHR")
    p_demo.add_argument("--destination", default="JFK")
    p_demo.add_argument("--date", help="departure date YYYY-MM-DD (default: three weeks ahead)")
    p_demo.add_argument("--return-date")
    p_demo.add_argument("--adults", type=int, default=1)
    p_demo.add_argument("--cabin")
    p_demo.add_argument("--max-offers", type=int, default=15)
    p_demo.add_argument("--url", help="bridge URL (default from settings)")
    p_topics = sub.add_parser("topics", help="topic administration")
    p_topics.add_argument("action", choices=["apply"])
    p_bench = sub.add_parser("bench", help="benchmark Jetbridge against a direct fan-out baseline")
    p_bench.add_argument("--rates", default="10,20,30,40,50,75,100", help="offered searches/s, comma-separated")
    p_bench.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up per rate (excluded)")
    p_bench.add_argument("--hold", type=float, default=20.0, help="seconds measured per rate and system")
    p_bench.add_argument("--deadline-ms", type=int, default=3000)
    p_bench.add_argument("--sessions", type=int, default=8, help="MCP client sessions of the load generator")
    p_bench.add_argument("--soak", type=float, default=0.0, help="then hold --soak-rate for this many seconds")
    p_bench.add_argument("--soak-rate", type=float, default=20.0)
    p_bench.add_argument("--out", help="results folder (default bench/results)")
    p_run = sub.add_parser("run", help="run one component in the foreground")
    p_run.add_argument("component", choices=["bridge", "streams", "connectors", "simulators"])
    p_run.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.command == "run":
        return _run(settings, args)
    handlers = {
        "up": _up,
        "down": _down,
        "status": _status,
        "demo": _demo,
        "topics": _topics,
        "bench": _bench,
    }
    try:
        return asyncio.run(handlers[args.command](settings, args))
    except JetbridgeError as exc:
        print(f"jetbridge {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
