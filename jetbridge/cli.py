"""The ``jetbridge`` command: a thin layer over the local stack (``infra/stack/``) and the MCP bridge.

jetbridge up [--scale streams=2,connectors=2]   start the local stack under its supervisor; returns when healthy
jetbridge down                                  stop everything the stack started
jetbridge status                                every component: PID, health, restarts, endpoint
jetbridge demo                                  an AI-agent search through MCP, printed as tables
jetbridge topics apply                          declare every topic and its subject's compatibility level (idempotent)
jetbridge schemas check [--base REV] [--offline] every .avsc and MCP tool against what came before (breaking: exit 1)
jetbridge bench                                 Jetbridge against a direct fan-out baseline (see bench/run.py)
jetbridge dlq list|show|replay                  dead letters: what failed and why; replay them (jetbridge/dlq_ops/)
jetbridge audit [--client … --outcome … --since …]   tool calls as audited, with counts by outcome
jetbridge airlines approve IATA|pins            pin an MCP airline's tools; show pins against live servers
jetbridge run COMPONENT                         one component in the foreground (bridge, streams, connectors,
                                                simulators)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from jetbridge.airlines import load_registry
from jetbridge.contracts import SchemaReport, apply_compatibility, check_schemas
from jetbridge.errors import JetbridgeError, SchemaError, SchemaRegistryError
from jetbridge.http import build_http_client
from jetbridge.kafka import apply_topics, client_config
from jetbridge.runtime import registry_client
from jetbridge.settings import Settings, get_settings
from jetbridge.topics import declared_topics
from schemas.codec import AVRO_DIR
from schemas.registry import SchemaRegistryClient

if TYPE_CHECKING:
    from infra.stack.control import Row
    from mcp_bridge.tools_contract import ToolChange

__all__ = ["main"]

_HEALTH_STYLES = {"healthy": "green", "running": "green", "starting": "yellow", "restarting": "yellow"}


def _say(line: str) -> None:
    print(line, flush=True)


def _console() -> Console:
    # Off a terminal rich assumes 80 columns and would wrap table cells; logs and tests want whole lines.
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


def _mark(console: Console) -> Text:
    return Text("\u2713" if console.encoding.lower().startswith("utf") else "ok", style="green")


def _rows_table(rows: Sequence[Row], *, compact: bool = False) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name, justify in (("component", "left"), ("pid", "right"), ("health", "left"), ("restarts", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]  # rich's Literal, from a plain str
    if not compact:
        table.add_column("endpoint", overflow="fold")
        table.add_column("note", style="dim")
    for row in rows:
        cells: list[str | Text] = [row.name, row.pid, Text(row.health, style=_HEALTH_STYLES.get(row.health, "red"))]
        cells.append(row.restarts)
        if not compact:
            cells += [row.endpoint, row.note]
        table.add_row(*cells)
    return table


class _UpDisplay:
    """``up``'s progress: a spinner and the instances' health on a terminal; finished steps as lines anywhere."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._label = ""
        self._rows: Sequence[Row] = []
        self._healthy: set[str] = set()
        self._live = (
            Live(console=console, transient=True, refresh_per_second=8, get_renderable=self._render)
            if console.is_terminal
            else None
        )

    def __enter__(self) -> _UpDisplay:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._live is not None:
            self._live.stop()

    def working(self, text: str) -> None:
        self._label = text

    def done(self, text: str) -> None:
        self._console.print(Text.assemble(_mark(self._console), " ", text))

    def instances(self, rows: Sequence[Row]) -> None:
        self._rows = rows
        if self._live is None:
            for row in rows:
                if row.up and row.name not in self._healthy:
                    self._healthy.add(row.name)
                    self.done(f"{row.name:<16} healthy (pid {row.pid})")

    def finish(self) -> None:
        """On a terminal the live table vanishes when done: keep one line of what it showed."""
        if self._live is not None and self._rows:
            self.done(f"{'Instances':<16} {', '.join(r.name for r in self._rows)}: healthy")

    def _render(self) -> RenderableType:
        spinner = Spinner("dots", text=Text(self._label, style="bold"))
        return Group(spinner, _rows_table(self._rows, compact=True)) if self._rows else spinner


async def _up(settings: Settings, args: argparse.Namespace) -> int:
    from infra.stack.components import format_scale
    from infra.stack.control import up

    console = _console()
    with _UpDisplay(console) as display:
        seconds, plan = await up(settings, display, scale=args.scale, simulators=not args.no_simulators)
    display.finish()
    console.print(f"\nJetbridge is up in {seconds:.1f} s ({format_scale(plan.scale)}).", style="bold")
    endpoints = [
        ("MCP bridge", settings.bridge_url + ("" if settings.auth == "on" else "  (no authentication: JB_AUTH=off)")),
        ("Kafka", settings.kafka_bootstrap_servers),
        ("Schema registry", settings.schema_registry_url),
    ]
    if any(spec.kind == "issuer" for spec in plan.instances):
        endpoints.append(("Token issuer", f"{settings.auth_issuer}  (jetbridge token --client ID)"))
    if plan.simulators:
        endpoints.append(
            ("Simulator control", f"http://{settings.simulator_host}:{settings.simulator_control_port}/airlines")
        )
    endpoints += [("Logs", str(settings.log_dir)), ("Status", "jetbridge status")]
    for name, where in endpoints:
        console.print(f"  {name:<18}{where}")
    return 0


async def _down(settings: Settings, _: argparse.Namespace) -> int:
    from infra.stack.control import down

    console = _console()
    with _UpDisplay(console) as display:
        await down(settings, display)
    return 0


async def _status(settings: Settings, _: argparse.Namespace) -> int:
    from infra.stack.control import status

    report = await status(settings)
    console = _console()
    console.print(_rows_table(report.rows))
    for note in report.notes:
        console.print(note, style="dim")
    if report.figures:
        counted = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title="what they counted (/metrics)")
        for column in ("instance", "figures", "metrics"):
            counted.add_column(column, overflow="fold")
        for row in report.figures:
            counted.add_row(row.name, row.summary, row.url)
        console.print(counted)
    return 0 if report.all_up else 3


def _registry_client(settings: Settings, http: httpx.AsyncClient) -> SchemaRegistryClient:
    return registry_client(settings, http)


async def _topics(settings: Settings, _: argparse.Namespace) -> int:
    specs = declared_topics(load_registry(settings.airlines_file), settings.topic_partitions, settings.topic_prefix)
    outcome = await apply_topics(
        client_config(settings),
        specs,
        replication_factor=settings.replication_factor,
    )
    for spec in specs:
        print(
            f"{spec.name:<32} {spec.partitions:>3} partitions  "
            f"retention {spec.retention_ms // 3_600_000:>4} h  "
            f"{spec.cleanup_policy:<8} {spec.compatibility if spec.model else '-':<16} {outcome[spec.name]}"
        )
    async with build_http_client(timeout_s=10.0, max_connections=4) as http:
        try:
            levels = await apply_compatibility(_registry_client(settings, http), specs)
        except SchemaRegistryError as exc:
            print(
                f"jetbridge topics apply: the topics are declared, but not their compatibility levels: {exc.message}. "
                "Start the registry (jetbridge up) or point SCHEMA_REGISTRY_URL at it, then run this again.",
                file=sys.stderr,
            )
            return 1
    print(f"compatibility levels set in {settings.schema_registry_url} for {len(levels)} subjects")
    return 0


def _schema_findings_table(report: SchemaReport) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title="breaking changes to topic contracts")
    for column in ("schema", "field", "against", "level"):
        table.add_column(column, no_wrap=True, style="red" if column == "field" else None)
    table.add_column("why", overflow="fold")
    for f in report.findings:
        table.add_row(*(Text(cell) for cell in (f.schema, f.field or "-", f.against, f.level, f.reason)))
    return table


def _tool_changes_table(changes: Sequence[ToolChange], title: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title=title)
    table.add_column("tool", no_wrap=True)
    table.add_column("argument", no_wrap=True, style="red")
    table.add_column("why", overflow="fold")
    for change in changes:
        table.add_row(*(Text(cell) for cell in (change.tool, change.argument or "-", change.what)))
    return table


_TOPIC_WAY_OUT = (
    "A breaking change needs a new topic, never a new version of this one: declare the topic's `.v2` beside the old "
    "in jetbridge/topics.py with a new schema file (e.g. search_request.v2.avsc, namespace jetbridge.v2), write both "
    "during the migration, move the consumers over, then retire the old topic. Or make the change compatible: give "
    "an added field a default, keep a removed field's default, widen types only as Avro promotes them. "
    "README: Topics > Evolving the contracts."
)
_TOOL_WAY_OUT = (
    "MCP tools change only by adding: a breaking change is a new tool (e.g. search_offers_v2) beside the old one, "
    "which stays until its agents moved. README: Topics > Evolving the contracts."
)


async def _schemas(settings: Settings, args: argparse.Namespace) -> int:
    from mcp_bridge.tools_contract import SNAPSHOT, compare_tools, current_tools, read_snapshot, write_snapshot

    console = _console()
    folder: Path = args.dir
    specs = declared_topics(load_registry(settings.airlines_file), settings.topic_partitions, settings.topic_prefix)
    async with build_http_client(timeout_s=5.0, max_connections=4) as http:
        registry = None if args.offline else _registry_client(settings, http)
        try:
            report = await check_schemas(folder, specs, base=args.base, registry=registry)
        except SchemaError as exc:
            print(f"jetbridge schemas check: {exc.message}", file=sys.stderr)
            return 2
    snapshot_path: Path = args.tools_snapshot or SNAPSHOT
    snapshot = read_snapshot(snapshot_path)
    tools = await current_tools()
    changes = compare_tools(snapshot, tools)
    breaking = [c for c in changes if c.breaking]
    additions = [c for c in changes if not c.breaking]
    failed = False
    if report.findings:
        failed = True
        console.print(_schema_findings_table(report))
        console.print(_TOPIC_WAY_OUT, style="yellow")
    else:
        new = f"; new, nothing to break: {', '.join(report.new)}" if report.new else ""
        registered = f" and {report.registry_versions} registered versions" if report.registry_versions else ""
        console.print(
            Text.assemble(
                _mark(console),
                f" {len(report.checked)} schemas compatible with git {report.base}{registered}{new}",
            )
        )
    if report.registry_note:
        console.print(f"  registry: {report.registry_note}", style="dim", markup=False)
    if not snapshot:
        if not args.update:
            print(
                f"jetbridge schemas check: no MCP tools snapshot at {snapshot_path}: record one with "
                "`jetbridge schemas check --update`",
                file=sys.stderr,
            )
            return 1
    elif breaking:
        failed = True
        console.print(_tool_changes_table(breaking, "breaking changes to MCP tools"))
        console.print(_TOOL_WAY_OUT, style="yellow")
    else:
        console.print(Text.assemble(_mark(console), f" {len(tools)} MCP tools: nothing removed, renamed or narrowed"))
    if args.update and not breaking:
        write_snapshot(tools, snapshot_path)
        console.print(f"  recorded {len(tools)} tools in {snapshot_path}", style="dim", markup=False)
    elif additions:
        console.print(_tool_changes_table(additions, "additions not yet in the tools snapshot"))
        console.print(f"  record them: jetbridge schemas check --update ({snapshot_path})", style="dim", markup=False)
    return 1 if failed else 0


def _offers_table(result: dict[str, Any]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name, justify in (
        ("#", "right"),
        ("airline", "left"),
        ("price", "right"),
        ("cabin", "left"),
        ("brand", "left"),
        ("flights", "left"),
        ("depart", "left"),
        ("arrive", "left"),
        ("time", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]  # rich's Literal, from a plain str
    for i, offer in enumerate(result["offers"], 1):
        for j, sl in enumerate(offer["slices"]):
            hours, minutes = divmod(sl["duration_minutes"], 60)
            head = (
                [
                    str(i),
                    offer["airline"],
                    f"{offer['total_amount']} {offer['currency']}",
                    offer["cabin"],
                    offer["fare_brand"] or "-",
                ]
                if j == 0
                else [""] * 5
            )
            table.add_row(
                *head,
                ",".join(sl["flights"]),
                sl["departure"],
                sl["arrival"],
                f"{hours}h{minutes:02d}",
                end_section=j == len(offer["slices"]) - 1 and len(offer["slices"]) > 1,
            )
    return table


def _airlines_table(result: dict[str, Any]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("airline")
    table.add_column("status")
    table.add_column("offers", justify="right")
    table.add_column("latency", justify="right")
    table.add_column("source")
    table.add_column("error")
    for a in result["airlines"]:
        latency = f"{a['latency_ms']} ms" if a.get("latency_ms") is not None else "-"
        style = "green" if a["status"] == "ok" else "yellow"
        source = a.get("source") or ""
        if source in ("cache", "stale") and a.get("age_ms") is not None:
            source = f"{source}, {a['age_ms'] / 1000:.1f} s old"
        table.add_row(
            a["airline"],
            Text(a["status"], style=style),
            str(a["offer_count"]),
            latency,
            source,
            a.get("error_code") or "",
        )
    return table


def _result_words(result: dict[str, Any], route: str) -> str | None:
    """What an answer without offers means, in words (None when there are offers to show)."""
    if result.get("offers"):
        return None
    status = str(result.get("status", "")).lower()
    if status == "no_airlines":
        return f"No airline in the registry serves {route}: nobody was asked, so there are no offers."
    if status == "unanswered":
        asked = ", ".join(f"{a['airline']} {a['status']}" for a in result.get("airlines", []))
        return f"None of the airlines asked about {route} answered ({asked}): no offers."
    return f"The airlines asked for {route} answered, but had no offers for that date and cabin."


def _print_result(console: Console, result: dict[str, Any], route: str) -> None:
    console.print(f"request {result['request_id']}  status {result['status']}  in {result['elapsed_ms']} ms")
    words = _result_words(result, route)
    if words is None:
        console.print(_offers_table(result))
    else:
        console.print(words, style="yellow")
    if result.get("airlines"):
        console.print(_airlines_table(result))


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups, as the MCP client's task groups raise them."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _is_a(exc: BaseException, *names: str) -> bool:
    # By class name: the MCP client raises its own copy of httpx's errors (``httpx2``), not httpx's.
    return any(cls.__name__ in names for cls in type(exc).__mro__)


async def _token_refusal(url: str, token: str | None) -> str | None:
    """Why the bridge refuses ``token``, when it does (the MCP client reports only a failed request)."""
    probe = {"jsonrpc": "2.0", "id": 0, "method": "ping"}
    headers = {"accept": "application/json, text/event-stream"} | (
        {"authorization": f"Bearer {token}"} if token else {}
    )
    try:
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
            response = await http.post(url, json=probe, headers=headers)
    except httpx.HTTPError:
        return None
    if response.status_code not in (401, 403):
        return None
    challenge = response.headers.get("www-authenticate", "")
    why = challenge.partition('error_description="')[2].partition('"')[0] or challenge
    return (
        f"the bridge at {url} refused the token ({response.status_code}: {why}); mint one with "
        "`jetbridge token --client ID`, make an API key with `jetbridge keys create`, or check JB_AUTH_ISSUER"
    )


def _bridge_failure(exc: BaseException, url: str) -> str:
    leaves = list(_leaves(exc))
    if any(_is_a(e, "ConnectError", "ConnectionRefusedError") for e in leaves):
        return f"the bridge is not running at {url}: run `jetbridge up`"
    if any(_is_a(e, "TimeoutException", "TimeoutError") for e in leaves):
        return f"the bridge at {url} did not answer in time: see `jetbridge status`"
    first = leaves[0] if leaves else exc
    return f"the search through the bridge at {url} failed: {type(first).__name__}: {first}"


def _agent_token(settings: Settings, given: str | None, client: str) -> str | None:
    """The token a command calls the bridge with: the one given, else (auth on, development issuer) a fresh
    one for ``client`` from this machine's development issuer; None when the bridge does not authenticate."""
    if given:
        return given
    if settings.auth == "off":
        return None
    if not settings.auth_dev_issuer:
        raise SystemExit(
            f"jetbridge: the bridge wants a token of {settings.auth_issuer}; pass one with --token (or JB_TOKEN)"
        )
    from infra.auth.dev_issuer import dev_token
    from mcp_bridge.auth import OFFERS_READ

    return dev_token(settings, client, [OFFERS_READ], ttl_s=600)


async def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from mcp_bridge.agent import open_agent

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
    console = _console()
    started = time.monotonic()
    token = _agent_token(settings, args.token, "jetbridge-demo")
    try:
        async with open_agent(url, token=token) as client:
            # Said once the session is open, so a bridge that is down costs the person one line, not two.
            console.print(f"MCP client -> {url}: search_offers {json.dumps(arguments)}", markup=False)
            result = await client.call_tool("search_offers", arguments)
    except Exception as exc:  # noqa: BLE001 - whatever the transport raised, the person gets one line
        refusal = await _token_refusal(url, token)
        print(f"jetbridge demo: {refusal or _bridge_failure(exc, url)}", file=sys.stderr)
        return 1
    wall_ms = int((time.monotonic() - started) * 1000)
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        print(f"jetbridge demo: tool error: {text}", file=sys.stderr)
        return 1
    route = f"{args.origin}-{args.destination}"
    _print_result(console, result.structured_content or {}, route)
    console.print(f"round trip through MCP (including session set-up): {wall_ms} ms")
    return 0


async def _bench(settings: Settings, args: argparse.Namespace) -> int:
    from bench.run import BenchConfig, run_airline_counts, run_benchmark, run_network

    config = BenchConfig(
        rates=[float(r) for r in args.rates.split(",")],
        warmup_s=args.warmup,
        hold_s=args.hold,
        deadline_ms=args.deadline_ms,
        sessions=args.sessions,
        soak_s=args.soak,
        stack_warmup_s=args.stack_warmup,
        soak_rate=args.soak_rate,
        airline_counts=args.airline_counts or [],
        airline_counts_rate=args.airline_counts_rate,
        cache_mix=args.cache_mix or 0.0,
        cache_mix_rate=args.cache_mix_rate,
    )
    if args.out:
        config.out_dir = Path(args.out)
    if args.cache_mix is not None:
        from bench.cache_mix import run_cache_mix

        folder = await run_cache_mix(settings, config, _say)
        print(f"\nresults: {folder}/results.json, summary.md\n")
    elif args.airlines_50:
        folder = await run_network(settings, config, _say)
        print(f"\nresults: {folder}/results.json, summary.md, airlines.toml\n")
    elif args.airline_counts:
        folder = await run_airline_counts(settings, config, _say)
        print(f"\nresults: {folder}/results.json, airline-counts.png, summary.md, airlines.toml\n")
    else:
        folder = await run_benchmark(settings, config, _say)
        print(f"\nresults: {folder}/results.json, latency.png, summary.md\n")
    print((folder / "summary.md").read_text())
    return 0


def _airline_counts_arg(text: str) -> list[int]:
    from bench.synthetic_airlines import MAX_AIRLINES

    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None
    if not counts or counts[0] < 1 or counts[-1] > MAX_AIRLINES:
        raise argparse.ArgumentTypeError(f"airline counts between 1 and {MAX_AIRLINES}, got {text!r}")
    return counts


async def _dlq(settings: Settings, args: argparse.Namespace) -> int:
    from jetbridge.dlq_ops.command import run

    return await run(settings, args)


async def _airlines(settings: Settings, args: argparse.Namespace) -> int:
    from connectors.pin_review import run

    return await run(load_registry(settings.airlines_file), args, _console())


async def _audit(settings: Settings, args: argparse.Namespace) -> int:
    from jetbridge.audit_ops import run

    return await run(settings, args)


async def _trace(settings: Settings, args: argparse.Namespace) -> int:
    from jetbridge.trace_view import TraceNotFound, show

    try:
        return show(args.request_id, args.dir or settings.traces_dir, _console())
    except TraceNotFound as exc:
        print(f"jetbridge trace: {exc}", file=sys.stderr)
        return 1


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from mcp_bridge.key_ops import run

    return run(settings, args, _console())


async def _token(settings: Settings, args: argparse.Namespace) -> int:
    """Mint a bearer token for the bridge with the development issuer's key (made if there is none yet)."""
    from infra.auth.dev_issuer import SCOPES_SUPPORTED, auth_dir, load_or_create_key, mint
    from mcp_bridge.auth import resource_uri
    from mcp_bridge.boundary import is_client_id

    scopes = args.scopes.split()
    if not is_client_id(args.client):
        print(f"jetbridge token: {args.client!r} is not a client id (1-64 letters, digits, - and _)", file=sys.stderr)
        return 2
    if not set(scopes) <= set(SCOPES_SUPPORTED):
        print(f"jetbridge token: scopes must be among {' '.join(SCOPES_SUPPORTED)}", file=sys.stderr)
        return 2
    key = load_or_create_key(auth_dir(settings.home))
    audience = resource_uri(settings)
    token = mint(
        key, issuer=settings.auth_issuer, audience=audience, client_id=args.client, scopes=scopes, ttl_s=args.ttl
    )
    print(token)
    expires = (datetime.now(UTC) + timedelta(seconds=args.ttl)).strftime("%Y-%m-%d %H:%M:%S UTC")
    print(
        f"client {args.client}, scopes {' '.join(scopes) or '(none)'}, audience {audience}, issuer "
        f"{settings.auth_issuer}, key {key.kid}, expires {expires}",
        file=sys.stderr,
    )
    return 0


def _run(settings: Settings, args: argparse.Namespace) -> int:
    module = {
        "bridge": "mcp_bridge",
        "streams": "streams",
        "connectors": "connectors",
        "simulators": "infra.simulators",
        "issuer": "infra.auth.dev_issuer",
    }[args.component]
    os.execv(sys.executable, [sys.executable, "-m", module, *args.rest])  # noqa: S606 - our own interpreter
    return 0  # not reached


def _folder_arg(text: str) -> Path:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"no folder {text}")
    return Path(text)


def _scale_arg(text: str) -> dict[str, int]:
    from infra.stack.components import parse_scale

    try:
        return parse_scale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jetbridge", description="Jetbridge: AI agents to airlines over Kafka.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the local stack under its supervisor; returns when all is healthy")
    p_up.add_argument("--no-simulators", action="store_true", help="do not start the airline simulators")
    p_up.add_argument(
        "--scale",
        type=_scale_arg,
        help="instances per kind, e.g. streams=2,connectors=2 (default: what runs now, else 1 each)",
    )
    sub.add_parser("down", help="stop everything the local stack started")
    sub.add_parser("status", help="every component: PID, health, restarts, endpoint (exit 3 if one is down)")
    p_demo = sub.add_parser("demo", help="search flights through the MCP bridge and print the offers")
    p_demo.add_argument("--origin", default="LHR")
    p_demo.add_argument("--destination", default="JFK")
    p_demo.add_argument("--date", help="departure date YYYY-MM-DD (default: three weeks ahead)")
    p_demo.add_argument("--return-date")
    p_demo.add_argument("--adults", type=int, default=1)
    p_demo.add_argument("--cabin")
    p_demo.add_argument("--max-offers", type=int, default=15)
    p_demo.add_argument("--url", help="bridge URL (default from settings)")
    p_demo.add_argument(
        "--token",
        default=os.environ.get("JB_TOKEN"),
        help="bearer token or API key to call with (default: $JB_TOKEN, else one from the development issuer)",
    )
    p_topics = sub.add_parser("topics", help="topic administration")
    p_topics.add_argument("action", choices=["apply"])
    p_schemas = sub.add_parser(
        "schemas", help="the contracts: every .avsc and MCP tool against what came before (breaking: exit 1)"
    )
    p_schemas.add_argument("action", choices=["check"])
    p_schemas.add_argument("--base", default="main", metavar="REV", help="git revision to compare with (default main)")
    p_schemas.add_argument("--offline", action="store_true", help="compare with git only; do not ask the registry")
    p_schemas.add_argument(
        "--dir", type=_folder_arg, default=AVRO_DIR, help="folder of .avsc files (default schemas/avro)"
    )
    p_schemas.add_argument(
        "--update", action="store_true", help="record the MCP tools' additions in their snapshot (never a breaking one)"
    )
    p_schemas.add_argument("--tools-snapshot", type=Path, help="the MCP tools snapshot (default beside the bridge)")
    p_bench = sub.add_parser("bench", help="benchmark Jetbridge against a direct fan-out baseline")
    p_bench.add_argument("--rates", default="10,20,30,40,50,75,100", help="offered searches/s, comma-separated")
    p_bench.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up per rate (excluded)")
    p_bench.add_argument("--hold", type=float, default=20.0, help="seconds measured per rate and system")
    p_bench.add_argument("--deadline-ms", type=int, default=3000)
    p_bench.add_argument("--sessions", type=int, default=8, help="MCP client sessions of the load generator")
    p_bench.add_argument(
        "--stack-warmup",
        type=float,
        default=45.0,
        help="seconds of load per system before the first rate, not measured (the broker's JIT warm-up)",
    )
    p_bench.add_argument("--soak", type=float, default=0.0, help="then hold --soak-rate for this many seconds")
    p_bench.add_argument("--soak-rate", type=float, default=20.0)
    p_bench.add_argument("--out", help="results folder (default bench/results)")
    p_bench.add_argument(
        "--airline-counts",
        type=_airline_counts_arg,
        metavar="N,N,...",
        help="instead of the rates: cost against airlines per search, e.g. 5,10,20 (synthetic airlines on "
        "LHR-JFK; restarts the stack with them, then brings it back)",
    )
    p_bench.add_argument(
        "--airline-counts-rate", type=float, default=10.0, help="offered searches/s with --airline-counts"
    )
    p_bench.add_argument(
        "--airlines-50",
        action="store_true",
        help="instead of the rates: 50 real airlines with their OpenFlights route networks, searches on a hub "
        "pair, LHR-JFK and a thin route at the first of --rates (restarts the stack with them, then brings it back)",
    )
    p_bench.add_argument(
        "--cache-mix",
        type=float,
        metavar="SHARE",
        help="instead of the rates: the cache-hit scenario, this share (0-1) of searches repeating earlier ones, "
        "both systems side by side (airline calls per search counted at the simulators)",
    )
    p_bench.add_argument("--cache-mix-rate", type=float, default=20.0, help="offered searches/s with --cache-mix")
    from jetbridge.dlq_ops.command import add_arguments as add_dlq_arguments

    add_dlq_arguments(sub.add_parser("dlq", help="dead letters: list, show, replay"))
    from connectors.pin_review import add_arguments as add_airlines_arguments

    add_airlines_arguments(sub.add_parser("airlines", help="MCP airlines' pinned tools: approve, pins"))
    p_run = sub.add_parser("run", help="run one component in the foreground")
    p_run.add_argument("component", choices=["bridge", "streams", "connectors", "simulators", "issuer"])
    p_run.add_argument("rest", nargs=argparse.REMAINDER)
    from jetbridge.audit_ops import add_arguments as add_audit_arguments

    add_audit_arguments(sub.add_parser("audit", help="tool calls on jb.audit.v1, filtered, with counts by outcome"))
    from mcp_bridge.key_ops import add_arguments as add_keys_arguments

    add_keys_arguments(sub.add_parser("keys", help="API keys of machine clients: create, list, revoke"))
    from jetbridge.trace_view import add_arguments as add_trace_arguments

    add_trace_arguments(sub.add_parser("trace", help="one search's spans across every hop, as a timeline tree"))
    p_token = sub.add_parser("token", help="mint a bearer token for the bridge with the development issuer's key")
    p_token.add_argument("--client", required=True, help="the client id the token names (its client_id and sub)")
    p_token.add_argument("--scopes", default="offers:read", help='space-separated (default "offers:read")')
    p_token.add_argument("--ttl", type=int, default=3600, choices=range(1, 86401), metavar="SECONDS")
    args = parser.parse_args(argv)
    if (
        args.command == "bench"
        and args.airlines_50
        and (args.airline_counts or args.soak or args.cache_mix is not None)
    ):
        p_bench.error("--airlines-50 is a scenario of its own: not with --airline-counts, --soak or --cache-mix")
    if args.command == "bench" and args.airline_counts and args.soak:
        p_bench.error("--soak runs with the rates, not with --airline-counts")
    if args.command == "bench" and args.cache_mix is not None:
        if not 0 <= args.cache_mix <= 1:
            p_bench.error(
                f"--cache-mix is a share between 0 and 1 (0.8: 80 % repeated searches), not {args.cache_mix:g}"
            )
        if args.airline_counts or args.soak:
            p_bench.error("--cache-mix is a scenario of its own: not with --airline-counts or --soak")
    settings = get_settings()
    if args.command == "run":
        return _run(settings, args)
    handlers = {
        "up": _up,
        "down": _down,
        "status": _status,
        "demo": _demo,
        "topics": _topics,
        "schemas": _schemas,
        "bench": _bench,
        "dlq": _dlq,
        "audit": _audit,
        "airlines": _airlines,
        "token": _token,
        "keys": _keys,
        "trace": _trace,
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
