"""Onboarding and approving an airline's MCP tools: what its server lists now against its pin, and writing it.

`review_pin` connects to the airline's MCP server the way its connector does (same mapping, credential, tool
names, and connections only to addresses the registry allows it: `connectors/egress.py`) and compares;
`approve_pin` writes what was reviewed. `jetbridge airlines approve|pins` are these two with a table and a
question in front (``jetbridge/cli.py``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.prompt import Confirm
from rich.table import Table

from connectors.egress import EndpointGate, guarded_mcp_transport
from connectors.kinds.mcp import McpConnector
from connectors.pins import DEFAULT_PINS_FILE, Pin, PinBook, PinnedTool, ToolChange, diff_tools, tool_list_hash
from jetbridge.airlines import Airline, AirlineRegistry, ConnectorKind
from jetbridge.endpoints import Resolver, system_resolver
from jetbridge.errors import ConfigurationError, JetbridgeError

__all__ = ["PinReview", "add_arguments", "approve_pin", "review_pin", "run"]


@dataclass(frozen=True, slots=True)
class PinReview:
    """An airline's pin (None before onboarding) against what its MCP server lists now."""

    airline: str
    endpoint: str
    pinned: Pin | None
    served: tuple[PinnedTool, ...]
    served_sha256: str
    changes: tuple[ToolChange, ...]

    @property
    def matches(self) -> bool:
        return self.pinned is not None and self.pinned.sha256 == self.served_sha256


async def review_pin(
    airline: Airline, book: PinBook, *, timeout_s: float = 10.0, resolver: Resolver = system_resolver
) -> PinReview:
    """Connect to the airline's MCP server and compare the tools its connector calls with the pin."""
    if airline.kind != ConnectorKind.MCP:
        kind = ConnectorKind(airline.kind).value
        raise ConfigurationError(f"airline {airline.code} is {kind}, not mcp: nothing to pin")
    # Approving reads the server as a worker would call it: a host resolving to an address the registry does
    # not allow is refused, here with its reason, and again by every connection (if the name's answer changes).
    refused = await EndpointGate(airline, resolver=resolver).check()
    if refused is not None:
        raise ConfigurationError(f"{airline.code}: endpoint refused, not connected to: {refused}")
    connector = McpConnector(airline, pins=book, transport=guarded_mcp_transport(airline, resolver=resolver))
    try:
        served = await connector.tools(timeout_s=timeout_s)
        names = connector.pin_check.tool_names
    finally:
        await connector.aclose()
    missing = sorted(set(names) - {tool.name for tool in served})
    if missing:
        raise ConfigurationError(f"{airline.code}: its MCP server at {airline.endpoint} lists no tool {missing}")
    pinned = book.get(airline.code)
    return PinReview(
        airline=airline.code,
        endpoint=airline.endpoint,
        pinned=pinned,
        served=tuple(served),
        served_sha256=tool_list_hash(served),
        changes=tuple(diff_tools(pinned.tools if pinned is not None else (), served)),
    )


def approve_pin(review: PinReview, book: PinBook) -> Pin:
    """Pin what ``review`` saw the server list (the operator approved it)."""
    return book.approve(review.airline, review.served, endpoint=review.endpoint)


# ---- `jetbridge airlines approve|pins` ----
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``airlines`` sub-commands on ``parser``."""
    sub = parser.add_subparsers(dest="airlines_command", required=True)
    approve = sub.add_parser("approve", help="pin the MCP tools an airline's server lists now (shows the diff first)")
    approve.add_argument("airline", help="IATA code of an MCP airline, e.g. AY")
    approve.add_argument("--yes", action="store_true", help="approve without asking (no terminal, e.g. CI)")
    pins = sub.add_parser("pins", help="each MCP airline's pinned hash and whether its live server matches")
    for each in (approve, pins):
        each.add_argument("--pins-file", type=Path, default=DEFAULT_PINS_FILE, help="default: %(default)s")
        each.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a server")


async def run(registry: AirlineRegistry, args: argparse.Namespace, console: Console) -> int:
    """Run ``jetbridge airlines <command>``; returns the exit code."""
    book = PinBook(args.pins_file)
    if args.airlines_command == "approve":
        return await _approve(registry, book, args, console)
    return await _pins(registry, book, args, console)


async def _approve(registry: AirlineRegistry, book: PinBook, args: argparse.Namespace, console: Console) -> int:
    code = str(args.airline).upper()
    if code not in registry:
        raise ConfigurationError(f"unknown airline {code!r}; the registry has {registry.codes()}")
    review = await review_pin(registry[code], book, timeout_s=args.timeout)
    console.print(_changes_table(review))
    pinned = review.pinned.sha256 if review.pinned is not None else "none (not onboarded)"
    console.print(f"pinned  {pinned}\nserved  {review.served_sha256}  ({review.endpoint})")
    if review.matches:
        console.print(f"{code}: the server lists the pinned tools; nothing to approve.")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            console.print("not approved: no terminal to ask on (use --yes to approve without asking)")
            return 2
        if not Confirm.ask(f"Pin these tools for {code}?", console=console, default=False):
            console.print("not approved; the pin is unchanged")
            return 2
    pin = approve_pin(review, book)
    console.print(
        f"{code}: pinned {pin.sha256} in {book.path}; connector workers take it at their next call "
        "(commit the file to keep it)"
    )
    return 0


def _changes_table(review: PinReview) -> Table:
    table = Table(title=f"{review.airline}: MCP tools, pinned against served", box=box.SIMPLE_HEAD)
    for column in ("tool", "change", "pinned description", "served description"):
        table.add_column(column, overflow="fold")
    old = {tool.name: tool for tool in review.pinned.tools} if review.pinned is not None else {}
    new = {tool.name: tool for tool in review.served}
    for change in review.changes:
        what = change.change if not change.fields else f"{change.change}: {', '.join(change.fields)}"
        before, after = old.get(change.name), new.get(change.name)
        table.add_row(
            change.name,
            what,
            before.description if before is not None else "-",
            after.description if after is not None else "-",
        )
    return table


async def _pins(registry: AirlineRegistry, book: PinBook, args: argparse.Namespace, console: Console) -> int:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("airline", "pinned sha256", "approved at", "live sha256", "live server"):
        table.add_column(column)
    differs = False
    for airline in registry:
        if airline.kind != ConnectorKind.MCP:
            continue
        pin = book.get(airline.code)
        try:
            review = await review_pin(airline, book, timeout_s=args.timeout)
            live, verdict = review.served_sha256[:16], "matches" if review.matches else "DIFFERS: quarantined"
        except JetbridgeError as exc:
            live, verdict = "-", f"unreachable ({exc.code})"
        differs = differs or verdict != "matches"
        table.add_row(
            airline.code,
            pin.sha256[:16] if pin is not None else "none",
            pin.approved_at if pin is not None else "-",
            live,
            verdict,
        )
    console.print(table)
    return 3 if differs else 0
