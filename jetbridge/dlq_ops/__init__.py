"""The operator's tool for dead letters (``jetbridge dlq``): see what failed, why, and replay it.

``selection`` says which dead letters are meant (ids, filters, times), ``store`` reads the DLQ topic and the
replay records, ``replay`` decides and sends, ``command`` is the command's tables and words.
"""

from __future__ import annotations

from .replay import ReplayOptions, ReplayReport, Step, Verdict, plan_replay, replay
from .selection import DlqEntry, DlqFilter, DlqId, parse_when
from .store import DlqRead, DlqStore, contract_of

__all__ = [
    "DlqEntry",
    "DlqFilter",
    "DlqId",
    "DlqRead",
    "DlqStore",
    "ReplayOptions",
    "ReplayReport",
    "Step",
    "Verdict",
    "contract_of",
    "parse_when",
    "plan_replay",
    "replay",
]
