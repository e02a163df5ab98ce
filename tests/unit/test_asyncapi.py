"""docs/asyncapi.json: generated from the topic declarations, committed as generated, and valid for the real
AsyncAPI parser (tools/asyncapi/validate.mjs, the parser with its Avro schema parser)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jetbridge import asyncapi
from jetbridge.airlines import load_registry
from jetbridge.dlq import dead_letter
from jetbridge.errors import JetbridgeError
from jetbridge.kafka import HEADER_REPLY_TO, event_headers
from jetbridge.topics import declared_topics
from schemas.codec import AVRO_DIR

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "tools" / "asyncapi" / "validate.mjs"
NODE_MODULES = ROOT / "tools" / "asyncapi" / "node_modules"


def _document() -> dict[str, Any]:
    return json.loads(asyncapi.DEFAULT_OUTPUT.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _validate(document: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None or not NODE_MODULES.is_dir():
        reason = "the AsyncAPI parser is not installed: run `npm ci --prefix tools/asyncapi` (or `make setup`)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return subprocess.run(  # our own script on our own files
        [node, str(VALIDATOR), str(document)], capture_output=True, text=True, timeout=120, check=False
    )


def test_committed_document_is_what_the_topic_declarations_generate(capsys: pytest.CaptureFixture[str]) -> None:
    assert asyncapi.check(), "docs/asyncapi.json is stale: run `python -m jetbridge.asyncapi` and commit it"
    assert asyncapi.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_fails_when_the_document_is_stale_or_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "docs" / "asyncapi.json"
    assert asyncapi.main(["--check", "--output", str(output)]) == 1
    assert asyncapi.main(["--output", str(output)]) == 0
    assert asyncapi.main(["--check", "--output", str(output)]) == 0
    stale = json.loads(output.read_text(encoding="utf-8"))
    del stale["channels"]["tasksV1"]
    output.write_text(asyncapi.render(stale), encoding="utf-8")
    assert asyncapi.main(["--check", "--output", str(output)]) == 1
    assert "run `python -m jetbridge.asyncapi`" in capsys.readouterr().out


def test_every_declared_topic_is_a_channel_with_its_bindings_key_and_operations() -> None:
    document = _document()
    registry = load_registry()
    addresses: dict[str, dict[str, Any]] = {}
    for channel_id, channel in document["channels"].items():
        for code in channel.get("parameters", {}).get("iata", {}).get("enum", [None]):
            address = channel["address"] if code is None else channel["address"].replace("{iata}", code)
            addresses[address] = channel | {"id": channel_id}
    for spec in declared_topics(registry):
        assert spec.name in addresses, f"{spec.name} is not in docs/asyncapi.json"
        channel = addresses[spec.name]
        kafka = channel["bindings"]["kafka"]
        assert kafka["partitions"] == spec.partitions
        assert kafka["topicConfiguration"]["retention.ms"] == spec.retention_ms
        assert kafka["topicConfiguration"]["cleanup.policy"] == spec.cleanup_policy.split(",")
        assert spec.model is not None
        message = document["components"]["messages"][spec.model.__name__]
        assert message["payload"]["schema"]["$ref"] == f"../schemas/avro/{spec.model.SCHEMA}"
        assert spec.key
        assert spec.key in message["bindings"]["kafka"]["key"]["description"]
        actions = {
            (op["tags"][0]["name"], op["action"])
            for op in document["operations"].values()
            if op["channel"]["$ref"] == f"#/channels/{channel['id']}"
        }
        assert actions == {(w, "send") for w in spec.writers} | {(r, "receive") for r in spec.readers}
    # Nothing but declared topics: one channel per contract name or per-airline template.
    assert set(addresses) == {spec.name for spec in declared_topics(registry)}


def test_per_airline_topics_are_one_parameterised_channel_listing_every_airline() -> None:
    channels = _document()["channels"]
    codes = sorted(a.code for a in load_registry())
    assert channels["airlineCallsV1"]["address"] == "jb.airline.{iata}.calls.v1"
    assert channels["airlineOrdersV1"]["address"] == "jb.airline.{iata}.orders.v1"
    for channel_id in ("airlineCallsV1", "airlineOrdersV1"):
        assert channels[channel_id]["parameters"]["iata"]["enum"] == codes


def test_headers_are_the_ones_the_stages_write() -> None:
    messages = _document()["components"]["messages"]
    envelope = [
        name
        for name, _ in event_headers(request_id="r", correlation_id="c", client_id="x", deadline_ms=1, traceparent="t")
    ]
    request = messages["SearchRequest"]["headers"]
    assert request["required"] == envelope
    assert list(request["properties"]) == envelope
    assert messages["SearchReply"]["headers"]["required"] == [*envelope, HEADER_REPLY_TO]
    assert "headers" not in messages["AirlineHealth"]
    # The dead letter's own headers are exactly what jetbridge/dlq.py adds to the failed event's.
    _, sent = dead_letter(
        topic="jb.requests.v1",
        partition=0,
        offset=7,
        key=b"r",
        value=b"x",
        headers={},
        stage="router",
        error=JetbridgeError("boom"),
    )
    assert [name for name, _ in sent] == messages["DeadLetter"]["headers"]["required"]


def test_generator_refuses_per_airline_topics_declared_differently() -> None:
    registry = load_registry()
    topics = declared_topics(registry)
    first_call = next(i for i, spec in enumerate(topics) if ".calls." in spec.name)
    topics[first_call] = replace(topics[first_call], partitions=topics[first_call].partitions + 1)
    with pytest.raises(ValueError, match=r"declared unlike the other topics of jb\.airline\.\{iata\}\.calls\.v1"):
        asyncapi.build_document(topics, registry)


def test_committed_document_validates_with_the_asyncapi_parser() -> None:
    result = _validate(asyncapi.DEFAULT_OUTPUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid AsyncAPI 3.0.0" in result.stdout
    assert f"{len(_document()['channels'])} channels" in result.stdout
    assert "13 Avro payloads checked" in result.stdout


def test_parser_reports_a_channel_whose_schema_file_is_missing(tmp_path: Path) -> None:
    document = _document()
    document["components"]["messages"]["SearchRequest"]["payload"]["schema"]["$ref"] = "avro/missing.avsc"
    broken = tmp_path / "asyncapi.json"
    broken.write_text(json.dumps(document), encoding="utf-8")
    result = _validate(broken)
    assert result.returncode == 1
    assert "error invalid-ref at components/messages/SearchRequest/payload/schema" in result.stdout
    assert "missing.avsc" in result.stdout


def test_parser_reports_an_invalid_avro_schema(tmp_path: Path) -> None:
    shutil.copytree(AVRO_DIR, tmp_path / "avro")
    schema = json.loads((tmp_path / "avro" / "airline_call.avsc").read_text(encoding="utf-8"))
    schema["fields"][0]["type"] = "strnig"
    (tmp_path / "avro" / "airline_call.avsc").write_text(json.dumps(schema), encoding="utf-8")
    document = asyncapi.build_document(declared_topics(load_registry()), load_registry(), schema_base="avro")
    (tmp_path / "asyncapi.json").write_text(asyncapi.render(document), encoding="utf-8")
    result = _validate(tmp_path / "asyncapi.json")
    assert result.returncode == 1
    assert "error invalid-avro-schema at components/messages/AirlineCall/payload/schema" in result.stdout
    assert "strnig" in result.stdout


def test_parser_reports_a_document_that_breaks_the_asyncapi_schema(tmp_path: Path) -> None:
    document = _document()
    document["operations"]["bridgeWritesRequestsV1"]["action"] = "publish"  # AsyncAPI 2's word, not 3's
    broken = tmp_path / "asyncapi.json"
    broken.write_text(json.dumps(document), encoding="utf-8")
    result = _validate(broken)
    assert result.returncode == 1
    assert "operations/bridgeWritesRequestsV1/action" in result.stdout


def test_readme_topics_table_says_the_declared_keys() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Topics", 1)[1].split("###", 1)[0]
    keys = {
        cells[0].strip("`").replace("<IATA>", "{iata}"): cells[1]
        for line in table.splitlines()
        if line.startswith("| `jb.")
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    channels = _document()["channels"].values()
    declared = {channel["address"]: channel for channel in channels}
    assert set(keys) == set(declared)
    messages = _document()["components"]["messages"]
    for address, channel in declared.items():
        (name,) = channel["messages"]
        assert messages[name]["bindings"]["kafka"]["key"]["description"] == f"Plain UTF-8: {keys[address]}.", address
