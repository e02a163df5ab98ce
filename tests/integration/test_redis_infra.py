"""Redis as the project runs it: the test session's Redis answers through ``jetbridge/redis_client.py``, and
``infra/redis/redis.sh`` starts one server however often it is asked, stops the one it started and says so.

The script's Redis runs on a port and a ``JB_HOME`` of its own (a temporary folder) and is stopped by its PID
at the end whatever happened. Every wait is bounded: the scripts by a subprocess timeout, sockets by theirs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.stack.state import alive, cmdline
from jetbridge.offer_cache import OfferCache
from jetbridge.redis_client import open_redis, ping
from jetbridge.settings import REPO_ROOT, Settings
from tests.conftest import PORT_SHIFT
from tests.support import factories
from tests.support.streams_worker import TopicSpace

# Beside the session's Redis (16379 + shift).
PORT = 16389 + PORT_SHIFT
SCRIPT = REPO_ROOT / "infra" / "redis" / "redis.sh"


def _redis_sh(action: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, JB_HOME=str(home), JB_REDIS_PORT=str(PORT))
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), action], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _pong(port: int) -> bool:
    """A PING in the Redis protocol, answered within a second."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64) == b"+PONG\r\n"
    except OSError:
        return False


def _servers_on(port: int) -> list[int]:
    """PIDs of the redis-server processes listening on ``port`` (Redis puts its address in its command line)."""
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [pid for pid in pids if cmdline(pid).startswith(f"redis-server 127.0.0.1:{port}")]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A JB_HOME for the script; a server it left running is stopped by the PID it recorded."""
    yield tmp_path
    pidfile = tmp_path / "run" / "redis.pid"
    pid = int(pidfile.read_text()) if pidfile.exists() else 0
    if pid and alive(pid) and cmdline(pid).startswith("redis-server"):
        os.kill(pid, signal.SIGKILL)


async def test_session_redis_answers_ping_and_keeps_a_value(settings: Settings) -> None:
    key = f"jb-test:{uuid.uuid4().hex}"
    async with asyncio.timeout(10):
        assert await ping(settings.redis_url)
        async with open_redis(settings.redis_url) as client:
            await client.set(key, b"offer", ex=60)
            assert await client.get(key) == b"offer"
            assert await client.delete(key) == 1


async def test_ping_says_false_when_nothing_listens() -> None:
    async with asyncio.timeout(10):
        assert not await ping(f"redis://127.0.0.1:{PORT}/0")


def test_redis_sh_starts_one_server_however_often_it_is_asked(home: Path) -> None:
    first = _redis_sh("start", home)
    assert first.returncode == 0, first.stderr
    pid = int((home / "run" / "redis.pid").read_text())
    assert _pong(PORT)

    second = _redis_sh("start", home)

    assert second.returncode == 0, second.stderr
    assert f"already running (pid {pid})" in second.stderr
    assert int((home / "run" / "redis.pid").read_text()) == pid
    assert _servers_on(PORT) == [pid]
    status = _redis_sh("status", home)
    assert status.returncode == 0
    assert f"redis: running (pid {pid}) on 127.0.0.1:{PORT}" in status.stdout


def test_redis_sh_stop_ends_the_server_it_started(home: Path) -> None:
    assert _redis_sh("start", home).returncode == 0
    pid = int((home / "run" / "redis.pid").read_text())

    stop = _redis_sh("stop", home)

    assert stop.returncode == 0, stop.stderr
    assert not alive(pid)
    assert not (home / "run" / "redis.pid").exists()
    assert not _pong(PORT)
    status = _redis_sh("status", home)
    assert status.returncode == 3
    assert "redis: stopped" in status.stdout
    assert _redis_sh("stop", home).returncode == 0  # nothing to stop is not an error


def test_redis_sh_refuses_a_port_another_process_holds(home: Path) -> None:
    with socket.create_server(("127.0.0.1", PORT)):
        start = _redis_sh("start", home)

    assert start.returncode == 1
    assert f"port {PORT} is taken by a process this script did not start" in start.stderr
    assert _servers_on(PORT) == []


async def test_the_offer_cache_survives_its_redis_killed_and_uses_it_again_once_restarted(
    home: Path, space: TopicSpace
) -> None:
    """Redis killed mid-run: the cache answers misses at once (the searches go live), says so once, and uses
    the restarted Redis again by itself, with no restart of the process holding it."""
    assert _redis_sh("start", home).returncode == 0
    assert space.codec is not None
    criteria = factories.criteria()
    response = factories.response("BA", offers=[factories.offer("BA", "500.00"), factories.offer("BA", "612.40")])
    async with open_redis(f"redis://127.0.0.1:{PORT}/0", timeout_s=0.25) as client:
        cache = OfferCache(client, space.codec, topic=space.names.responses, retry_s=0.5)
        assert await cache.put(criteria, response, fresh_s=60)
        assert await cache.get("BA", criteria) is not None

        pid = int((home / "run" / "redis.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        started = asyncio.get_running_loop().time()
        assert await cache.get("BA", criteria) is None  # a miss: the search goes to the airline
        assert asyncio.get_running_loop().time() - started < 1.0
        assert not cache.available
        assert not await cache.put(criteria, response, fresh_s=60)  # nothing stored, nothing waited for

        assert _redis_sh("start", home).returncode == 0  # back, empty (no persistence: a cache)
        await asyncio.sleep(0.6)  # the retry period
        assert await cache.put(criteria, response, fresh_s=60)
        assert cache.available
        back = await cache.get("BA", criteria)
    assert back is not None
    assert [o.offer_id for o in back.response.offers] == [o.offer_id for o in response.offers]
