"""A container's health probe: exit 0 when this process's ``/health`` answers as asked, 1 otherwise.

Docker's healthcheck and Kubernetes' probes run this inside the container (images have no curl): it asks the
worker's ``/health`` on 127.0.0.1 (served on every interface there: ``JB_HEALTH_HOST=0.0.0.0``) and prints the
answer, a 503's reason included, where ``docker inspect`` and ``kubectl describe`` show it:

    python infra/deploy/healthcheck.py           ready: 200 (``ok``) from http://127.0.0.1:$JB_HEALTH_PORT/health
    python infra/deploy/healthcheck.py --live    alive: any answer, 503 (``starting``, ``degraded``) included
    python infra/deploy/healthcheck.py --url U   another endpoint (the bridge's, the simulators' control API)
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

__all__ = ["main", "probe"]


def probe(url: str, *, live: bool, timeout_s: float = 3.0) -> tuple[bool, str]:
    """Whether ``url`` answers as a ready (200) or, with ``live``, a living (200 or 503) process, and why."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:  # noqa: S310  # our own http:// URL
            return True, f"{url}: {answer.status}"
    except urllib.error.HTTPError as exc:
        # 503 is a process that answers but is starting or degraded: alive, not ready.
        return live and exc.code == 503, f"{url}: {exc.code} {exc.read(300).decode(errors='replace')}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url}: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python infra/deploy/healthcheck.py", description=__doc__.splitlines()[0])
    parser.add_argument("--live", action="store_true", help="any answer counts (liveness), not only 200")
    parser.add_argument("--url", help="the endpoint to ask (default: 127.0.0.1:$JB_HEALTH_PORT/health)")
    args = parser.parse_args(argv)
    url = args.url
    if url is None:
        port = os.environ.get("JB_HEALTH_PORT", "0")
        if not port.isdigit() or int(port) == 0:
            print("JB_HEALTH_PORT is not set: this process serves no /health; pass --url", file=sys.stderr)
            return 1
        url = f"http://127.0.0.1:{port}/health"
    ok, why = probe(url, live=args.live)
    print(why, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
