"""One HTTP exchange with an airline over the shared client: per-request timeout, body cap, status mapping.

httpx timeout                                   → AirlineTimeout
connection refused/reset, protocol error        → AirlineUnavailable
429, or 503 with Retry-After                    → AirlineThrottled (retry_after_s from the header)
5xx                                             → AirlineUnavailable
401, 403, any other 4xx                         → AirlineRejected
3xx (never followed), body over the cap         → AirlineBadResponse

A caller that reads the airline's own error bodies (the REST order calls: 404, 409, 410, 422 say which offer or
order problem it is) names those statuses in ``keep_statuses``: they come back as replies, body read under the
same cap, for the caller to map.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from jetbridge.errors import (
    AirlineBadResponse,
    AirlineError,
    AirlineRejected,
    AirlineThrottled,
    AirlineTimeout,
    AirlineUnavailable,
)

__all__ = ["MAX_BODY_BYTES", "MAX_RETRY_AFTER_S", "AirlineReply", "error_for_status", "exchange", "retry_after_s"]

# Far above any honest shopping answer; a bigger body is a fault or an attack, not offers.
MAX_BODY_BYTES = 5 * 1024 * 1024
# A longer Retry-After is more likely a bug than a wish; holding an airline for hours on one would be worse.
MAX_RETRY_AFTER_S = 600.0


@dataclass(frozen=True, slots=True)
class AirlineReply:
    status: int
    content_type: str
    body: bytes


async def exchange(
    http: httpx.AsyncClient,
    airline: str,
    method: str,
    url: str,
    *,
    timeout_s: float,
    headers: Mapping[str, str],
    params: Mapping[str, str] | None = None,
    content: bytes | None = None,
    json: Any = None,
    max_bytes: int = MAX_BODY_BYTES,
    keep_statuses: Collection[int] = (),
) -> AirlineReply:
    """Send one request and read a 2xx body (or one of ``keep_statuses``) of at most ``max_bytes`` (decoded);
    map every failure."""
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0))
    try:
        async with http.stream(
            method, url, headers=dict(headers), params=params, content=content, json=json, timeout=timeout
        ) as response:
            if response.status_code not in keep_statuses:
                _check_status(airline, response)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise AirlineBadResponse(f"{airline}: body of {declared} bytes is over the {max_bytes} cap")
            body = bytearray()
            # Counted after decompression, so a small gzip bomb cannot get past the cap either.
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise AirlineBadResponse(f"{airline}: body is over the {max_bytes} byte cap")
            return AirlineReply(response.status_code, response.headers.get("content-type", ""), bytes(body))
    except httpx.TimeoutException as exc:
        raise AirlineTimeout(f"{airline}: {type(exc).__name__} after {timeout_s:.2f}s") from exc
    except httpx.DecodingError as exc:
        raise AirlineBadResponse(f"{airline}: body cannot be decoded ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise AirlineUnavailable(f"{airline}: {type(exc).__name__}") from exc


def retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP-date); None when absent or unreadable."""
    text = (value or "").strip()
    if not text:
        return None
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - (now or datetime.now(UTC))).total_seconds()), MAX_RETRY_AFTER_S)


def error_for_status(airline: str, status: int, retry_after: str | None = None) -> AirlineError | None:
    """The error an HTTP status means (with the response's ``Retry-After``, if any), or None for 2xx."""
    if 200 <= status < 300:
        return None
    wait = retry_after_s(retry_after)
    if status == 429 or (status == 503 and wait is not None):
        said = f", Retry-After {wait:g} s" if wait is not None else ""
        return AirlineThrottled(f"{airline}: HTTP {status}{said}", retry_after_s=wait)
    if status >= 500:
        return AirlineUnavailable(f"{airline}: HTTP {status}")
    if status in (401, 403):
        return AirlineRejected(f"{airline}: HTTP {status}, credentials refused")
    if 400 <= status < 500:
        return AirlineRejected(f"{airline}: HTTP {status}, request refused")
    return AirlineBadResponse(f"{airline}: unexpected HTTP {status}")


def _check_status(airline: str, response: httpx.Response) -> None:
    error = error_for_status(airline, response.status_code, response.headers.get("retry-after"))
    if error is not None:
        raise error
