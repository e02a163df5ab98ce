"""``jetbridge dlq`` speaks in one line when it cannot do what was asked, and says what to do instead."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from jetbridge.cli import main
from jetbridge.dlq_ops import store
from jetbridge.settings import get_settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Settings pointing at a broker that is not there."""
    bootstrap = f"127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setattr(store, "CONNECT_TIMEOUT_S", 1.0)
    get_settings.cache_clear()
    yield bootstrap
    get_settings.cache_clear()


@pytest.mark.parametrize("argv", [["dlq", "list"], ["dlq", "show", "0:1"], ["dlq", "replay", "--all", "--dry-run"]])
def test_an_unreachable_broker_is_one_line_naming_the_setting(
    argv: list[str], nowhere: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert f"cannot reach Kafka at {nowhere} (KAFKA_BOOTSTRAP_SERVERS)" in err
    assert "jetbridge up" in err
    assert "Traceback" not in err


def test_replay_without_a_selection_asks_for_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "replay"]) == 1
    err = capsys.readouterr().err
    assert "say which dead letters to replay" in err
    assert "--all" in err


def test_a_malformed_id_says_the_form_to_use(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "show", "41"]) == 1
    assert "expected <partition>:<offset>" in capsys.readouterr().err


def test_a_malformed_time_says_the_forms_to_use(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "list", "--since", "last tuesday"]) == 1
    assert "--since" in (err := capsys.readouterr().err)
    assert "30m, 2h, 1d" in err


def test_a_negative_rate_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "replay", "--all", "--rate", "-5"]) == 1
    assert "--rate" in capsys.readouterr().err
