"""The client's IP address, the way Envoy's ``xff_num_trusted_hops`` finds it.

With ``trusted_hops`` 0 the client is the peer Envoy accepted the connection from
(``request.attributes.source_address``, which the client cannot forge). With N > 0 the N
proxies closest to Envoy are trusted to have appended the address they saw to
``x-forwarded-for``: the client is the Nth address from the right end of the header (Envoy's
``use_remote_address: true`` + ``xff_num_trusted_hops: N`` rule, XFF as received). With fewer
than N addresses the source address is used, as Envoy does. Addresses to the left of that one
are client-supplied and never looked at.
"""

from __future__ import annotations

import ipaddress

from envoykit import Request

__all__ = [
    "client_address",
    "client_ip",
    "in_any",
    "networks",
    "parse_ip",
    "parse_networks",
    "IpAddress",
    "IpNetwork",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(request: Request, trusted_hops: int) -> str | None:
    """The client's address as text (not parsed)."""
    if trusted_hops > 0:
        entries = [e.strip() for v in request.headers.get_all("x-forwarded-for") for e in v.split(",")]
        entries = [e for e in entries if e]
        if len(entries) >= trusted_hops:
            return entries[-trusted_hops]
    return request.attributes.source_address


def parse_ip(text: str | None) -> IpAddress | None:
    """``text`` as an address (``[v6]`` brackets and IPv4-mapped IPv6 handled), else ``None``."""
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_ip(request: Request, trusted_hops: int) -> IpAddress | None:
    """The client's parsed address, ``None`` when missing or not an IP address."""
    return parse_ip(client_address(request, trusted_hops))


def parse_networks(values: tuple[str, ...]) -> tuple[str, ...]:
    """Validate CIDRs/addresses (a field validator's body): raises ``ValueError`` naming the bad one."""
    for value in values:
        try:
            ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IPv4/IPv6 address or CIDR range (e.g. 10.0.0.0/8, 2001:db8::/32)"
            ) from None
    return values


def networks(values: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)


def in_any(ip: IpAddress, nets: tuple[IpNetwork, ...]) -> bool:
    return any(ip.version == net.version and ip in net for net in nets)
