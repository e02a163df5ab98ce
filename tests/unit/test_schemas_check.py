"""Contract governance: `jetbridge schemas check` against a git base and the registry, the subjects' levels, the
registry refusing what would break a consumer, and an old consumer reading the next compatible version."""

from __future__ import annotations

import copy
import io
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fastavro
import httpx
import pytest

from infra.registry.local_registry import RegistryState, build_app
from jetbridge.airlines import load_registry
from jetbridge.cli import main
from jetbridge.contracts import apply_compatibility, check_schemas
from jetbridge.errors import SchemaRegistryError
from jetbridge.settings import get_settings
from jetbridge.topics import ORDERS, REQUESTS, declared_topics
from schemas.codec import AVRO_DIR, value_subject
from schemas.compat import breaking_changes, is_compatible
from schemas.registry import SchemaRegistryClient

SPECS = declared_topics(load_registry(get_settings().airlines_file))


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-C", str(repo), *args],  # noqa: S607
        check=True,
        capture_output=True,
    )


@pytest.fixture
def avro(tmp_path: Path) -> Path:
    """Copies of two contracts (an event topic's, a compacted topic's) committed on ``main`` of a new git repo."""
    folder = tmp_path / "repo" / "schemas" / "avro"
    folder.mkdir(parents=True)
    for name in ("search_request.avsc", "airline_health.avsc"):
        shutil.copy(AVRO_DIR / name, folder / name)
    _git(tmp_path / "repo", "init", "-q", "-b", "main")
    _git(tmp_path / "repo", "add", ".")
    _git(tmp_path / "repo", "commit", "-q", "-m", "contracts")
    return folder


def _edit(folder: Path, name: str, change: Any) -> None:
    schema = json.loads((folder / name).read_text())
    change(schema)
    (folder / name).write_text(json.dumps(schema, indent=2))


def _field(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in record["fields"] if f["name"] == name)


def _criteria(schema: dict[str, Any]) -> dict[str, Any]:
    return dict(_field(schema, "criteria")["type"])


def _check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["schemas", "check", "--offline", *args])
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), err


def test_check_fails_naming_the_field_when_a_copied_schema_changes_a_field_incompatibly(
    avro: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit(avro, "search_request.avsc", lambda s: _field(_criteria(s), "adults").update(type="string"))
    code, out, _ = _check(capsys, "--dir", str(avro))
    assert code == 1
    assert "search_request.avsc SearchRequest.criteria.adults git main BACKWARD type changed from int to string" in out
    assert ".v2" in out, "the way out is named"


def test_a_compatible_change_passes(avro: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def add_channel(schema: dict[str, Any]) -> None:
        schema["fields"].append({"name": "channel", "type": "string", "default": "mcp"})
        _field(_criteria(schema), "adults")["type"] = "long"  # int -> long: Avro promotes it

    _edit(avro, "search_request.avsc", add_channel)
    code, out, _ = _check(capsys, "--dir", str(avro))
    assert code == 0, out
    assert "2 schemas compatible with git main" in out


def test_a_field_added_without_a_default_fails(avro: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit(avro, "search_request.avsc", lambda s: s["fields"].append({"name": "channel", "type": "string"}))
    code, out, _ = _check(capsys, "--dir", str(avro))
    assert code == 1
    assert "SearchRequest.channel git main BACKWARD added without a default" in out


def test_compacted_state_refuses_a_removal_that_an_event_topic_allows(
    avro: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def drop_first_required_field(schema: dict[str, Any]) -> None:
        schema["fields"] = [f for f in schema["fields"] if f["name"] != schema["fields"][1]["name"]]

    removed = json.loads((avro / "airline_health.avsc").read_text())["fields"][1]["name"]
    _edit(avro, "search_request.avsc", lambda s: s["fields"].remove(_field(s, "reply_to")))
    _edit(avro, "airline_health.avsc", drop_first_required_field)
    code, out, _ = _check(capsys, "--dir", str(avro))
    assert code == 1
    assert f"AirlineHealth.{removed} git main FULL_TRANSITIVE removed, and the previous schema has no default" in out
    assert "reply_to" not in out, "BACKWARD lets an event topic drop a field: new readers ignore it"


def test_an_enum_symbol_removed_without_a_default_fails(avro: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit(avro, "search_request.avsc", lambda s: _field(_criteria(s), "cabin")["type"]["symbols"].remove("FIRST"))
    code, out, _ = _check(capsys, "--dir", str(avro))
    assert code == 1
    assert "SearchRequest.criteria.cabin git main BACKWARD enum symbol FIRST removed" in out


def test_a_new_v2_schema_beside_the_old_passes_even_where_it_breaks_v1(
    avro: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v2 = json.loads((avro / "search_request.avsc").read_text())
    v2["namespace"] = "jetbridge.v2"
    _field(_criteria(v2), "adults")["type"] = "string"  # would break jb.requests.v1; v2 is a new topic
    (avro / "search_request.v2.avsc").write_text(json.dumps(v2))
    code, out, _ = _check(capsys, "--dir", str(avro))
    assert code == 0, out
    assert "3 schemas compatible with git main; new, nothing to break: search_request.v2.avsc" in out


def test_a_file_that_is_not_an_avro_schema_fails(avro: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit(avro, "search_request.avsc", lambda s: _field(s, "fresh").update(default="yes"))  # not a boolean
    code, out, _ = _check(capsys, "--dir", str(avro))
    assert code == 1
    assert "search_request.avsc - itself - not a valid Avro schema" in out


def test_an_unknown_git_base_says_what_to_do_and_exits_2(avro: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _check(capsys, "--dir", str(avro), "--base", "no-such-branch")
    assert code == 2
    assert "git knows no revision 'no-such-branch'" in err
    assert "--base REV" in err


def test_a_folder_outside_git_has_no_base_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(AVRO_DIR / "search_request.avsc", tmp_path / "search_request.avsc")
    code, _, err = _check(capsys, "--dir", str(tmp_path))
    assert code == 2
    assert "is not in a git work tree" in err


def test_the_repositorys_contracts_are_compatible_with_head(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _check(capsys, "--base", "HEAD")
    assert code == 0, out
    assert f"{len(list(AVRO_DIR.glob('*.avsc')))} schemas compatible with git HEAD" in out


# ---- against the registry ----


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A client of the local stand-in registry, in process."""
    transport = httpx.ASGITransport(app=build_app(RegistryState(None)))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
        yield client


@pytest.fixture
def registry(http: httpx.AsyncClient) -> SchemaRegistryClient:
    return SchemaRegistryClient("http://registry", http)


async def test_the_check_compares_with_the_version_last_registered(avro: Path, registry: SchemaRegistryClient) -> None:
    # The registry already holds a version with a cabin the file on git never had: the file breaks it.
    registered = json.loads((avro / "search_request.avsc").read_text())
    _field(_criteria(registered), "cabin")["type"]["symbols"].append("SLEEPER")
    await registry.register(value_subject(REQUESTS), json.dumps(registered))
    report = await check_schemas(avro, SPECS, base="main", registry=registry)
    assert [(f.schema, f.field, f.against) for f in report.findings] == [
        ("search_request.avsc", "SearchRequest.criteria.cabin", f"registry {REQUESTS}-value v1")
    ]
    assert "SLEEPER removed" in report.findings[0].reason
    assert report.registry_versions == 1


async def test_a_registry_that_does_not_answer_leaves_the_git_comparison(avro: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down = SchemaRegistryClient("http://registry", httpx.AsyncClient(transport=httpx.MockTransport(refuse)))
    _edit(avro, "search_request.avsc", lambda s: _field(_criteria(s), "adults").update(type="string"))
    report = await check_schemas(avro, SPECS, base="main", registry=down)
    assert report.registry_note.startswith("compared with git only: registry at http://registry unreachable")
    assert [f.field for f in report.findings] == ["SearchRequest.criteria.adults"]


async def test_topics_apply_sets_each_subjects_level_and_the_registry_refuses_what_breaks_it(
    registry: SchemaRegistryClient, http: httpx.AsyncClient
) -> None:
    levels = await apply_compatibility(registry, SPECS)
    assert levels[value_subject(REQUESTS)] == "BACKWARD"
    assert levels[value_subject(ORDERS)] == "FULL_TRANSITIVE"
    config = await http.get(f"/config/{value_subject(ORDERS)}")
    assert config.json() == {"compatibilityLevel": "FULL_TRANSITIVE"}

    v1 = (AVRO_DIR / "search_request.avsc").read_text()
    await registry.register(value_subject(REQUESTS), v1)
    broken = json.loads(v1)
    broken["fields"].append({"name": "channel", "type": "string"})  # no default: old records unreadable
    with pytest.raises(SchemaRegistryError, match="409"):
        await registry.register(value_subject(REQUESTS), json.dumps(broken))
    fine = json.loads(v1)
    fine["fields"].append({"name": "channel", "type": "string", "default": "mcp"})
    assert await registry.register(value_subject(REQUESTS), json.dumps(fine)) > 0


def test_every_compacted_topic_is_full_transitive_and_every_event_topic_backward() -> None:
    for spec in SPECS:
        compacted = "compact" in spec.cleanup_policy
        assert spec.compatibility == ("FULL_TRANSITIVE" if compacted else "BACKWARD"), spec.name


# ---- Avro resolution itself ----


def test_an_old_consumer_reads_events_written_with_the_next_compatible_version() -> None:
    old = json.loads((AVRO_DIR / "search_request.avsc").read_text())
    new = copy.deepcopy(old)
    new["fields"].append({"name": "channel", "type": "string", "default": "mcp"})
    assert breaking_changes("FULL", json.dumps(new), [json.dumps(old)]) == []
    event = {
        "request_id": "r-1",
        "correlation_id": "r-1",
        "client_id": "agent",
        "reply_to": "bridge-1",
        "criteria": {
            "origin": "LHR",
            "destination": "JFK",
            "departure_date": 20_000,
            "return_date": None,
            "adults": 2,
            "children": 0,
            "infants": 0,
            "cabin": "BUSINESS",
            "currency": "GBP",
        },
        "airlines": None,
        "max_offers": 10,
        "fresh": False,
        "deadline": 1_700_000_003_000,
        "created_at": 1_700_000_000_000,
        "channel": "a2a",
    }
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(new), event)
    buffer.seek(0)
    read = fastavro.schemaless_reader(buffer, fastavro.parse_schema(new), fastavro.parse_schema(old))
    assert isinstance(read, dict)
    assert read["criteria"]["adults"] == 2
    assert read["criteria"]["cabin"] == "BUSINESS"
    assert "channel" not in read
    assert read["deadline"].timestamp() == 1_700_000_003


def test_promotion_is_backward_only_and_an_alias_keeps_a_renamed_field() -> None:
    old = json.dumps({"type": "record", "name": "R", "fields": [{"name": "n", "type": "int"}]})
    wider = json.dumps({"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]})
    assert is_compatible("BACKWARD", wider, [old])
    [forward] = breaking_changes("FORWARD", wider, [old])
    assert forward.field == "R.n"
    assert "consumers not yet upgraded cannot read long values" in forward.reason
    renamed = json.dumps(
        {"type": "record", "name": "R", "fields": [{"name": "count", "type": "int", "aliases": ["n"]}]}
    )
    assert is_compatible("BACKWARD", renamed, [old])


def test_a_field_inside_an_optional_record_is_named() -> None:
    def schema(*extra: dict[str, Any]) -> str:
        inner = {"type": "record", "name": "Leg", "fields": [{"name": "from", "type": "string"}, *extra]}
        return json.dumps({"type": "record", "name": "R", "fields": [{"name": "leg", "type": ["null", inner]}]})

    [problem] = breaking_changes("BACKWARD", schema({"name": "gate", "type": "string"}), [schema()])
    assert problem.field == "R.leg.gate"


def test_transitive_levels_compare_with_every_version() -> None:
    def record(*fields: str) -> str:
        return json.dumps({"type": "record", "name": "R", "fields": [{"name": f, "type": "string"} for f in fields]})

    # v2 dropped b; v3 brings it back without a default: readable after v2, not after v1.
    versions = [record("a", "b"), record("a")]
    assert is_compatible("FORWARD", record("a", "b"), versions)
    assert is_compatible("BACKWARD", record("a"), versions)
    assert not is_compatible("BACKWARD", record("a", "c"), versions)
    assert is_compatible("FULL", record("a"), versions)
    assert [b.field for b in breaking_changes("FULL_TRANSITIVE", record("a"), versions)] == ["R.b"]


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown compatibility level 'SIDEWAYS'"):
        breaking_changes("SIDEWAYS", "{}", ["{}"])
