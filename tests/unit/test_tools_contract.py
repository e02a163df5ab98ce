"""The MCP tools' version rule: additions pass, anything an agent's existing call would trip on fails."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from jetbridge.cli import main
from mcp_bridge.tools_contract import SNAPSHOT, compare_tools, current_tools, read_snapshot, write_snapshot


@pytest.fixture(scope="module")
def tools() -> dict[str, Any]:
    return asyncio.run(current_tools())


def _breaking(snapshot: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c.tool, c.argument, c.what) for c in compare_tools(snapshot, now) if c.breaking]


def test_the_committed_snapshot_is_every_tool_the_bridge_offers(tools: dict[str, Any]) -> None:
    assert set(tools) >= {"search_offers", "list_airlines", "price_offer", "create_order", "get_order", "cancel_order"}
    assert compare_tools(read_snapshot(), tools) == [], "run `jetbridge schemas check --update` and commit it"


def test_a_tool_that_disappears_breaks(tools: dict[str, Any]) -> None:
    now = {name: schema for name, schema in tools.items() if name != "get_order"}
    assert _breaking(tools, now) == [("get_order", "", "tool removed (or renamed): agents that call it fail")]


def test_a_removed_or_renamed_argument_breaks(tools: dict[str, Any]) -> None:
    now = copy.deepcopy(tools)
    properties = now["search_offers"]["properties"]
    properties["passenger_count"] = properties.pop("adults")
    assert _breaking(tools, now) == [
        ("search_offers", "adults", "removed (or renamed): agents that send it are refused")
    ]


def test_a_new_required_argument_breaks_and_so_does_making_one_required(tools: dict[str, Any]) -> None:
    now = copy.deepcopy(tools)
    now["price_offer"]["properties"]["currency"] = {"type": "string"}
    now["price_offer"]["required"].append("currency")
    now["search_offers"]["required"].append("cabin")
    assert _breaking(tools, now) == [
        ("price_offer", "currency", "new argument is required: agents that leave it out are refused"),
        ("search_offers", "cabin", "optional argument is now required: agents that leave it out are refused"),
    ]


def test_narrowed_types_break(tools: dict[str, Any]) -> None:
    now = copy.deepcopy(tools)
    search = now["search_offers"]["properties"]
    search["cabin"]["enum"].remove("first")
    search["max_offers"]["maximum"] = 50
    search["adults"]["type"] = "string"
    search["return_date"]["anyOf"] = [b for b in search["return_date"]["anyOf"] if b.get("type") != "null"]
    passenger = now["create_order"]["properties"]["passengers"]["items"]["properties"]
    passenger["given_name"]["maxLength"] = 20
    before = copy.deepcopy(tools)
    before["search_offers"]["properties"]["children"]["type"] = "number"  # it took 1.5 children: now whole ones
    assert _breaking(before, now) == [
        ("create_order", "passengers[].given_name", "maxLength lowered from 40 to 20"),
        ("search_offers", "return_date", "no longer accepts null (now string)"),
        ("search_offers", "adults", "no longer accepts integer (now string)"),
        ("search_offers", "children", "type narrowed from number to integer"),
        ("search_offers", "cabin", "no longer accepts first"),
        ("search_offers", "max_offers", "maximum lowered from 200 to 50"),
    ]


def test_an_optional_argument_a_new_tool_and_a_wider_type_pass(tools: dict[str, Any]) -> None:
    now = copy.deepcopy(tools)
    search = now["search_offers"]["properties"]
    search["currency"] = {"type": "string", "default": "USD"}
    search["cabin"]["enum"].append("suite")
    search["max_offers"]["maximum"] = 500
    search["adults"]["type"] = "number"
    now["search_offers_v2"] = {"type": "object", "properties": {"route": {"type": "string"}}, "required": ["route"]}
    changes = compare_tools(tools, now)
    assert [(c.tool, c.argument, c.what, c.breaking) for c in changes] == [
        ("search_offers", "currency", "new optional argument", False),
        ("search_offers_v2", "", "new tool", False),
    ]


# ---- through the command ----


def _check(capsys: pytest.CaptureFixture[str], snapshot: Path, *more: str) -> tuple[int, str, str]:
    code = main(["schemas", "check", "--offline", "--base", "HEAD", "--tools-snapshot", str(snapshot), *more])
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), err


def test_the_check_fails_naming_the_tool_and_argument_and_update_refuses_to_record_it(
    tmp_path: Path, tools: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # The snapshot knows an argument the code no longer has: the code removed it.
    snapshot = copy.deepcopy(tools)
    snapshot["get_order"]["properties"]["include_history"] = {"type": "boolean"}
    path = tmp_path / "tools.json"
    write_snapshot(snapshot, path)
    code, out, _ = _check(capsys, path)
    assert code == 1
    assert "get_order include_history removed (or renamed)" in out
    assert "a breaking change is a new tool (e.g. search_offers_v2)" in out
    before = path.read_text()
    assert _check(capsys, path, "--update")[0] == 1
    assert path.read_text() == before, "a breaking change is never recorded"


def test_additions_pass_and_update_records_them(
    tmp_path: Path, tools: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = copy.deepcopy(tools)
    del snapshot["cancel_order"]
    del snapshot["search_offers"]["properties"]["fresh"]
    path = tmp_path / "tools.json"
    write_snapshot(snapshot, path)
    code, out, _ = _check(capsys, path)
    assert code == 0, out
    assert "cancel_order - new tool" in out
    assert "search_offers fresh new optional argument" in out
    assert "record them: jetbridge schemas check --update" in out
    code, out, _ = _check(capsys, path, "--update")
    assert code == 0
    assert read_snapshot(path) == tools
    assert json.loads(path.read_text())["rule"].startswith("MCP tools change only by adding")


def test_a_missing_snapshot_says_how_to_make_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tools.json"
    code, _, err = _check(capsys, path)
    assert code == 1
    assert "no MCP tools snapshot" in err
    assert "--update" in err
    assert _check(capsys, path, "--update")[0] == 0
    assert read_snapshot(path) == read_snapshot(SNAPSHOT)
