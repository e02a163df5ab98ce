"""The Dead Letter Channel's record: one builder for every stage, so dead letters look the same wherever
they come from. The payload is kept byte-for-byte; headers say where it came from and why.
"""

from __future__ import annotations

from jetbridge.errors import JetbridgeError
from schemas.models import DeadLetter, now_utc

__all__ = ["dead_letter"]


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: dict[str, str],
    stage: str,
    error: BaseException,
    attempts: int = 1,
) -> tuple[DeadLetter, list[tuple[str, bytes]]]:
    """The DLQ record for a failed event and the headers to send it with (the original ones plus
    ``dlq.*``)."""
    code = error.code if isinstance(error, JetbridgeError) else "internal"
    retriable = error.retriable if isinstance(error, JetbridgeError) else False
    text = (error.message if isinstance(error, JetbridgeError) else repr(error))[:1000]
    now = now_utc()
    record = DeadLetter(
        original_topic=topic,
        original_partition=partition,
        original_offset=offset,
        original_key=key,
        original_headers=headers,
        payload=value,
        stage=stage,
        error_code=code,
        error_message=text,
        retriable=retriable,
        attempts=attempts,
        request_id=headers.get("request_id"),
        correlation_id=headers.get("correlation_id"),
        first_failed_at=now,
        failed_at=now,
    )
    dlq_headers: list[tuple[str, bytes]] = [(k, v.encode()) for k, v in headers.items() if not k.startswith("dlq.")] + [
        ("dlq.original_topic", topic.encode()),
        ("dlq.original_partition", str(partition).encode()),
        ("dlq.original_offset", str(offset).encode()),
        ("dlq.stage", stage.encode()),
        ("dlq.error_code", code.encode()),
        ("dlq.error_message", text[:200].encode("utf-8", "replace")),
        ("dlq.retriable", b"true" if retriable else b"false"),
        ("dlq.attempts", str(attempts).encode()),
        ("dlq.failed_at", now.isoformat().encode()),
    ]
    return record, dlq_headers
