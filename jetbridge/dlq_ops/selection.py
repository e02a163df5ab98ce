"""Which dead letters an operator means: record ids, time expressions and the filters of ``jetbridge dlq``.

Pure (no I/O): the store reads records, this decides which of them match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from jetbridge.errors import InvalidInput
from jetbridge.topics import TopicNames
from schemas.models import DeadLetter

__all__ = ["DlqEntry", "DlqFilter", "DlqId", "codes_of", "parse_when"]

_ID = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.I)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


@dataclass(frozen=True, slots=True, order=True)
class DlqId:
    """Where a dead letter sits on the DLQ topic; written ``<partition>:<offset>`` (the replay record's key)."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> DlqId:
        match = _ID.match(text)
        if match is None:
            raise InvalidInput(
                "id", f"{text!r} is not a dead-letter id: expected <partition>:<offset> as `jetbridge dlq list` shows"
            )
        return cls(int(match.group(1)), int(match.group(2)))


def parse_when(text: str, *, now: datetime, option: str = "--since") -> datetime:
    """A point in time: ``30m``/``2h``/``1d`` ago, or ISO 8601 (``2026-11-25``, ``2026-11-25T10:00``; UTC
    unless it carries an offset)."""
    ago = _AGO.match(text)
    if ago is not None:
        return now - timedelta(seconds=float(ago.group(1)) * _UNIT_S[ago.group(2).lower()])
    try:
        when = datetime.fromisoformat(text.strip().replace(" ", "T", 1).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            option, f"{text!r} is not a time: give 30m, 2h, 1d (ago) or 2026-11-25T10:00 (UTC unless an offset)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class DlqEntry:
    """One dead letter as read from the DLQ topic: its id, its decoded record and the message's headers."""

    id: DlqId
    record: DeadLetter
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DlqFilter:
    """What ``list`` and ``replay`` select; every given criterion must hold (codes are alternatives)."""

    airline: str | None = None
    stage: str | None = None
    codes: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    request_id: str | None = None
    ids: frozenset[DlqId] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.airline or self.stage or self.codes or self.since or self.until or self.request_id or self.ids)

    def matches(self, entry: DlqEntry, names: TopicNames) -> bool:
        record = entry.record
        if self.ids and entry.id not in self.ids:
            return False
        if self.codes and record.error_code not in self.codes:
            return False
        if self.stage is not None and not _stage_matches(record.stage, self.stage):
            return False
        if self.airline is not None:
            code = self.airline.upper()
            if record.stage != f"connector.{code}" and record.original_topic != names.calls(code):
                return False
        if self.request_id is not None and record.request_id != self.request_id:
            return False
        if self.since is not None and record.failed_at < self.since:
            return False
        return self.until is None or record.failed_at < self.until

    def describe(self) -> str:
        """The filter as the options that give it, for messages."""
        parts = [str(i) for i in sorted(self.ids)]
        for option, value in (
            ("--airline", self.airline),
            ("--stage", self.stage),
            ("--code", ",".join(sorted(self.codes)) or None),
            ("--since", _iso(self.since)),
            ("--until", _iso(self.until)),
            ("--request-id", self.request_id),
        ):
            if value:
                parts.append(f"{option} {value}")
        return " ".join(parts) or "(no filter)"


def codes_of(values: Iterable[str]) -> frozenset[str]:
    """``--code a,b --code c`` as a set."""
    return frozenset(c.strip() for v in values for c in v.split(",") if c.strip())


def _stage_matches(stage: str, wanted: str) -> bool:
    # "connector" alone means every airline's connector.
    return stage == wanted or (wanted == "connector" and stage.startswith("connector."))


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when is not None else None
