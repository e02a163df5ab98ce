"""Protection policies as data in the airline registry: defaults, per-airline overrides, checked values."""

from __future__ import annotations

from pathlib import Path

import pytest

from jetbridge.airlines import BreakerPolicy, RateLimit, RetryPolicy, load_registry
from jetbridge.errors import ConfigurationError
from tests.support.factories import REGISTRY_AIRLINE, registry_file


def test_an_airline_without_protection_tables_gets_the_built_in_defaults(tmp_path: Path) -> None:
    zz = load_registry(registry_file(tmp_path, REGISTRY_AIRLINE))["ZZ"]
    assert zz.retry_policy("search") == RetryPolicy()
    assert zz.breaker == BreakerPolicy()
    assert zz.rate_limit == RateLimit()


def test_the_registrys_defaults_apply_to_every_airline_and_an_airline_overrides_them_field_by_field(
    tmp_path: Path,
) -> None:
    text = (
        """
[defaults.retry.search]
max_attempts = 3
non_retriable = ["airline_timeout"]

[defaults.breaker]
open_s = 30

[defaults.rate_limit]
rate_per_s = 20
burst = 5
"""
        + REGISTRY_AIRLINE
        + """
[airlines.ZZ.retry.search]
initial_interval_ms = 50

[airlines.ZZ.rate_limit]
burst = 2
"""
    )
    zz = load_registry(registry_file(tmp_path, text))["ZZ"]
    policy = zz.retry_policy("search")
    assert policy.max_attempts == 3, "from the defaults"
    assert policy.initial_interval_ms == 50, "the airline's own"
    assert policy.non_retriable == frozenset({"airline_timeout"})
    assert zz.breaker.open_s == 30.0
    assert zz.rate_limit == RateLimit(rate_per_s=20.0, burst=2)


def test_the_shipped_registry_protects_every_airline(tmp_path: Path) -> None:
    for entry in load_registry():
        assert entry.retry_policy("search").max_attempts >= 1
        assert entry.breaker.min_calls >= 1
        assert entry.rate_limit.rate_per_s > 0


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[airlines.ZZ.breaker]\nfailure_rate = 1.5", "failure_rate"),
        ("[airlines.ZZ.breaker]\nopen_seconds = 5", "unknown field"),
        ("[airlines.ZZ.retry.search]\nmax_attempts = 0", "max_attempts"),
        ("[airlines.ZZ.retry.search]\nmax_attempts = '3'", "expected int"),
        ("[airlines.ZZ.retry.book]\nmax_attempts = 1", "unknown operation"),
        ("[airlines.ZZ.rate_limit]\nrate_per_s = 0", "rate_per_s"),
        ("[airlines.ZZ.retry.search]\nnon_retriable = 'airline_timeout'", "expected frozenset"),
    ],
    ids=["rate-over-1", "unknown-field", "no-attempts", "text-number", "unknown-operation", "zero-rate", "not-a-list"],
)
def test_a_policy_that_cannot_work_is_refused_naming_the_airline_and_field(
    tmp_path: Path, table: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_registry(registry_file(tmp_path, REGISTRY_AIRLINE + "\n" + table + "\n"))
    assert "ZZ" in caught.value.message
