"""Which airline endpoints Jetbridge may call: an http(s) URL whose host is public, or one the registry lists.

A connector calls whatever the airline registry names, so the registry is all that stands between a typo, a
hostile edit or a name whose DNS answer changes and a request into our own network: an admin page on 10.x, a
sidecar on 127.0.0.1, or the cloud metadata service on 169.254.169.254, which hands out the machine's
credentials. A host that is, or resolves to, an address that is not global is refused unless the registry's
``private_endpoints_allowed`` (hostnames, IP addresses, CIDR networks) lists it:

    class           addresses and names                                  allowed by an entry that is
    loopback        127.0.0.0/8, ::1; localhost, *.localhost             the hostname, or an IP/network holding it
    private         10/8, 172.16/12, 192.168/16, fc00::/7; single-label   the same
                    names, *.local, *.internal, *.home.arpa, ...
    unspecified, multicast, non-global (100.64/10, documentation,       the same
    benchmarking, reserved, fec0::/10, ...)
    link-local      169.254.0.0/16, fe80::/10                            an IP or network inside the link-local
                                                                         range (never a hostname, never 0.0.0.0/0)
    cloud metadata  169.254.169.254, fd00:ec2::254, 100.100.100.200;     the address itself, alone
                    metadata.google.internal, instance-data, ...

An IPv6 address that carries an IPv4 one (``::ffff:10.0.0.1``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``)
is judged as that IPv4 address. Literal hosts are judged when the registry is loaded (`judge_endpoint`), so a
refused one stops every process at start-up; names are resolved and their addresses judged by the connector
worker (`judge_addresses`), at start, again every so often, and on every new connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import httpx

__all__ = [
    "AddressClass",
    "IPAddress",
    "PrivateEndpoints",
    "Refusal",
    "Resolver",
    "address_class",
    "endpoint_host",
    "judge_address",
    "judge_addresses",
    "judge_endpoint",
    "literal_ip",
    "name_class",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses it resolves to, as strings; getaddrinfo through asyncio unless a test injects one.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

# Where this is written in the registry file; error messages tell the reader to add entries to it.
SETTING = "private_endpoints_allowed"


class AddressClass(StrEnum):
    """Why an address or a name is not a public one."""

    LOOPBACK = "loopback"
    PRIVATE = "private"
    UNSPECIFIED = "unspecified"
    MULTICAST = "multicast"
    NON_GLOBAL = "non-global"
    LINK_LOCAL = "link-local"
    METADATA = "cloud metadata"

    @property
    def loud(self) -> bool:
        """Refused even more firmly: only an explicit address entry allows it, never a hostname."""
        return self in (AddressClass.LINK_LOCAL, AddressClass.METADATA)


_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_LINK_LOCAL_V4 = ipaddress.IPv4Network("169.254.0.0/16")
_LINK_LOCAL_V6 = ipaddress.IPv6Network("fe80::/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# The instance metadata services of the clouds: AWS, GCP, Azure, OpenStack and most others on the first, AWS's
# IPv6 one (a unique local address, so "private" by its range alone), Alibaba Cloud's (in 100.64.0.0/10).
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
# Suffixes that only ever name machines of a local network (RFC 6762 mDNS, RFC 8375, ICANN's .internal, and the
# ones RFC 6762 appendix G lists as in common private use).
_PRIVATE_SUFFIXES = ("local", "internal", "home.arpa", "localdomain", "lan", "home", "corp", "intranet", "private")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for, when it stands for one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _effective(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address):
        return _embedded_ipv4(address) or address
    return address


def address_class(address: IPAddress) -> AddressClass | None:
    """The class of a non-public address; None for a global (public) one."""
    address = _effective(address)
    if address in _METADATA_ADDRESSES:
        return AddressClass.METADATA
    if address.is_unspecified:
        return AddressClass.UNSPECIFIED
    if address.is_loopback:
        return AddressClass.LOOPBACK
    if address.is_link_local:
        return AddressClass.LINK_LOCAL
    if address.is_multicast:
        return AddressClass.MULTICAST
    if any(address in network for network in _RFC1918) or address in _UNIQUE_LOCAL:
        return AddressClass.PRIVATE
    site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
    if not address.is_global or address.is_reserved or site_local:
        return AddressClass.NON_GLOBAL
    return None


def _normal_name(host: str) -> str:
    return host.lower().rstrip(".")


def name_class(host: str) -> AddressClass | None:
    """The class of a hostname that can only name a local machine (before any lookup); None for any other."""
    name = _normal_name(host)
    if name in _METADATA_NAMES:
        return AddressClass.METADATA
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return AddressClass.LOOPBACK
    if "." not in name or any(name.endswith(f".{suffix}") for suffix in _PRIVATE_SUFFIXES):
        return AddressClass.PRIVATE
    return None


def literal_ip(host: str) -> IPAddress | None:
    """The address ``host`` is written as, or None for a name; refuses IPv4 in a shorthand form (``127.1``,
    ``0x7f.0.0.1``, ``2130706433``), which the resolver reads as an address while it does not look like one."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        packed = socket.inet_aton(host)
    except OSError:
        return None
    raise ValueError(
        f"host {host!r} is an IPv4 address in a shorthand form (read as {ipaddress.IPv4Address(packed)}); "
        "write it as four decimal numbers"
    )


def endpoint_host(endpoint: str) -> str:
    """The host of an airline endpoint (as httpx, which connects, reads it); ValueError when ``endpoint`` is not
    an http(s) URL with a host and no user information."""
    try:
        url = httpx.URL(endpoint)
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a URL ({exc})") from None
    if url.scheme not in ("http", "https"):
        raise ValueError(f"must be an http:// or https:// URL, not {url.scheme or 'one without a scheme'}")
    if not url.host:
        raise ValueError("has no host")
    if url.userinfo:
        # The credential comes from its environment variable; and `http://127.0.0.1\@evil.example` reads as one
        # host to a person and goes to the other.
        raise ValueError("must not carry a user or password (the credential field names where the key is)")
    return url.raw_host.decode("ascii")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a host may not be called: the class of the host itself, or of an address it resolves to."""

    host: str
    kind: AddressClass
    address: str | None = None  # None: the name alone was judged
    resolved: bool = False  # True: ``address`` is what ``host`` resolved to

    def __str__(self) -> str:
        article = "an" if self.kind.value[0] in "aeiou" else "a"
        kind = f"{self.kind} address"
        if self.address is not None and (embedded := _effective(ipaddress.ip_address(self.address))).version == 4:
            kind += f" ({embedded})" if str(embedded) != self.address else ""
        if self.resolved:
            said = f"host {self.host} resolves to {self.address}, {article} {kind}"
        elif self.address is not None:
            said = f"host {self.host} is {article} {kind}"
        else:
            said = f"host {self.host} is {article} {self.kind} name"
        if self.kind is AddressClass.METADATA:
            said += " (the instance metadata service, which hands out this machine's credentials)"
            if self.address is None:
                return f"{said}; it is never called by name (write the address and list it alone in {SETTING})"
            return f'{said}; it is never called unless {SETTING} lists "{self.address}" itself (no hostname or network)'
        if self.kind is AddressClass.LINK_LOCAL:
            if self.address is None:
                return f"{said}; it is never called by name (write the address and list it in {SETTING})"
            return (
                f'{said}; it is never called unless {SETTING} lists "{self.address}" or a link-local network '
                "holding it (a hostname entry does not allow a link-local address)"
            )
        entries = [f'"{_normal_name(self.host)}"']
        if self.resolved and self.address is not None:
            entries.append(f'"{self.address}"')
        add = " or ".join(entries)
        return f"{said}; an airline endpoint must be public unless the registry lists it: add {add} to {SETTING}"


def _link_local_network(network: IPNetwork) -> bool:
    if isinstance(network, ipaddress.IPv4Network):
        return network.subnet_of(_LINK_LOCAL_V4)
    return network.subnet_of(_LINK_LOCAL_V6)


@dataclass(frozen=True, slots=True)
class PrivateEndpoints:
    """The registry's ``private_endpoints_allowed``: the non-public hosts an airline endpoint may be."""

    hostnames: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> PrivateEndpoints:
        """Entries as written in the registry; ValueError naming the first that is none of a hostname, an IP
        address or a CIDR network."""
        hostnames: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            network = _network(entry)
            if network is not None:
                networks.append(network)
            else:
                hostnames.add(_hostname(entry))
        return cls(frozenset(hostnames), tuple(networks))

    def allows(self, host: str, kind: AddressClass, address: IPAddress | None = None) -> bool:
        """Whether ``host`` may be called although it is (or resolves to ``address``, which is) of ``kind``."""
        # An IPv6 address standing for an IPv4 one is listed as either.
        forms = () if address is None else (address, _effective(address))
        holding = [n for n in self.networks if any(form in n for form in forms)]
        if kind is AddressClass.METADATA:
            return any(n.num_addresses == 1 for n in holding)
        if kind is AddressClass.LINK_LOCAL:
            return any(_link_local_network(n) for n in holding)
        return _normal_name(host) in self.hostnames or bool(holding)


def _network(entry: str) -> IPNetwork | None:
    """``entry`` as a network (an address is a network of one), or None when it is not written as one."""
    try:
        network = ipaddress.ip_network(entry)
    except ValueError:
        pass
    else:
        if network.prefixlen == 0:
            raise ValueError(f"{entry!r} allows every address, which turns this safeguard off; list the networks meant")
        return network
    address, slash, _ = entry.partition("/")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return None
    if not slash:
        return None  # an address with a scope (fe80::1%eth0): judged as a hostname below, and refused
    try:
        loose = ipaddress.ip_network(entry, strict=False)
    except ValueError as exc:
        raise ValueError(f"{entry!r} is not a CIDR network ({exc})") from None
    raise ValueError(f"{entry!r} has bits set past its prefix length; did you mean {loose}?")


def _hostname(entry: str) -> str:
    name = _normal_name(entry)
    if "://" in entry or "/" in entry:
        raise ValueError(f"{entry!r} is not a hostname, an IP address or a CIDR network (write the host alone)")
    if ":" in entry:
        raise ValueError(f"{entry!r}: write a hostname or an address without a port or brackets")
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(f"{entry!r} is not a hostname, an IP address or a CIDR network")
    try:
        literal_ip(name)
    except ValueError as exc:
        raise ValueError(f"{entry!r}: {exc}") from None
    return name


def judge_address(host: str, address: str, allowed: PrivateEndpoints, *, resolved: bool) -> Refusal | None:
    """The refusal of calling ``host`` at ``address``, or None when that may be called."""
    ip = ipaddress.ip_address(address)
    kind = address_class(ip)
    if kind is None or allowed.allows(host, kind, ip):
        return None
    return Refusal(host, kind, address, resolved=resolved)


def judge_endpoint(endpoint: str, allowed: PrivateEndpoints) -> Refusal | None:
    """The refusal of an endpoint by what is written (its host's address or name), before any lookup; None when
    it may be called as far as that shows. ValueError when it is not an http(s) URL with a usable host."""
    host = endpoint_host(endpoint)
    ip = literal_ip(host)
    if ip is not None:
        return judge_address(host, str(ip), allowed, resolved=False)
    kind = name_class(host)
    if kind is None or allowed.allows(host, kind):
        return None
    return Refusal(host, kind)


async def judge_addresses(
    host: str, port: int, allowed: PrivateEndpoints, resolver: Resolver
) -> tuple[list[str], Refusal | None]:
    """``host`` resolved, and the refusal of the first address that may not be called (every one must be
    allowed: which one a connection uses is not ours to choose). OSError when it does not resolve."""
    ip = literal_ip(host)
    addresses = [str(ip)] if ip is not None else list(dict.fromkeys(await resolver(host, port)))
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    for address in addresses:
        refusal = judge_address(host, address, allowed, resolved=ip is None)
        if refusal is not None:
            return addresses, refusal
    return addresses, None


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, by getaddrinfo in the event loop's executor."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
