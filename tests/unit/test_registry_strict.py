"""The airline registry file is read strictly: a typo or a kind Jetbridge has no connector for stops the load
with a ConfigurationError naming the file, the airline (or [defaults] table) and the field, and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from jetbridge.airlines import ConnectorKind, load_registry
from jetbridge.errors import ConfigurationError
from jetbridge.topics import TopicNames, declared_topics
from tests.support.factories import REGISTRY_AIRLINE, registry_file


def refused(tmp_path: Path, text: str) -> str:
    path = registry_file(tmp_path, text)
    with pytest.raises(ConfigurationError) as caught:
        load_registry(path)
    assert str(path) in caught.value.message, "names the file"
    return caught.value.message


def test_a_typo_in_an_airline_entry_is_refused_naming_the_airline_and_the_field(tmp_path: Path) -> None:
    message = refused(tmp_path, REGISTRY_AIRLINE + "latncy_ms = 200\n")
    assert "[airlines.ZZ]" in message
    assert "unknown field 'latncy_ms'" in message
    assert "fix its spelling or remove it" in message
    assert "timeout_ms" in message, "lists the fields an airline takes"


def test_a_misspelt_kind_is_refused_as_an_unknown_field_and_a_missing_kind(tmp_path: Path) -> None:
    message = refused(tmp_path, REGISTRY_AIRLINE.replace('kind = "ndc"', 'kindd = "ndc"'))
    assert "[airlines.ZZ] has an unknown field 'kindd'" in message
    assert "[airlines.ZZ] kind: missing" in message


def test_a_typo_in_the_defaults_retry_policy_is_refused_naming_the_table_and_field(tmp_path: Path) -> None:
    message = refused(tmp_path, "[defaults.retry.search]\nmax_atempts = 3\n" + REGISTRY_AIRLINE)
    assert "[defaults.retry.search] has an unknown field 'max_atempts'" in message
    assert "max_attempts" in message, "lists the fields a retry policy takes"


@pytest.mark.parametrize("table", ["breaker", "rate_limit"])
def test_a_typo_in_the_other_defaults_tables_is_refused_too(tmp_path: Path, table: str) -> None:
    message = refused(tmp_path, f"[defaults.{table}]\nburts = 3\n" + REGISTRY_AIRLINE)
    assert f"[defaults.{table}] has an unknown field 'burts'" in message


def test_an_unknown_top_level_table_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, REGISTRY_AIRLINE.replace("[airlines.ZZ]", "[airline.ZZ]"))
    assert "unknown table 'airline'" in message


def test_a_kind_that_is_not_a_connector_kind_is_refused_naming_the_kinds(tmp_path: Path) -> None:
    message = refused(tmp_path, REGISTRY_AIRLINE.replace('"ndc"', '"soap"'))
    assert "[airlines.ZZ] kind: must be" in message
    assert all(repr(kind.value) in message for kind in ConnectorKind)
    assert "'soap'" in message


def test_values_of_the_wrong_type_are_not_converted(tmp_path: Path) -> None:
    message = refused(tmp_path, REGISTRY_AIRLINE + 'timeout_ms = "2500"\n')
    assert "[airlines.ZZ] timeout_ms: expected int, got '2500'" in message


def test_a_route_source_that_is_not_known_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, REGISTRY_AIRLINE.replace('routes = "none"', 'routes = "openflight"'))
    assert "[airlines.ZZ] routes: must be 'openflights' or 'none'" in message


def test_a_registry_airline_has_its_kind_as_a_connector_kind(tmp_path: Path) -> None:
    assert {airline.kind for airline in load_registry()} == set(ConnectorKind)
    assert all(isinstance(airline.kind, ConnectorKind) for airline in load_registry())


def test_an_airlines_own_partition_counts_size_its_calls_and_order_calls_topics(tmp_path: Path) -> None:
    busy = load_registry(registry_file(tmp_path, REGISTRY_AIRLINE + "calls_partitions = 12\norder_partitions = 3\n"))
    plain = load_registry(registry_file(tmp_path, REGISTRY_AIRLINE))
    names = TopicNames()
    sized = {s.name: s for s in declared_topics(busy, partitions=6)}
    default = {s.name: s for s in declared_topics(plain, partitions=6)}
    assert (sized[names.calls("ZZ")].partitions, sized[names.order_calls("ZZ")].partitions) == (12, 3)
    assert (default[names.calls("ZZ")].partitions, default[names.order_calls("ZZ")].partitions) == (3, 3)
    assert sized[names.requests].partitions == 6, "the co-partitioned search topics keep JB_TOPIC_PARTITIONS"
    assert sized[names.calls("ZZ")].grows, "an airline's topics take added partitions in place"
    assert not sized[names.requests].grows


@pytest.mark.parametrize("count", ["0", "1000", '"many"'])
def test_a_partition_count_out_of_range_is_refused_naming_the_field(tmp_path: Path, count: str) -> None:
    message = refused(tmp_path, REGISTRY_AIRLINE + f"calls_partitions = {count}\n")
    assert "[airlines.ZZ] calls_partitions" in message
