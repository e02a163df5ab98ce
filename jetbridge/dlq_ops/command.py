"""``jetbridge dlq list | show | replay``: the operator's words and tables over the store and the replay.

Times are UTC. Every way of selecting nothing says so, and what to try instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from jetbridge.errors import DecodeError, InvalidInput
from jetbridge.settings import Settings
from schemas.models import DlqReplay, now_utc

from .replay import ReplayOptions, ReplayReport, Step, brief, replay
from .selection import DlqEntry, DlqFilter, DlqId, codes_of, parse_when
from .store import DlqRead, DlqStore, contract_of

__all__ = ["add_arguments", "run"]

_LIST_LIMIT = 50
_DETAIL_ROWS = 10
_RATE_MIN_RECORDS = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``dlq`` subcommands and their options."""
    sub = parser.add_subparsers(dest="dlq_command", required=True)
    filters = argparse.ArgumentParser(add_help=False)
    group = filters.add_argument_group("which dead letters")
    group.add_argument("--airline", help="IATA code: that airline's connector and calls topic")
    group.add_argument("--stage", help="router, aggregator, connector.<IATA>, or connector for every airline")
    group.add_argument("--code", action="append", default=[], help="error code, e.g. decode (repeat or a,b)")
    group.add_argument("--since", help="failed at or after: 30m, 2h, 1d ago, or 2026-11-25T10:00 (UTC)")
    group.add_argument("--until", help="failed before: same forms as --since")
    group.add_argument("--request-id", help="one request's dead letters")
    p_list = sub.add_parser("list", parents=[filters], help="dead letters with counts by error code")
    p_list.add_argument("--limit", type=int, default=_LIST_LIMIT, help="rows shown, the latest (counts cover all)")
    p_show = sub.add_parser("show", help="one dead letter: record, headers, and the original event decoded")
    p_show.add_argument("id", help="<partition>:<offset> on the DLQ topic, as `list` shows")
    p_replay = sub.add_parser(
        "replay", parents=[filters], help="send dead letters back to their original topics, byte-for-byte"
    )
    p_replay.add_argument("ids", nargs="*", metavar="ID", help="dead-letter ids (<partition>:<offset>)")
    p_replay.add_argument("--all", action="store_true", help="every dead letter (when no id or filter is given)")
    p_replay.add_argument("--dry-run", action="store_true", help="show exactly what would be sent; send nothing")
    p_replay.add_argument("--rate", type=float, default=0.0, help="records/s (default 0: no cap)")
    p_replay.add_argument("--force", action="store_true", help="send again what an earlier replay already sent")
    p_replay.add_argument(
        "--include-expired", action="store_true", help="send events whose deadline has passed (skipped by default)"
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    # No markup: what is printed quotes operators' filters and records' texts, where "[...]" is data.
    console = Console(width=None if sys.stdout.isatty() else 200, highlight=False, markup=False)
    if args.dlq_command == "show":
        dlq_id = DlqId.parse(args.id)
        async with DlqStore(settings) as store:
            return await _show(console, store, dlq_id)
    selection = _selection(args)
    if args.dlq_command == "replay":
        if args.rate < 0:
            raise InvalidInput("--rate", "must be 0 (no cap) or a number of records per second")
        if selection.empty and not args.all:
            raise InvalidInput(
                "selection",
                "say which dead letters to replay: ids, a filter (--code, --stage, --airline, --since, --until, "
                "--request-id) or --all",
            )
    async with DlqStore(settings) as store:
        read = await store.dead_letters(selection)
        _warn_unreadable(console, read)
        if not read.entries:
            _say_none(console, store, selection, read)
            return 0
        if args.dlq_command == "list":
            return await _list(console, store, read, selection, args.limit)
        options = ReplayOptions(
            force=args.force, include_expired=args.include_expired, dry_run=args.dry_run, rate=args.rate
        )
        return await _replay(console, store, read, selection, options)


def _selection(args: argparse.Namespace) -> DlqFilter:
    now = now_utc()
    ids = frozenset(DlqId.parse(i) for i in getattr(args, "ids", []) or [])
    return DlqFilter(
        airline=args.airline,
        stage=args.stage,
        codes=codes_of(args.code),
        since=parse_when(args.since, now=now, option="--since") if args.since else None,
        until=parse_when(args.until, now=now, option="--until") if args.until else None,
        request_id=args.request_id,
        ids=ids,
    )


def _t(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


class _Table(Table):
    """A table whose text cells are data, never rich markup: "[redacted]" in a message stays as it is."""

    def add_row(self, *cells: RenderableType | None, **kwargs: Any) -> None:
        super().add_row(*(Text(c) if isinstance(c, str) else c for c in cells), **kwargs)


def _table(*columns: tuple[str, str]) -> Table:
    table = _Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]  # rich's Literal, from a plain str
    return table


def _say_none(console: Console, store: DlqStore, selection: DlqFilter, read: DlqRead) -> None:
    if read.read == 0 and selection.since is None:
        console.print(
            f"The dead-letter topic {store.dlq_topic} is empty: nothing has failed for good "
            "(or it was older than the topic's 14-day retention)."
        )
        return
    console.print(
        f"No dead letters on {store.dlq_topic} match {selection.describe()} ({read.read} read). "
        "Try `jetbridge dlq list` without filters to see what is there."
    )


def _warn_unreadable(console: Console, read: DlqRead) -> None:
    if read.unreadable:
        ids = ", ".join(str(i) for i, _ in read.unreadable[:_DETAIL_ROWS])
        console.print(f"{len(read.unreadable)} records on the DLQ topic are not dead letters and were left out: {ids}")


# ---- list ----
async def _list(console: Console, store: DlqStore, read: DlqRead, selection: DlqFilter, limit: int) -> int:
    ledger = await store.replays()
    shown = read.entries[-limit:] if limit > 0 else []
    table = _table(
        ("id", "right"),
        ("failed at (UTC)", "left"),
        ("stage", "left"),
        ("code", "left"),
        ("original topic", "left"),
        ("request id", "left"),
        ("replayed", "left"),
    )
    for entry in shown:
        record = entry.record
        replayed = ledger.get(str(entry.id))
        table.add_row(
            str(entry.id),
            _t(record.failed_at),
            record.stage,
            record.error_code,
            record.original_topic,
            record.request_id or "-",
            Text(f"{_t(replayed.replayed_at)} by {replayed.operator}", style="green") if replayed else Text("-"),
        )
    matched = len(read.entries)
    what = "" if selection.empty else f" matching {selection.describe()}"
    console.print(f"{matched} dead letters on {store.dlq_topic}{what} ({read.read} read in {read.seconds:.1f} s)")
    console.print(table)
    if len(shown) < matched:
        console.print(f"showing the latest {len(shown)} of {matched}: narrow them with filters or raise --limit")
    console.print(_counts_table(read.entries, ledger))
    return 0


def _counts_table(entries: Iterable[DlqEntry], ledger: dict[str, DlqReplay]) -> Table:
    by_code: Counter[str] = Counter()
    replayed: Counter[str] = Counter()
    stages: dict[str, set[str]] = {}
    for entry in entries:
        code = entry.record.error_code
        by_code[code] += 1
        replayed[code] += str(entry.id) in ledger
        stages.setdefault(code, set()).add(entry.record.stage)
    table = _table(("code", "left"), ("records", "right"), ("replayed", "right"), ("stages", "left"))
    for code, count in by_code.most_common():
        table.add_row(code, str(count), str(replayed[code]), ", ".join(sorted(stages[code])))
    table.add_row(Text("total", style="bold"), str(sum(by_code.values())), str(sum(replayed.values())), "")
    return table


# ---- show ----
async def _show(console: Console, store: DlqStore, dlq_id: DlqId) -> int:
    entry = await store.dead_letter(dlq_id)
    replayed = (await store.replays()).get(str(dlq_id))
    record = entry.record
    console.print(Text(f"Dead letter {dlq_id} on {store.dlq_topic}", style="bold"))
    facts = _table(("", "left"), ("", "left"))
    facts.show_header = False
    payload = record.payload
    rows = [
        (
            "failed at",
            f"{_t(record.failed_at)} UTC (first failure {_t(record.first_failed_at)}, "
            f"{record.attempts} {'try' if record.attempts == 1 else 'tries'})",
        ),
        ("stage", record.stage),
        (
            "error",
            f"{record.error_code} ({record.error_class or 'class not recorded'}, "
            f"{'retriable' if record.retriable else 'not retriable'})",
        ),
        ("message", record.error_message),
        ("original", f"{record.original_topic} partition {record.original_partition} offset {record.original_offset}"),
        ("key", _text(record.original_key)),
        ("request id", record.request_id or "-"),
        ("correlation id", record.correlation_id or "-"),
        (
            "payload",
            "none" if payload is None else f"{len(payload)} bytes, sha256 {hashlib.sha256(payload).hexdigest()[:16]}",
        ),
        (
            "replayed",
            f"at {_t(replayed.replayed_at)} UTC by {replayed.operator} to {replayed.target_topic} partition "
            f"{replayed.target_partition} offset {replayed.target_offset} (replay {replayed.replay_id})"
            if replayed
            else "no",
        ),
    ]
    for name, value in rows:
        facts.add_row(Text(name, style="bold"), Text(value))
    console.print(facts)
    headers = _table(("header", "left"), ("value", "left"))
    for name, value in entry.headers.items():
        headers.add_row(name, value)
    console.print(Text("\nHeaders of the dead letter", style="bold"))
    console.print(headers)
    model = contract_of(record.original_topic, store.names)
    try:
        event = await store.decode_original(record)
    except DecodeError as exc:
        console.print(
            Text(
                f"\nThe original event does not decode with the current schema of {record.original_topic}: "
                f"{brief(exc.message, 600)}\nIt is poison: a replay would fail again (and does not send it).",
                style="yellow",
            )
        )
        return 0
    name = model.__name__ if model else type(event).__name__
    console.print(
        Text(f"\nOriginal event ({name}, decoded with the current schema of {record.original_topic})", "bold")
    )
    console.print_json(json.dumps(event.model_dump(mode="json"), ensure_ascii=False))
    return 0


def _text(data: bytes | None) -> str:
    if data is None:
        return "none"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return f"0x{data.hex()}"


# ---- replay ----
class _RateColumn(ProgressColumn):
    """Records per second since sending began (the summary's figure, as it goes)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed
        if not elapsed or not task.completed:
            return Text("")
        return Text(f"{task.completed / elapsed:,.0f} records/s", style="cyan")


async def _replay(
    console: Console, store: DlqStore, read: DlqRead, selection: DlqFilter, options: ReplayOptions
) -> int:
    progress = Progress(
        TextColumn("[bold]replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    task = progress.add_task("replay", total=None, start=False)

    def planned(report: ReplayReport) -> None:
        sending = len(report.to_send)
        what = "" if selection.empty else f" matching {selection.describe()}"
        if options.dry_run:
            console.print(
                f"Dry run of replay {report.replay_id} by {report.operator}: {len(report.steps)} dead letters"
                f"{what}. Nothing is sent."
            )
            return
        cap = f"at most {options.rate:g}/s" if options.rate > 0 else "no rate cap"
        console.print(
            f"Replay {report.replay_id} by {report.operator}: {len(report.steps)} dead letters{what}; "
            f"sending {sending} to their original topics ({cap})."
        )
        if sending:
            progress.update(task, total=sending)
            progress.start()
            progress.start_task(task)

    try:
        report = await replay(store, read.entries, options, progress=lambda: progress.advance(task), on_planned=planned)
    finally:
        progress.stop()
    if options.dry_run:
        _print_plan(console, report)
    _print_summary(console, report, read)
    return 1 if report.not_delivered or report.unrecorded else 0


def _print_plan(console: Console, report: ReplayReport) -> None:
    if report.to_send:
        table = _table(
            ("id", "right"),
            ("to topic", "left"),
            ("key", "left"),
            ("bytes", "right"),
            ("sha256", "left"),
            ("headers", "left"),
        )
        for step in report.to_send:
            record = step.entry.record
            payload = record.payload or b""
            names = [n for n, _ in step.headers]
            table.add_row(
                str(step.entry.id),
                record.original_topic,
                _text(record.original_key),
                str(len(payload)),
                hashlib.sha256(payload).hexdigest()[:16],
                ", ".join(names[:-2] + [f"{n}={v.decode()}" for n, v in step.headers[-2:]]),
            )
        console.print(
            Text(f"\nWould send ({len(report.to_send)}), payload byte-for-byte with key and headers:", "bold")
        )
        console.print(table)
    for title, steps in (("Would skip", report.skipped), ("Would fail again (not sent)", report.failed)):
        if steps:
            console.print(Text(f"\n{title} ({len(steps)}):", "bold"))
            console.print(_steps_table(steps))


def _steps_table(steps: list[Step], limit: int | None = None) -> Table:
    table = _table(("id", "right"), ("stage", "left"), ("reason", "left"), ("detail", "left"))
    for step in steps[:limit]:
        table.add_row(str(step.entry.id), step.entry.record.stage, step.reason, step.detail)
    return table


def _reasons(counts: Counter[str]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in counts.most_common())


def _print_summary(console: Console, report: ReplayReport, read: DlqRead) -> None:
    dry = report.dry_run
    sent = report.to_send if dry else [s.step for s in report.replayed]
    targets = Counter(s.target for s in sent)
    table = _table(("outcome", "left"), ("records", "right"), ("why / where", "left"))
    table.add_row(
        Text("would replay" if dry else "replayed", style="green"),
        str(len(sent)),
        ", ".join(f"{t} {n}" for t, n in targets.most_common()),
    )
    table.add_row(
        Text("would skip" if dry else "skipped", style="yellow"),
        str(len(report.skipped)),
        _reasons(report.reasons(report.skipped)),
    )
    failed = report.failed
    table.add_row(
        Text("would fail again" if dry else "failed again", style="red"),
        str(len(failed)),
        _reasons(report.reasons(failed)),
    )
    console.print()
    console.print(table)
    if dry:
        console.print("Dry run: nothing was sent and nothing was recorded.")
        return
    if failed:
        console.print(Text("Failed again:", "bold"))
        console.print(_steps_table(failed, _DETAIL_ROWS))
        if len(failed) > _DETAIL_ROWS:
            console.print(f"... and {len(failed) - _DETAIL_ROWS} more: `jetbridge dlq show <id>` tells why")
    for step, error in report.not_delivered[:_DETAIL_ROWS]:
        console.print(f"not delivered: {step.entry.id} to {step.target}: {error}", style="red")
    if report.unrecorded:
        console.print(
            f"{len(report.unrecorded)} replayed but their replay record could not be written: a second replay "
            f"would send them again ({report.unrecorded[0][1]})",
            style="red",
        )
    if any(s.reason == "deadline passed" for s in report.skipped):
        console.print(
            "Events past their deadline are skipped: --include-expired sends them anyway (README: Dead letters)."
        )
    spent = report.plan_s + report.send_s
    line = f"{len(report.replayed)} replayed in {spent:.2f} s"
    # A rate over a handful of records measures the connection set-up, not the replay.
    if len(report.replayed) >= _RATE_MIN_RECORDS:
        line += f": {report.rate:,.0f} records/s checked and sent (sending alone {report.send_rate:,.0f}/s)"
    console.print(f"{line}; {read.read} dead letters read in {read.seconds:.2f} s")
