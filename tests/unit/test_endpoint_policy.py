"""Airline endpoints are public unless the registry lists them: every class of non-public address (IPv4 and IPv6,
and IPv6 carrying IPv4), listings by hostname, address and CIDR network, link-local never by a hostname, the
cloud metadata address only by itself; and a registry whose endpoint is refused does not load."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from jetbridge.airlines import DEFAULT_REGISTRY, load_registry
from jetbridge.endpoints import (
    AddressClass,
    PrivateEndpoints,
    address_class,
    endpoint_host,
    judge_addresses,
    judge_endpoint,
    name_class,
)
from jetbridge.errors import ConfigurationError
from tests.support.factories import REGISTRY_AIRLINE, registry_file

A = AddressClass

CLASSES = [
    ("127.0.0.1", A.LOOPBACK),
    ("127.8.9.10", A.LOOPBACK),
    ("::1", A.LOOPBACK),
    ("10.1.2.3", A.PRIVATE),
    ("172.16.0.1", A.PRIVATE),
    ("172.31.255.254", A.PRIVATE),
    ("192.168.1.20", A.PRIVATE),
    ("fd12:3456:789a::1", A.PRIVATE),
    ("fc00::1", A.PRIVATE),
    ("169.254.10.20", A.LINK_LOCAL),
    ("fe80::1", A.LINK_LOCAL),
    ("169.254.169.254", A.METADATA),
    ("fd00:ec2::254", A.METADATA),
    ("100.100.100.200", A.METADATA),
    ("0.0.0.0", A.UNSPECIFIED),  # noqa: S104 - an address judged, not one bound
    ("::", A.UNSPECIFIED),
    ("224.0.0.251", A.MULTICAST),
    ("239.1.2.3", A.MULTICAST),
    ("ff02::1", A.MULTICAST),
    ("100.64.0.1", A.NON_GLOBAL),  # shared address space (carrier-grade NAT)
    ("192.0.2.10", A.NON_GLOBAL),  # documentation
    ("198.18.0.1", A.NON_GLOBAL),  # benchmarking
    ("240.0.0.1", A.NON_GLOBAL),  # reserved
    ("255.255.255.255", A.NON_GLOBAL),
    ("fec0::1", A.NON_GLOBAL),  # site-local (deprecated)
    ("2001:db8::1", A.NON_GLOBAL),  # documentation
    # IPv6 that stands for IPv4 is judged as that IPv4 address.
    ("::ffff:10.0.0.1", A.PRIVATE),
    ("::ffff:127.0.0.1", A.LOOPBACK),
    ("::ffff:169.254.169.254", A.METADATA),
    ("64:ff9b::a9fe:a9fe", A.METADATA),  # NAT64 of 169.254.169.254
    ("2002:c0a8:0101::1", A.PRIVATE),  # 6to4 of 192.168.1.1
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "151.101.1.1", "2606:4700:4700::1111", "2a00:1450:4009:81f::200e", "::ffff:8.8.8.8"]


@pytest.mark.parametrize(("address", "kind"), CLASSES, ids=[a for a, _ in CLASSES])
def test_every_class_of_non_public_address_is_named_and_refused_unless_listed(address: str, kind: AddressClass) -> None:
    assert address_class(ipaddress.ip_address(address)) is kind
    host = f"[{address}]" if ":" in address else address
    refusal = judge_endpoint(f"http://{host}:8080/", PrivateEndpoints())
    assert refusal is not None
    assert refusal.kind is kind
    assert refusal.address == str(ipaddress.ip_address(address))
    assert "private_endpoints_allowed" in str(refusal)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_called_without_any_listing(address: str) -> None:
    assert address_class(ipaddress.ip_address(address)) is None
    host = f"[{address}]" if ":" in address else address
    assert judge_endpoint(f"https://{host}/ndc", PrivateEndpoints()) is None


def allowed(*entries: str) -> PrivateEndpoints:
    return PrivateEndpoints.parse(entries)


def refused(endpoint: str, listed: PrivateEndpoints) -> bool:
    return judge_endpoint(endpoint, listed) is not None


def test_an_address_entry_allows_that_address_only() -> None:
    listed = allowed("127.0.0.1", "10.9.8.7", "fd12::5")
    assert not refused("http://127.0.0.1:9201", listed)
    assert not refused("http://10.9.8.7/api", listed)
    assert not refused("http://[fd12::5]:8443/", listed)
    assert refused("http://127.0.0.2:9201", listed)
    assert refused("http://10.9.8.8/api", listed)
    assert refused("http://[::1]:9201", listed), "127.0.0.1 does not list the IPv6 loopback"


def test_a_cidr_entry_allows_the_addresses_of_its_network_ipv4_and_ipv6() -> None:
    listed = allowed("10.20.0.0/16", "fd12:3456::/32", "192.168.7.0/24")
    assert not refused("http://10.20.3.4/", listed)
    assert not refused("http://10.20.255.255/", listed)
    assert refused("http://10.21.0.1/", listed)
    assert not refused("http://[fd12:3456:1::9]/", listed)
    assert refused("http://[fd12:3457::9]/", listed)
    assert not refused("http://192.168.7.200/", listed)
    assert not refused("http://[::ffff:192.168.7.9]/", listed), "an IPv4-mapped address is its IPv4 address"
    assert not refused("http://[::ffff:10.0.0.1]/", allowed("::ffff:10.0.0.1")), "or listed as written"


def test_a_hostname_entry_allows_that_name_and_the_private_addresses_it_resolves_to() -> None:
    listed = allowed("sim.internal", "Localhost.")
    assert name_class("sim.internal") is A.PRIVATE
    assert not refused("http://sim.internal:9201/", listed)
    assert not refused("http://SIM.internal./", listed), "names compare without case or a trailing dot"
    assert not refused("http://localhost:9201/", listed)
    assert refused("http://other.internal/", listed)
    ten = ipaddress.ip_address("10.0.0.5")
    assert listed.allows("sim.internal", A.PRIVATE, ten)
    assert not listed.allows("ndc.airline.example", A.PRIVATE, ten), "the name lists itself, not its addresses"


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("localhost", A.LOOPBACK),
        ("LOCALHOST.", A.LOOPBACK),
        ("api.localhost", A.LOOPBACK),
        ("ip6-localhost", A.LOOPBACK),
        ("sim", A.PRIVATE),  # a single label resolves through the local search domains
        ("printer.local", A.PRIVATE),
        ("db.corp.internal", A.PRIVATE),
        ("router.home.arpa", A.PRIVATE),
        ("metadata.google.internal", A.METADATA),
        ("instance-data", A.METADATA),
        ("ndc.britishairways.com", None),
        ("api.example", None),
    ],
)
def test_names_that_only_a_local_network_has_are_judged_before_any_lookup(host: str, kind: AddressClass | None) -> None:
    assert name_class(host) is kind


def test_link_local_is_never_allowed_by_a_hostname_only_by_an_address_or_a_link_local_network() -> None:
    link_local = ipaddress.ip_address("169.254.10.20")
    by_name = allowed("gateway.example", "169.254.10.20.example")
    assert not by_name.allows("gateway.example", A.LINK_LOCAL, link_local)
    assert refused("http://[fe80::1]/", allowed("fe80.example"))
    wide = allowed("169.0.0.0/8", "0.0.0.0/1", "fe00::/7")
    assert not wide.allows("x", A.LINK_LOCAL, link_local), "a network wider than the link-local range does not"
    assert refused("http://169.254.10.20/", wide)
    assert refused("http://[fe80::1]/", wide)
    assert not refused("http://169.254.10.20/", allowed("169.254.10.20"))
    assert not refused("http://169.254.10.20/", allowed("169.254.10.0/24"))
    assert not refused("http://[fe80::1]/", allowed("fe80::/64"))
    message = str(judge_endpoint("http://169.254.10.20/", by_name))
    assert "link-local" in message
    assert "a hostname entry does not allow a link-local address" in message


def test_the_cloud_metadata_address_is_refused_unless_listed_alone() -> None:
    for listed in (
        allowed(),
        allowed("169.254.0.0/16"),
        allowed("169.254.169.0/24"),
        allowed("metadata.google.internal"),
        allowed("10.0.0.0/8", "localhost"),
    ):
        refusal = judge_endpoint("http://169.254.169.254/latest/meta-data/", listed)
        assert refusal is not None
        assert refusal.kind is A.METADATA
        assert "hands out this machine's credentials" in str(refusal)
        assert '"169.254.169.254"' in str(refusal)
    assert not refused("http://169.254.169.254/", allowed("169.254.169.254"))
    assert refused("http://metadata.google.internal/", allowed("metadata.google.internal")), "never by name"
    assert refused("http://[::ffff:a9fe:a9fe]/", allowed("169.254.0.0/16")), "nor written as IPv6"


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        ("ftp://ndc.airline.example/", "http:// or https://"),
        ("ndc.airline.example/ndc", "http:// or https://"),
        ("http:///ndc", "has no host"),
        ("http://user:secret@ndc.airline.example/", "must not carry a user or password"),
        ("http://127.0.0.1\\@ndc.airline.example/", "must not carry a user or password"),
        ("http://127.1:9201/", "shorthand form (read as 127.0.0.1)"),
        ("http://2130706433/", "shorthand form (read as 127.0.0.1)"),
        ("http://0x7f.0.0.1/", "shorthand form (read as 127.0.0.1)"),
        ("http://0251.0376.0251.0376/", "not a URL"),  # httpx refuses this one itself
    ],
)
def test_an_endpoint_must_be_an_http_url_with_a_plainly_written_host(endpoint: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        judge_endpoint(endpoint, allowed("127.0.0.1", "169.254.169.254"))


def test_endpoint_host_is_the_host_httpx_connects_to() -> None:
    assert endpoint_host("https://NDC.Airline.example:8443/ndc") == "ndc.airline.example"
    assert endpoint_host("http://[::1]:9201/mcp") == "::1"
    assert endpoint_host("http://bücher.example/") == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("http://127.0.0.1", "write the host alone"),
        ("127.0.0.1:9201", "without a port"),
        ("[::1]", "without a port or brackets"),
        ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
        ("10.0.0.0/33", "not a CIDR network"),
        ("0.0.0.0/0", "turns this safeguard off"),
        ("::/0", "turns this safeguard off"),
        ("127.1", "shorthand form"),
        ("bad_name.example", "not a hostname"),
        ("", "not a hostname"),
    ],
)
def test_a_listing_entry_must_be_a_hostname_an_address_or_a_network(entry: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        PrivateEndpoints.parse([entry])


async def test_every_address_a_name_resolves_to_must_be_allowed() -> None:
    answers = {"ndc.airline.example": ["151.101.1.1", "10.0.0.7"], "api.airline.example": ["151.101.1.1"]}

    async def resolver(host: str, port: int) -> Sequence[str]:
        return answers[host]

    addresses, refusal = await judge_addresses("ndc.airline.example", 443, PrivateEndpoints(), resolver)
    assert addresses == ["151.101.1.1", "10.0.0.7"]
    assert refusal is not None
    assert (refusal.kind, refusal.address, refusal.resolved) == (A.PRIVATE, "10.0.0.7", True)
    assert str(refusal).startswith("host ndc.airline.example resolves to 10.0.0.7, a private address")
    assert '"ndc.airline.example" or "10.0.0.7"' in str(refusal), "says what to add"
    assert (await judge_addresses("api.airline.example", 443, PrivateEndpoints(), resolver))[1] is None
    assert (await judge_addresses("ndc.airline.example", 443, allowed("10.0.0.0/8"), resolver))[1] is None


async def test_a_listed_name_that_resolves_to_the_metadata_address_is_still_refused() -> None:
    async def resolver(host: str, port: int) -> Sequence[str]:
        return ["169.254.169.254"]

    _, refusal = await judge_addresses("sim.internal", 80, allowed("sim.internal"), resolver)
    assert refusal is not None
    assert refusal.kind is A.METADATA


# ---- the registry file ----


def load_refused(path: Path) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load_registry(path)
    assert str(path) in caught.value.message, "names the file"
    return caught.value.message


def test_a_registry_with_a_private_endpoint_not_listed_fails_to_load_naming_airline_host_and_what_to_add(
    tmp_path: Path,
) -> None:
    message = load_refused(registry_file(tmp_path, REGISTRY_AIRLINE, private_endpoints_allowed=()))
    assert "[airlines.ZZ] endpoint 'http://127.0.0.1:9' refused" in message
    assert "host 127.0.0.1 is a loopback address" in message
    assert 'add "127.0.0.1" to private_endpoints_allowed' in message


def test_a_registry_lists_private_endpoints_by_address_network_or_name(tmp_path: Path) -> None:
    text = (
        REGISTRY_AIRLINE.replace("http://127.0.0.1:9", "http://10.20.30.40:8080")
        + REGISTRY_AIRLINE.replace("ZZ", "ZY").replace("http://127.0.0.1:9", "https://sim.internal/ndc")
        + REGISTRY_AIRLINE.replace("ZZ", "ZX").replace("http://127.0.0.1:9", "https://ndc.airline.example")
    )
    listing = ("10.20.0.0/16", "sim.internal")
    registry = load_registry(registry_file(tmp_path, text, private_endpoints_allowed=listing))
    assert registry["ZZ"].endpoint == "http://10.20.30.40:8080"
    assert registry["ZZ"].private_endpoints == PrivateEndpoints.parse(listing), "the workers judge by it too"
    assert registry.codes() == ["ZZ", "ZY", "ZX"]


def test_a_link_local_endpoint_fails_to_load_even_with_its_name_listed(tmp_path: Path) -> None:
    text = REGISTRY_AIRLINE.replace("http://127.0.0.1:9", "http://169.254.169.254/latest")
    message = load_refused(registry_file(tmp_path, text, private_endpoints_allowed=("169.254.0.0/16",)))
    assert "[airlines.ZZ]" in message
    assert "host 169.254.169.254 is a cloud metadata address" in message
    assert 'lists "169.254.169.254" itself (no hostname or network)' in message


def test_localhost_fails_to_load_unless_the_name_is_listed(tmp_path: Path) -> None:
    text = REGISTRY_AIRLINE.replace("127.0.0.1", "localhost")
    message = load_refused(registry_file(tmp_path, text))
    assert "host localhost is a loopback name" in message
    assert 'add "localhost"' in message
    assert load_registry(registry_file(tmp_path, text, private_endpoints_allowed=("localhost",))).codes() == ["ZZ"]


def test_a_bad_listing_entry_fails_to_load_naming_the_setting(tmp_path: Path) -> None:
    message = load_refused(registry_file(tmp_path, REGISTRY_AIRLINE, private_endpoints_allowed=("127.0.0.1:9",)))
    assert "private_endpoints_allowed: '127.0.0.1:9'" in message
    assert "without a port" in message
    wrong_type = load_refused(
        registry_file(
            tmp_path, 'private_endpoints_allowed = "127.0.0.1"\n' + REGISTRY_AIRLINE, private_endpoints_allowed=None
        )
    )
    assert "private_endpoints_allowed" in wrong_type


def test_an_endpoint_that_is_not_an_http_url_fails_to_load(tmp_path: Path) -> None:
    text = REGISTRY_AIRLINE.replace("http://127.0.0.1:9", "file:///etc/passwd")
    message = load_refused(registry_file(tmp_path, text))
    assert "[airlines.ZZ] endpoint 'file:///etc/passwd': must be an http:// or https:// URL" in message


def test_the_shipped_registry_lists_only_the_simulators_host() -> None:
    registry = load_registry(DEFAULT_REGISTRY)
    assert {a.private_endpoints for a in registry} == {PrivateEndpoints.parse(["127.0.0.1"])}
    assert all(a.endpoint.startswith("http://127.0.0.1:") for a in registry)
