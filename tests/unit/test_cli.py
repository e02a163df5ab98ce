"""The command's words: a stopped bridge in one line, answers without offers in words, a truthful status."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from infra.stack.control import status
from jetbridge.cli import _bridge_failure, _result_words, main
from jetbridge.settings import Settings, get_settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ConnectError(Exception):
    """Named like httpx's (and the MCP client's own copy of it)."""


def test_a_refused_connection_inside_exception_groups_reads_as_bridge_not_running() -> None:
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [ConnectError("All connection attempts failed")])])
    words = _bridge_failure(nested, "http://127.0.0.1:8080/mcp")
    assert words == "the bridge is not running at http://127.0.0.1:8080/mcp: run `jetbridge up`"


def test_demo_against_a_stopped_bridge_prints_one_line_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}/mcp"
    assert main(["demo", "--url", url]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"jetbridge demo: the bridge is not running at {url}: run `jetbridge up`"


def test_answers_without_offers_are_said_in_words() -> None:
    nobody = {"status": "no_airlines", "offers": [], "airlines": []}
    assert "No airline in the registry serves LHR-XYZ" in (_result_words(nobody, "LHR-XYZ") or "")
    silent = {
        "status": "unanswered",
        "offers": [],
        "airlines": [{"airline": "BA", "status": "timeout", "error_code": None}],
    }
    words = _result_words(silent, "LHR-JFK")
    assert words == "None of the airlines asked about LHR-JFK answered (BA timeout): no offers."
    assert _result_words({"status": "complete", "offers": [{"airline": "BA"}]}, "LHR-JFK") is None


def test_scale_of_a_kind_that_cannot_scale_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["up", "--scale", "bridge=2"])
    assert exit_.value.code == 2
    assert "cannot be scaled" in capsys.readouterr().err


async def test_status_of_a_stopped_stack_lists_every_component_as_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings(
        JB_HOME=tmp_path,
        JB_BRIDGE_PORT=_free_port(),
        JB_SIM_CONTROL_PORT=_free_port(),
        JB_HEALTH_PORT_BASE=_free_port() - 100,
        JB_AUTH_ISSUER=f"http://127.0.0.1:{_free_port()}",
        REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0",
    )
    report = await status(settings)
    names = [row.name for row in report.rows]
    assert names == [
        "kafka",
        "registry",
        "redis",
        "supervisor",
        "simulators",
        "issuer",
        "streams-1",
        "connectors-1",
        "bridge",
    ]
    assert not report.all_up
    assert all(row.health == "stopped" and row.pid == "-" for row in report.rows)
    assert [row.restarts for row in report.rows[:4]] == ["n/a"] * 4


def test_status_command_exits_non_zero_when_something_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JB_HOME", str(tmp_path))
    monkeypatch.setenv("JB_BRIDGE_PORT", str(_free_port()))
    get_settings.cache_clear()
    try:
        assert main(["status"]) == 3
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    bridge = next(line for line in out.splitlines() if line.split()[:1] == ["bridge"])
    assert "stopped" in bridge
