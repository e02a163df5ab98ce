"""One HTTP exchange with an airline over the shared client: per-request timeout, body cap, status mapping.

httpx timeout                                   → AirlineTimeout
connection refused/reset, protocol error        → AirlineUnavailable
429, 5xx                                        → AirlineUnavailable
401, 403, any other 4xx                         → AirlineRejected
3xx (never followed), body over the cap         → AirlineBadResponse
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from jetbridge.errors import (
    AirlineBadResponse,
    AirlineError,
    AirlineRejected,
    AirlineTimeout,
    AirlineUnavailable,
)

__all__ = ["MAX_BODY_BYTES", "AirlineReply", "error_for_status", "exchange"]

# Far above any honest shopping answer; a bigger body is a fault or an attack, not offers.
MAX_BODY_BYTES = 5 * 1024 * 1024


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
) -> AirlineReply:
    """Send one request and read a 2xx body of at most ``max_bytes`` (decoded); map every failure."""
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0))
    try:
        async with http.stream(
            method, url, headers=dict(headers), params=params, content=content, json=json, timeout=timeout
        ) as response:
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


def error_for_status(airline: str, status: int) -> AirlineError | None:
    """The error an HTTP status means, or None for 2xx."""
    if 200 <= status < 300:
        return None
    if status == 429 or status >= 500:
        return AirlineUnavailable(f"{airline}: HTTP {status}")
    if status in (401, 403):
        return AirlineRejected(f"{airline}: HTTP {status}, credentials refused")
    if 400 <= status < 500:
        return AirlineRejected(f"{airline}: HTTP {status}, request refused")
    return AirlineBadResponse(f"{airline}: unexpected HTTP {status}")


def _check_status(airline: str, response: httpx.Response) -> None:
    error = error_for_status(airline, response.status_code)
    if error is not None:
        raise error
