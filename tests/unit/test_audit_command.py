"""`jetbridge audit`'s filters (pure), and the one line it says when it cannot reach the broker."""

from __future__ import annotations

import argparse
from datetime import timedelta

import pytest

from jetbridge.audit_ops import AuditFilter, add_arguments, run
from jetbridge.errors import KafkaError
from jetbridge.settings import Settings
from schemas.models import AuditRecord, now_utc

NOW = now_utc()


def record(client: str = "acme", outcome: str = "complete", code: str | None = None, ago_s: float = 0) -> AuditRecord:
    return AuditRecord(
        client_id=client,
        request_id="r",
        correlation_id="r",
        tool="search_offers",
        outcome=outcome,
        error_code=code,
        duration_ms=5,
        at=NOW - timedelta(seconds=ago_s),
    )


def test_every_given_criterion_must_hold_and_values_of_one_are_alternatives() -> None:
    selection = AuditFilter(clients=frozenset({"acme", "beta"}), outcomes=frozenset({"rate_limited"}))
    assert selection.matches(record("beta", "rate_limited", "rate_limited"))
    assert not selection.matches(record("acme", "complete"))
    assert not selection.matches(record("gamma", "rate_limited"))
    assert AuditFilter(codes=frozenset({"backbone_unavailable"})).matches(record(code="backbone_unavailable"))
    window = AuditFilter(since=NOW - timedelta(minutes=10), until=NOW)
    assert window.matches(record(ago_s=60))
    assert not window.matches(record(ago_s=0)), "--until is exclusive"
    assert not window.matches(record(ago_s=3600))
    assert AuditFilter().empty
    assert window.describe().startswith("--since ")


async def test_an_unreachable_broker_is_one_line_saying_what_to_do() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9")
    with pytest.raises(KafkaError, match="KAFKA_BOOTSTRAP_SERVERS") as caught:
        await run(settings, parser.parse_args([]))
    assert "jetbridge up" in caught.value.message
