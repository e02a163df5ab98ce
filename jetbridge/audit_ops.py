"""``jetbridge audit``: the tool calls recorded on ``jb.audit.v1``, filtered, as a table with counts by outcome.

Reads like ``jetbridge dlq list`` (the DLQ tool's reader, pointed at the audit topic: its own consumer, no
group, nothing committed, from ``--since`` by timestamp to the end the topic had when the read began). Times
are UTC. A broker or registry it cannot reach, and a filter that matches nothing, each say what to do next.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

from jetbridge.dlq_ops.command import _table
from jetbridge.dlq_ops.selection import codes_of, parse_when
from jetbridge.dlq_ops.store import DlqStore
from jetbridge.errors import DecodeError
from jetbridge.settings import Settings
from schemas.models import AuditRecord, now_utc

__all__ = ["AuditFilter", "add_arguments", "run"]

_LIST_LIMIT = 50


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which records ``jetbridge audit`` shows; every given criterion must hold (values of one are alternatives)."""

    clients: frozenset[str] = frozenset()
    tools: frozenset[str] = frozenset()
    outcomes: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    @property
    def empty(self) -> bool:
        return not (self.clients or self.tools or self.outcomes or self.codes or self.since or self.until)

    def matches(self, record: AuditRecord) -> bool:
        return (
            (not self.clients or record.client_id in self.clients)
            and (not self.tools or record.tool in self.tools)
            and (not self.outcomes or record.outcome in self.outcomes)
            and (not self.codes or record.error_code in self.codes)
            and (self.since is None or record.at >= self.since)
            and (self.until is None or record.at < self.until)
        )

    def describe(self) -> str:
        parts = [
            f"{option} {','.join(sorted(values))}"
            for option, values in (
                ("--client", self.clients),
                ("--tool", self.tools),
                ("--outcome", self.outcomes),
                ("--code", self.codes),
            )
            if values
        ]
        parts += [f"{option} {_t(when)}" for option, when in (("--since", self.since), ("--until", self.until)) if when]
        return " ".join(parts) or "(no filter)"


class _AuditReader(DlqStore):
    """The DLQ tool's topic reader (broker check, partitions, seek by time, read to the end), on jb.audit.v1."""

    async def records(self, selection: AuditFilter) -> tuple[list[AuditRecord], int, int, float]:
        """Matching records (oldest first), records read, records that did not decode, seconds spent."""
        started = time.monotonic()
        since_ms = int(selection.since.timestamp() * 1000) if selection.since is not None else None
        messages = await self._run(self._read_topic, self.names.audit, since_ms)
        found: list[AuditRecord] = []
        unreadable = 0
        for message in messages:
            try:
                record = await self._decode(message.value(), AuditRecord)
            except DecodeError:
                unreadable += 1
                continue
            if selection.matches(record):
                found.append(record)
        found.sort(key=lambda r: r.at)
        return found, len(messages), unreadable, time.monotonic() - started


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``audit`` command's filters (each may be repeated or given as a,b)."""
    parser.add_argument("--client", action="append", default=[], help="client id, e.g. anonymous")
    parser.add_argument("--tool", action="append", default=[], help="tool, e.g. search_offers")
    parser.add_argument(
        "--outcome",
        action="append",
        default=[],
        help="complete, partial, unanswered, no_airlines, invalid_input, rate_limited, quota_exceeded, error",
    )
    parser.add_argument("--code", action="append", default=[], help="error code, e.g. backbone_unavailable")
    parser.add_argument("--since", help="at or after: 30m, 2h, 1d ago, or 2026-11-25T10:00 (UTC)")
    parser.add_argument("--until", help="before: same forms as --since")
    parser.add_argument("--limit", type=int, default=_LIST_LIMIT, help="rows shown, the latest (counts cover all)")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    # No markup: client ids and codes are data.
    console = Console(width=None if sys.stdout.isatty() else 200, highlight=False, markup=False)
    now = now_utc()
    selection = AuditFilter(
        clients=codes_of(args.client),
        tools=codes_of(args.tool),
        outcomes=codes_of(args.outcome),
        codes=codes_of(args.code),
        since=parse_when(args.since, now=now, option="--since") if args.since else None,
        until=parse_when(args.until, now=now, option="--until") if args.until else None,
    )
    reader = _AuditReader(settings)
    async with reader:
        records, read, unreadable, seconds = await reader.records(selection)
        topic = reader.names.audit
    if unreadable:
        console.print(f"{unreadable} records on {topic} are not audit records and were left out")
    if not records:
        if read == 0 and selection.since is None:
            console.print(
                f"The audit topic {topic} is empty: no tool call has reached a bridge of this deployment (check "
                "JB_TOPIC_PREFIX), or the calls are older than the topic's 30-day retention."
            )
        else:
            console.print(
                f"No audit records on {topic} match {selection.describe()} ({read} read). "
                "Try `jetbridge audit` without filters to see what is there."
            )
        return 0
    shown = records[-args.limit :] if args.limit > 0 else []
    table = _table(
        ("at (UTC)", "left"),
        ("client", "left"),
        ("tool", "left"),
        ("outcome", "left"),
        ("code", "left"),
        ("latency", "right"),
        ("request id", "left"),
        ("arguments sha256", "left"),
    )
    for record in shown:
        table.add_row(
            _t(record.at),
            record.client_id,
            record.tool,
            Text(record.outcome, style=_style(record.outcome)),
            record.error_code or "-",
            f"{record.duration_ms} ms",
            record.request_id,
            (record.arguments_sha256 or "-")[:16],
        )
    what = "" if selection.empty else f" matching {selection.describe()}"
    console.print(f"{len(records)} audit records on {topic}{what} ({read} read in {seconds:.1f} s)")
    console.print(table)
    if len(shown) < len(records):
        console.print(f"showing the latest {len(shown)} of {len(records)}: narrow them with filters or raise --limit")
    console.print(_counts_table(records))
    return 0


def _counts_table(records: list[AuditRecord]) -> Table:
    by_outcome: Counter[str] = Counter(r.outcome for r in records)
    clients: dict[str, set[str]] = {}
    codes: dict[str, set[str]] = {}
    for record in records:
        clients.setdefault(record.outcome, set()).add(record.client_id)
        if record.error_code:
            codes.setdefault(record.outcome, set()).add(record.error_code)
    table = _table(("outcome", "left"), ("records", "right"), ("clients", "right"), ("codes", "left"))
    for outcome, count in by_outcome.most_common():
        table.add_row(
            Text(outcome, style=_style(outcome)),
            str(count),
            str(len(clients[outcome])),
            ", ".join(sorted(codes.get(outcome, ()))),
        )
    all_clients = {r.client_id for r in records}
    table.add_row(Text("total", style="bold"), str(len(records)), str(len(all_clients)), "")
    return table


def _style(outcome: str) -> str:
    if outcome in {"complete", "partial"}:
        return "green"
    if outcome in {"rate_limited", "quota_exceeded", "invalid_input"}:
        return "yellow"
    return "red" if outcome in {"error", "unanswered"} else ""


def _t(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
